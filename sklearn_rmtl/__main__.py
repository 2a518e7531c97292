"""``python -m sklearn_rmtl``: the ``rmtl`` command line."""

import sys

from sklearn_rmtl.cli import main

sys.exit(main())
