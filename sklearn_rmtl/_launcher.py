"""The ``rmtl`` command's entry point: ``--version`` without loading torch.

Every other use loads :mod:`sklearn_rmtl.cli` (torch, scikit-learn and the
registries its parser lists), which takes seconds; the version needs none
of it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rmtl`` command (see :func:`sklearn_rmtl.cli.main`)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--version"]:
        from sklearn_rmtl._version import __version__

        print(f"rmtl {__version__}")
        return 0
    from sklearn_rmtl.cli import main as run

    return run(argv)
