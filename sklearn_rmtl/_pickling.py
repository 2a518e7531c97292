"""Pickles of fitted estimators record the library version that wrote them."""

from __future__ import annotations

import warnings
from typing import Any, cast

from sklearn_rmtl._version import __version__
from sklearn_rmtl.exceptions import InconsistentVersionWarning

_VERSION_KEY = "_sklearn_rmtl_version"
# Fitted attributes renamed since pickles were first written: old name -> new.
_RENAMED = {"backbone_": "net_"}


class VersionedPickleMixin:
    """Stamp fitted estimators' pickles with ``sklearn_rmtl.__version__``.

    Unpickling a stamp of another version warns with
    :class:`~sklearn_rmtl.exceptions.InconsistentVersionWarning`, as
    scikit-learn does for its own estimators, and gives renamed fitted
    attributes their current names (``backbone_`` is ``net_``). Goes before
    ``BaseEstimator`` in the bases, whose ``__getstate__`` / ``__setstate__``
    it extends.
    """

    def __getstate__(self) -> dict[str, Any]:
        # A copy: object.__getstate__ returns the instance's own __dict__.
        state = dict(cast(dict[str, Any], super().__getstate__()))
        if getattr(self, "__sklearn_is_fitted__", lambda: False)():
            state[_VERSION_KEY] = __version__
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state.pop(_VERSION_KEY, __version__)
        if saved != __version__:
            warnings.warn(
                InconsistentVersionWarning(
                    f"This {type(self).__name__} was saved with sklearn_rmtl "
                    f"{saved} and is loaded with {__version__}; predictions may "
                    "differ or fail. Refit it with the installed version if you "
                    "can.",
                    original_version=str(saved),
                    current_version=__version__,
                ),
                stacklevel=2,
            )
        for old, new in _RENAMED.items():
            if old in state and new not in state:
                state[new] = state.pop(old)
        super().__setstate__(state)  # type: ignore[misc]
