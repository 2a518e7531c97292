"""The recipes of the documentation pages written as doctests run as written."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("page", ["per_task.rst"])
def test_docs_page_runs(page):
    import matplotlib

    matplotlib.use("Agg")  # the page draws figures; no display in tests
    import matplotlib.pyplot as plt

    result = doctest.testfile(
        str(DOCS / page),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    plt.close("all")
    assert result.failed == 0, f"{result.failed} example(s) of {page} failed"
