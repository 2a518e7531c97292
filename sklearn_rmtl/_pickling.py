"""Pickles of fitted estimators record the library version that wrote them."""

from __future__ import annotations

import warnings
from typing import Any, cast

from sklearn_rmtl.exceptions import InconsistentVersionWarning

_VERSION_KEY = "_sklearn_rmtl_version"


class VersionedPickleMixin:
    """Stamp fitted estimators' pickles with ``sklearn_rmtl.__version__``.

    Unpickling a stamp of another version warns with
    :class:`~sklearn_rmtl.exceptions.InconsistentVersionWarning`, as
    scikit-learn does for its own estimators. Goes before ``BaseEstimator``
    in the bases, whose ``__getstate__`` / ``__setstate__`` it extends.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = cast(dict[str, Any], super().__getstate__())
        if getattr(self, "__sklearn_is_fitted__", lambda: False)():
            from sklearn_rmtl import __version__

            state[_VERSION_KEY] = __version__
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from sklearn_rmtl import __version__

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
        super().__setstate__(state)  # type: ignore[misc]
