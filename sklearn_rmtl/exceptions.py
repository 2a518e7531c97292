"""Warnings and errors raised by sklearn_rmtl."""

from __future__ import annotations

__all__ = ["DivergenceError", "InconsistentVersionWarning"]


class InconsistentVersionWarning(UserWarning):
    """A model file was written by another version of sklearn_rmtl."""


class DivergenceError(FloatingPointError):
    """A training loss became NaN or infinite; the message names the phase."""
