"""Session-wise multi-task datasets: real-log loaders and a synthetic generator.

The loaders turn public recommendation logs into the inputs of the
estimators: ``X`` (one row per exposure), ``y`` (one 0/1 column per task),
``session_ids`` and ``timestamps``. Each ships a small real sample, so they
work offline; pass ``data_home`` to build the same rows from the full dataset.
:func:`make_sessions` generates sessions with known sequential structure, and
:func:`history_column` builds each row's history of earlier items.
"""

from sklearn_rmtl.datasets._history import history_column
from sklearn_rmtl.datasets._kuairand import load_kuairand
from sklearn_rmtl.datasets._retailrocket import load_retailrocket
from sklearn_rmtl.datasets._synthetic import make_sessions
from sklearn_rmtl.datasets._taobao import load_taobao

__all__ = [
    "history_column",
    "load_kuairand",
    "load_retailrocket",
    "load_taobao",
    "make_sessions",
]
