"""What a session's rows realised, measured at the pretrained actor (no TD).

In RMTL's MDP the next state is the next logged row whatever the action, so
``Q(s, pi(s))`` is a function of the row's features; weighting the BCE by
any positive function of ``x`` leaves its minimiser ``P(y | x)`` unchanged.
The one information about a row that neither ``x`` nor the row's own label
carries is what happened **later in its session**. This module measures it
from the logged sessions directly, as Monte-Carlo quantities:

- the *surprise* of a row and task, ``d = BCE(y, p) - H(p)``: its realised
  loss under the pretrained actor's prediction ``p`` minus the loss the
  actor expected (its entropy); zero in expectation where ``p`` is
  calibrated, zero where the label is missing;
- discounted sums of a quantity over the rows after (or from) a row in its
  session (:func:`discounted_later`), e.g. the realised discounted return
  that RMTL's critics estimate, or the later rows' surprise;
- the number of rows left in the session (:func:`rows_left`), a stratum of
  the weight controls.

Everything is vectorised over the rows of a chunk of whole sessions, in
the input row order, through :class:`~sklearn_rmtl._mdp.SessionTransitions`.
"""

from __future__ import annotations

import numpy as np

from sklearn_rmtl._mdp import ACTION_CLIP, SessionTransitions

#: Upper edges of the rows-left buckets of the weight controls (0, 1, 2,
#: 3-4, 5-9, 10-19, 20+ rows left in the session).
ROWS_LEFT_EDGES = (0, 1, 2, 4, 9, 19)


def surprise(
    y01: np.ndarray, proba: np.ndarray, observed: np.ndarray | None
) -> np.ndarray:
    """Realised minus expected BCE of each row and task under ``proba``.

    Parameters
    ----------
    y01 : ndarray of shape (n_rows, n_tasks)
        0/1 labels (missing ones any value).
    proba : ndarray of shape (n_rows, n_tasks)
        The pretrained actor's probabilities.
    observed : ndarray of bool of shape (n_rows, n_tasks) or None
        Which labels exist; None: all.

    Returns
    -------
    ndarray of shape (n_rows, n_tasks), float64
        ``BCE(y, p) - H(p)``, clipped as the rewards of Eq. (2); 0 where the
        label is missing.
    """
    p = np.clip(proba.astype(np.float64), ACTION_CLIP, 1 - ACTION_CLIP)
    log_p, log_q = np.log(p), np.log1p(-p)
    bce = -(y01 * log_p + (1 - y01) * log_q)
    entropy = -(p * log_p + (1 - p) * log_q)
    d = bce - entropy
    return d if observed is None else np.where(observed, d, 0.0)


def discounted_later(
    transitions: SessionTransitions,
    values: np.ndarray,
    gamma: float,
    *,
    include_own: bool,
) -> np.ndarray:
    """``sum_j gamma**(j - t) * values_j`` over the later rows of each row's session.

    Parameters
    ----------
    transitions : SessionTransitions
        The chunk's next-row links.
    values : ndarray of shape (n_rows, n_tasks)
        A per-row quantity (e.g. the BCE, or :func:`surprise`).
    gamma : float
        Discount per row.
    include_own : bool
        Whether row ``t`` itself counts (``j >= t``, a realised return) or
        only the rows after it (``j > t``).

    Returns
    -------
    ndarray of shape (n_rows, n_tasks), float64
    """
    later = np.zeros(values.shape, dtype=np.float64)
    # From the sessions' last rows backwards: a row's sum needs its next
    # row's, so rows are visited by decreasing position (each once).
    by_position = np.argsort(transitions.position, kind="stable")[::-1]
    positions = transitions.position[by_position]
    cuts = np.flatnonzero(np.diff(positions)) + 1
    for rows in np.split(by_position, cuts):
        nxt = transitions.next_row[rows]
        done = transitions.done[rows][:, None]
        later[rows] = np.where(done, 0.0, gamma * (values[nxt] + later[nxt]))
    return later + values if include_own else later


def rows_left(transitions: SessionTransitions) -> np.ndarray:
    """Rows after each row in its session (0 on a session's last row)."""
    ones = np.ones((len(transitions.done), 1))
    return discounted_later(transitions, ones, 1.0, include_own=False)[:, 0].astype(
        np.int64
    )


def rows_left_bucket(transitions: SessionTransitions) -> np.ndarray:
    """:func:`rows_left` in the buckets of :data:`ROWS_LEFT_EDGES` (0 to 6)."""
    return np.searchsorted(ROWS_LEFT_EDGES, rows_left(transitions), side="left")
