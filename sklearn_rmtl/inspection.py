"""Inspecting a fitted RMTLClassifier: what its critics learnt, what drives its weights.

:func:`critic_diagnostics` reads a fit's critics on rows whose sessions are
known, best held-out ones: how well ``Q(s, pi(s))`` predicts the return the
sessions realised, and how much of RMTL's weights ``w = 1 - q_lambda * Q``
the row's label explains against quantities that need no label (the
prediction's entropy, the position in the session, the rows left). A critic
that only memorised its training rows correlates with their returns and not
with those of other sessions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.utils.validation import check_is_fitted

from sklearn_rmtl._mdp import build_transitions, rewards
from sklearn_rmtl._outcome import discounted_later, rows_left
from sklearn_rmtl._rows import ArrayRows
from sklearn_rmtl._task_space import task_space_labels
from sklearn_rmtl._validation import binarize_labels

__all__ = ["critic_diagnostics"]


def _r2(target: np.ndarray, *columns: np.ndarray) -> float:
    """R² of the least-squares fit of ``target`` on ``columns`` and an intercept."""
    design = np.column_stack([np.ones(len(target)), *columns])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coef
    total = float(((target - target.mean()) ** 2).sum())
    return float(1.0 - (residual**2).sum() / total) if total > 0 else float("nan")


def critic_diagnostics(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    session_ids: Any,
    timestamps: Any = None,
) -> pd.DataFrame:
    """What a fitted RMTLClassifier's critics predict, per task, on these rows.

    The actor is the fitted network (``net_``) and the actions its
    predictions ``p``; the realised return of a row is the discounted sum of
    the rewards of Eq. (2), ``y log p + (1 - y) log(1 - p)``, of the row and
    the later rows of its session (the critics' discount ``gamma``), which is
    what ``Q(s, p)`` estimates.

    Parameters
    ----------
    estimator : RMTLClassifier
        A fitted estimator with critics (``critic_`` is not None).
    X : {DataFrame, array-like} of shape (n_samples, n_features)
        Rows with the columns seen in ``fit``; for an honest reading, whole
        sessions the critics were not trained on. Cross-fitted critics
        (``SessionCritic(cv=...)``) read each row with the critics of its
        session's fold, which never saw the fit's sessions of that fold: on
        the training rows this measures what the refit's weights carry.
    y : {array-like, DataFrame} of shape (n_samples, n_tasks)
        Their labels (missing ones NaN); a task's statistics use its observed
        labels, those inside its space with the estimator's ``task_space``.
    session_ids : array-like of shape (n_samples,)
        Session of each row.
    timestamps : array-like of shape (n_samples,), default=None
        Time of each row, ordering a session's rows; None: row order.

    Returns
    -------
    diagnostics : DataFrame
        One row per task, indexed by task name, with:

        - ``n_rows``: observed labels of the task;
        - ``q_return_pearson``, ``q_return_spearman``: correlation of ``Q``
          with the realised return;
        - ``q_return_relative_error``: ``mean |Q - return| / mean |return|``;
        - ``weight_r2_label``: share of the variance of RMTL's weights
          ``1 - q_lambda * Q`` explained by the row's label alone (least
          squares with an intercept);
        - ``weight_r2_label_free``: by the predicted entropy, the position in
          the session and the rows left (and their logarithm), none of which
          needs a label;
        - ``weight_r2_both``: by all of them;
        - ``weight_r2_own_reward``: by all of them and the row's own reward
          (Eq. 2 at ``p``), which needs the row's label;
        - ``weight_r2_later_return``: by all of those and the discounted
          realised return of the session's later rows, which needs their
          labels. Its excess over ``weight_r2_own_reward`` is what the weights
          say about the session's outcome beyond the row itself.

    Raises
    ------
    ValueError
        If the estimator has no critics (``weighting="constant"`` or an
        outcome weighting without ``actor_update``).

    Examples
    --------
    >>> from sklearn_rmtl import RMTLClassifier, SessionCritic
    >>> from sklearn_rmtl.datasets import make_sessions
    >>> from sklearn_rmtl.inspection import critic_diagnostics
    >>> X, y, s, t = make_sessions(60, return_X_y=True, random_state=0)
    >>> small = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
    >>> clf = RMTLClassifier(backbone="sharedbottom", backbone_params=small,
    ...                      critic=SessionCritic(hidden_dims=(8,), max_epochs=2),
    ...                      max_epochs=2, random_state=0)
    >>> clf = clf.fit(X, y, session_ids=s, timestamps=t)
    >>> critic_diagnostics(clf, X, y, session_ids=s, timestamps=t).shape
    (2, 9)
    """
    check_is_fitted(estimator)
    critic = getattr(estimator, "critic_", None)
    if critic is None:
        raise ValueError(
            f"{type(estimator).__name__} has no critics to inspect (critic_ is "
            f"None with weighting={estimator.weighting!r}); fit it with a "
            "weighting that trains critics, e.g. 'rmtl'."
        )
    # Sessions and times may be X's columns (session_column, time_column).
    X, session_ids, timestamps = estimator._meta_columns(X, session_ids, timestamps)
    rows = ArrayRows(X, session_ids=session_ids, timestamps=timestamps)
    if rows.session_ids is None:
        raise ValueError("critic_diagnostics needs session_ids: returns span sessions.")
    # A DataFrame's task columns are matched to the tasks by name.
    y01 = binarize_labels(y, estimator.classes_, estimator.task_names_)
    y01 = np.asarray(y01, dtype=np.float64)
    if y01.shape != (rows.n_rows, estimator.n_tasks_):
        raise ValueError(
            f"y has shape {y01.shape}; expected ({rows.n_rows}, "
            f"{estimator.n_tasks_}), one label per row and task."
        )
    # Labels outside their task's space had no reward in the critics' fit.
    y01 = task_space_labels(estimator, y01)
    observed = ~np.isnan(y01)
    y01 = np.where(observed, y01, 0.0)
    proba = estimator.predict_proba(rows.X)
    # Cross-fitted critics read each row with its session's fold's critics.
    inputs = critic.route(critic.encode(rows.X), rows.session_ids)
    q = -critic.row_weights(inputs, proba, y01, "neg_q", 1.0, estimator.precision)
    q = q.numpy()
    transitions = build_transitions(rows.session_ids, rows.timestamps, rows.n_rows)
    own = rewards(y01, proba, observed)
    later = discounted_later(transitions, own, critic.gamma, include_own=False)
    realised = own + later
    p = np.clip(proba, 1e-7, 1 - 1e-7)
    entropy = -(p * np.log(p) + (1 - p) * np.log1p(-p))
    left = rows_left(transitions).astype(float)
    position = transitions.position.astype(float)
    weights = 1.0 - estimator.q_lambda * q
    out = []
    for k, task in enumerate(estimator.task_names_):
        m = observed[:, k]
        w, ret, qk = weights[m, k], realised[m, k], q[m, k]
        label = y01[m, k]
        free = (entropy[m, k], position[m], left[m], np.log1p(left[m]))
        out.append(
            {
                "task": str(task),
                "n_rows": int(m.sum()),
                "q_return_pearson": float(stats.pearsonr(qk, ret).statistic),
                "q_return_spearman": float(stats.spearmanr(qk, ret).statistic),
                "q_return_relative_error": float(
                    np.abs(qk - ret).mean() / max(np.abs(ret).mean(), 1e-12)
                ),
                "weight_r2_label": _r2(w, label),
                "weight_r2_label_free": _r2(w, *free),
                "weight_r2_both": _r2(w, label, *free),
                "weight_r2_own_reward": _r2(w, label, *free, own[m, k]),
                "weight_r2_later_return": _r2(w, label, *free, own[m, k], later[m, k]),
            }
        )
    return pd.DataFrame(out).set_index("task")
