"""Synthetic sessions whose labels depend on position and history."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from sklearn_rmtl.datasets._base import make_bunch

#: Start of the synthetic clock; sessions start within the next 30 days.
EPOCH_MS = int(pd.Timestamp("2024-01-01").value // 1_000_000)

# Strength of the sequential effects at sequential_strength=1 (logit scale).
INTENT_SCALE = 1.0  # sd of a session's latent intent
MOMENTUM = 0.6  # per earlier click in the session, up to MOMENTUM_CAP clicks
MOMENTUM_CAP = 2
FATIGUE = 0.3  # per position in the session
SATIATION = 1.0  # per earlier positive of the same conversion task
CLICK_BIAS = -0.8
CONVERSION_BIAS = -1.0

DESCR = """\
.. _synthetic_sessions:

Synthetic sessions (``make_sessions``)
--------------------------------------

Sessions of 1 + Poisson(mean_session_length - 1) rows. Each row has
``n_categorical`` item-like categorical features (column j has 10 * (j + 1)
levels), ``n_numerical`` standard normal features and its ``position`` in
the session. Task 0 (``click``) has probability

    sigmoid(b_0 + f_0(x) + s * (u + {momentum} * min(c_t, {cap}) - {fatigue} * t))

where f_0(x) is a sum of random per-level effects and a linear function of
the numerical features, u ~ N(0, 1) is the session's latent intent, c_t the
number of clicks earlier in the session, t the position and
s = ``sequential_strength``: intent builds up with earlier clicks (momentum)
and decays with position (fatigue). Task k >= 1 is a funnel step: it can be 1
only where task k - 1 is 1, with probability

    sigmoid(b_k + f_k(x) + s * (0.5 * u - {satiation} * n_k))

