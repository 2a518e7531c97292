"""Every public class, function and method has a valid numpydoc docstring."""

from __future__ import annotations

import inspect

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

import sklearn_rmtl  # noqa: E402
from sklearn_rmtl import (  # noqa: E402
    backbones,
    balancing,
    datasets,
    exceptions,
    export,
    inspection,
    metrics,
    mlflow,
    model_selection,
    parquet,
    persistence,
    plotting,
)

# Missing docstring, undocumented / unknown parameters, missing sections.
CHECKED = {"GL08", "PR01", "PR02", "PR03", "PR07", "RT01", "SS01", "SS03", "SS05"}
MODULES = [
    sklearn_rmtl,
    backbones,
    balancing,
    datasets,
    exceptions,
    export,
    inspection,
    metrics,
    mlflow,
    model_selection,
    parquet,
    persistence,
    plotting,
]


def _public_names():
    for module in MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            yield f"{obj.__module__}.{obj.__qualname__}"
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not inspect.isfunction(member):
                        continue
                    if (
                        obj.__module__.startswith("sklearn_rmtl.backbones")
                        and attr == "forward"
                    ):
                        continue  # documented by the class "Shape" section
                    yield f"{obj.__module__}.{obj.__qualname__}.{attr}"


@pytest.mark.parametrize("name", sorted(set(_public_names())))
def test_docstring(name):
    result = numpydoc_validate.validate(name)
    errors = [(code, msg) for code, msg in result["errors"] if code in CHECKED]
    assert not errors, f"{name}: {errors}"
