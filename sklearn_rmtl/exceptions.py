"""Warnings and errors raised by sklearn_rmtl."""

from __future__ import annotations

__all__ = ["DivergenceError", "InconsistentVersionWarning", "InvalidFileError"]


class InconsistentVersionWarning(UserWarning):
    """A file was written by another version of sklearn_rmtl or scikit-learn.

    :func:`load` still rebuilds the estimator, but check its predictions:
    the networks or the encoders may differ between the versions.

    Parameters
    ----------
    message : str
        The warning text, naming both versions.
    original_version : str
        The ``sklearn_rmtl`` version that wrote the file.
    current_version : str
        The ``sklearn_rmtl`` version that reads it.

    See Also
    --------
    sklearn_rmtl.persistence.load : Emits this warning, as does unpickling
        an estimator saved by another version.
    sklearn.exceptions.InconsistentVersionWarning : scikit-learn's warning
        for pickles written by another scikit-learn.
    """

    def __init__(
        self, message: str, original_version: str, current_version: str
    ) -> None:
        super().__init__(message)
        self.original_version = original_version
        self.current_version = current_version


class InvalidFileError(ValueError):
    """A file is not a valid sklearn_rmtl safe file, or was tampered with.

    Raised by :func:`load` for anything :func:`save` does not write: another
    format (a pickle, random bytes), a missing or malformed manifest, a
    class outside the allow-list, or arrays that are missing, extra, not
    numeric, or do not fit the rebuilt networks.

    See Also
    --------
    sklearn_rmtl.persistence.load : Raises this error.
    """


class DivergenceError(FloatingPointError):
    """A training loss became NaN or infinite; the message names the phase."""