where n_k counts earlier positives of task k in the session (satiation:
one purchase makes another less likely). ``u``, ``c_t`` and ``n_k`` are not
in ``X``: a row-wise model cannot see them, a session-aware one can infer
them from the earlier rows. With ``sequential_strength=0`` the rows are
independent given ``X`` (a control where session modelling cannot help).
Timestamps: sessions start uniformly within 30 days from 2024-01-01, rows
follow 1 s + Exponential(40 s) apart.
"""


def _target_names(n_tasks: int) -> list[str]:
    if n_tasks == 1:
        return ["click"]
    middle = [f"step_{k}" for k in range(1, n_tasks - 1)]
    return ["click", *middle, "purchase"]


@validate_params(
    {
        "n_sessions": [Interval(Integral, 1, None, closed="left")],
        "n_tasks": [Interval(Integral, 1, None, closed="left")],
        "mean_session_length": [Interval(Real, 1, None, closed="left")],
        "n_categorical": [Interval(Integral, 0, None, closed="left")],
        "n_numerical": [Interval(Integral, 0, None, closed="left")],
        "sequential_strength": [Interval(Real, 0, None, closed="left")],
        "return_X_y": ["boolean"],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_sessions(
    n_sessions: int = 200,
    *,
    n_tasks: int = 2,
    mean_session_length: float = 7,
    n_categorical: int = 3,
    n_numerical: int = 2,
    sequential_strength: float = 1.0,
    return_X_y: bool = False,
    random_state: Any = None,
) -> Any:
    """Generate sessions whose labels depend on position and history.

    Each session has a latent intent that grows with every click and fades
    with position (fatigue); later tasks form a click-then-convert funnel
    (task k can be 1 only where task k - 1 is 1) and a conversion makes
    another conversion in the same session less likely. The latent state is
    not in ``X``, so predicting well needs the earlier rows of the session:
    the structure that RMTL's session MDP is meant to exploit.

    Parameters
    ----------
    n_sessions : int, default=200
        Number of sessions.
    n_tasks : int, default=2
        Number of tasks K (funnel steps).
    mean_session_length : float, default=7
        Mean rows per session; lengths are 1 + Poisson(mean - 1).
    n_categorical : int, default=3
        Number of categorical features ``cat_0``, ``cat_1``...; ``cat_j`` has
        ``10 * (j + 1)`` levels.
    n_numerical : int, default=2
        Number of standard normal features ``num_0``, ``num_1``...
    sequential_strength : float, default=1.0
        Scale of the session effects (latent intent, momentum of earlier
        clicks, fatigue with position, satiation after a conversion). ``0``
        makes the rows independent given ``X``.
    return_X_y : bool, default=False
        If True, return ``(X, y, session_ids, timestamps)`` instead of a
        Bunch.
    random_state : int, RandomState instance or None, default=None
        Seed of the generator; an int gives reproducible output.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        X : DataFrame of shape (n_samples, n_features)
            ``cat_*`` (``category`` dtype), ``num_*`` (float) and
            ``position`` (int, 0-based rank in the session).
        y : DataFrame of shape (n_samples, n_tasks)
            int8 0/1 columns ``click`` (K = 1), ``click``, ``purchase``
            (K = 2), ``click``, ``step_1``, ..., ``purchase`` (K > 2); each
            column is at most the previous one.
        session_ids : ndarray of shape (n_samples,), dtype int64
            Session of each row, 0 .. n_sessions - 1.
        timestamps : ndarray of shape (n_samples,), dtype datetime64[ms]
            Increasing within each session.
        feature_names : list of str
            Columns of ``X``.
        target_names : list of str
            Columns of ``y``.
        DESCR : str
            The generating model.

        Rows are sorted by (session, timestamp).

    (X, y, session_ids, timestamps) : tuple
        When ``return_X_y`` is True.

    See Also
    --------
    load_retailrocket : Real sessions with click / purchase labels.

    Examples
    --------
    >>> from sklearn_rmtl.datasets import make_sessions
    >>> data = make_sessions(n_sessions=50, random_state=0)
    >>> data.target_names
    ['click', 'purchase']
    >>> bool((data.y["purchase"] <= data.y["click"]).all())
    True
    >>> data.X.columns.tolist()
    ['cat_0', 'cat_1', 'cat_2', 'num_0', 'num_1', 'position']
    """
    rng = check_random_state(random_state)
    lengths = 1 + rng.poisson(mean_session_length - 1, n_sessions)
    n = int(lengths.sum())
    session = np.repeat(np.arange(n_sessions), lengths)
    first = np.cumsum(lengths) - lengths
    position = np.arange(n) - np.repeat(first, lengths)

    features: dict[str, Any] = {}
    static = np.zeros((n, n_tasks))
    for j in range(n_categorical):
        levels = 10 * (j + 1)
        codes = rng.randint(levels, size=n)
        effects = rng.normal(0.0, 0.7, size=(levels, n_tasks))
        features[f"cat_{j}"] = pd.Categorical.from_codes(
            codes, categories=pd.Index([f"c{j}_{v}" for v in range(levels)])
        )
        static += effects[codes]
    if n_numerical:
        numerical = rng.normal(size=(n, n_numerical))
        weights = rng.normal(0.0, 0.6, size=(n_numerical, n_tasks))
        static += numerical @ weights
        for j in range(n_numerical):
            features[f"num_{j}"] = numerical[:, j]
    features["position"] = position.astype(np.int64)
    static[:, 0] += CLICK_BIAS
    static[:, 1:] += CONVERSION_BIAS

    s = float(sequential_strength)
    intent = rng.normal(0.0, INTENT_SCALE, size=n_sessions)
    draws = rng.random_sample((n, n_tasks))
    labels = np.zeros((n, n_tasks), dtype=np.int8)
    history = np.zeros((n_sessions, n_tasks))  # earlier positives per task
    # A loop over positions, vectorised over sessions: row t needs row t-1.
    for t in range(int(lengths.max())):
        alive = np.flatnonzero(lengths > t)
        rows = first[alive] + t
        logit = static[rows, 0] + s * (
            intent[alive]
            + MOMENTUM * np.minimum(history[alive, 0], MOMENTUM_CAP)
            - FATIGUE * t
        )
        positive = draws[rows, 0] < 1.0 / (1.0 + np.exp(-logit))
        labels[rows, 0] = positive
        for k in range(1, n_tasks):
            logit = static[rows, k] + s * (
                0.5 * intent[alive] - SATIATION * history[alive, k]
            )
            positive &= draws[rows, k] < 1.0 / (1.0 + np.exp(-logit))
            labels[rows, k] = positive
        history[alive] += labels[rows]

    start = EPOCH_MS + rng.randint(0, 30 * 86_400_000, size=n_sessions, dtype=np.int64)
    steps = 1000 + rng.exponential(40_000.0, size=n).astype(np.int64)
    steps[first] = 0
    offsets = np.cumsum(steps) - np.repeat(np.cumsum(steps)[first], lengths)
    times = np.repeat(start, lengths) + offsets
    return make_bunch(
        X=pd.DataFrame(features),
        y=pd.DataFrame(labels, columns=_target_names(n_tasks)),
        session_ids=session,
        times_ms=times,
        descr=DESCR.format(
            momentum=MOMENTUM, cap=MOMENTUM_CAP, fatigue=FATIGUE, satiation=SATIATION
        ),
        return_X_y=return_X_y,
    )
