"""Sphinx configuration of the sklearn-rmtl documentation.

Build (offline, warnings are errors)::

    pip install -e ".[docs]"
    python -m sphinx -W -b html docs docs/_build/html

The gallery runs every ``examples/plot_*.py``; set
``SPHINX_GALLERY_PLOT=False`` in the environment to build without running
them.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import sklearn_rmtl

# Examples draw without a display.
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))

project = "sklearn-rmtl"
author = "sklearn-rmtl developers"
copyright = "2026, sklearn-rmtl developers"
release = sklearn_rmtl.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = [
    "_build",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.json",
    "auto_examples/*.md5",
]
templates_path: list[str] = []
default_role = "literal"  # `x` renders as code, as in the docstrings
pygments_style = "sphinx"

# -- autodoc / autosummary / numpydoc ----------------------------------------
# API pages are written by hand (docs/api/*.rst): autosummary only draws the
# summary tables, so the build writes no stub files into the source tree.
autosummary_generate = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # numpydoc's "Parameters" already give the types
autodoc_inherit_docstrings = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- HTML ----------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-rmtl {release}"
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"index": [], "install": [], "quickstart": []}
html_static_path: list[str] = []
html_show_sourcelink = False

# -- sphinx-gallery ------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "_gallery_order.ExampleOrder",
    "plot_gallery": os.environ.get("SPHINX_GALLERY_PLOT", "True"),
    "abort_on_example_error": True,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_memory": False,
    "min_reported_time": 1,
    # No stub files in the source tree: the "examples using" lists go with the
    # gallery output (git-ignored), and no execution-time page is written.
    "doc_module": ("sklearn_rmtl",),
    "backreferences_dir": "auto_examples/backreferences",
    "write_computation_times": False,
    "show_api_usage": False,
}


# -- docstring adjustments -----------------------------------------------------
# Words such as n_features_in_ in shape descriptions read as hyperlink
# references in reStructuredText ("name_"); escape the underscore outside
# inline literals. (Writing ``n_features_in_`` in the docstrings would make
# this unnecessary.)
_LITERAL = re.compile(r"(``.*?``|`[^`]*`)")
_TRAILING_UNDERSCORE = re.compile(r"\b([A-Za-z]\w*[A-Za-z0-9])_(?=[\s,.;:)\]]|$)")


def _escape_trailing_underscores(line: str) -> str:
    parts = _LITERAL.split(line)
    for i in range(0, len(parts), 2):  # even parts are outside literals
        parts[i] = _TRAILING_UNDERSCORE.sub(r"\1\\_", parts[i])
    return "".join(parts)


def _shape_to_notes(lines: list[str]) -> None:
    """Keep the torch modules' "Shape" section, unknown to numpydoc, as Notes."""
    stripped = [line.strip() for line in lines]
    if "Notes" in stripped:
        return
    for i in range(len(lines) - 1):
        if stripped[i] == "Shape" and set(stripped[i + 1]) == {"-"}:
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            lines[i : i + 2] = [
                f"{indent}Notes",
                f"{indent}-----",
                f"{indent}Shape:",
                "",
            ]
            return


def _process_docstring(app, what, name, obj, options, lines) -> None:
    if not name.startswith("sklearn_rmtl"):
        return
    _shape_to_notes(lines)
    lines[:] = [_escape_trailing_underscores(line) for line in lines]


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn's generated set_{fit,score,...}_request methods: documented
    # by scikit-learn, and their docstrings refer to its own glossary.
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None


# numpydoc also parses the raw docstrings for signatures, where it warns
# about the "Shape" section handled above.
warnings.filterwarnings("ignore", "Unknown section Shape", UserWarning)


def setup(app) -> None:
    # Before numpydoc (priority 500) parses the sections.
    app.connect("autodoc-process-docstring", _process_docstring, priority=400)
    app.connect("autodoc-skip-member", _skip_member)
