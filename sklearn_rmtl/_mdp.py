"""The session MDP: ordering rows into sessions, transitions and rewards.

User guide, phase 2 (paper Sec. 2.3-2.4, Algorithm 1). A transition is
``(s_t, a_t, r_t, s_{t+1}, done_t)``; it is stored as row indices into the
encoded features, never as copies of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Accepted values of ``behavior_policy``.
BEHAVIOR_POLICIES = ("actor", "actor_logit", "uniform")

#: Actions are clipped to this interval before the log of Eq. (2) (authors' code).
ACTION_CLIP = 1e-4


@dataclass(frozen=True)
class SessionTransitions:
    """Next-row links of every row, in the input row order.

    Attributes
    ----------
    next_row : ndarray of shape (n_samples,), dtype int64
        Index of the next row of the same session; a row's own index where
        the session ends (masked by ``done``).
    done : ndarray of shape (n_samples,), dtype bool
        True on the last row of each session.
    position : ndarray of shape (n_samples,), dtype int64
        0-based position of the row in its session.
    n_sessions : int
        Number of distinct sessions.
    order : ndarray of shape (n_samples,), dtype int64
        Rows sorted by session, then time: a canonical order that does not
        depend on the input order (used to draw per-row random numbers).
    """

    next_row: np.ndarray
    done: np.ndarray
    position: np.ndarray
    n_sessions: int
    order: np.ndarray


def build_transitions(
    session_ids: np.ndarray | None,
    sort_keys: np.ndarray | None,
    n_samples: int,
) -> SessionTransitions:
    """Link every row to the next row of its session, vectorised.

    Rows are sorted by session, then by ``sort_keys`` (timestamps); the sort
    is stable, so tied timestamps keep the input row order. Sessions are
    ordered by their id's value, so the links do not depend on the order of
    the input rows (except between exactly tied rows).

    Parameters
    ----------
    session_ids : ndarray of shape (n_samples,) or None
        Session of each row (ints or strings). ``None``: each row is its own
        one-step session.
    sort_keys : ndarray of shape (n_samples,) or None
        Numeric sort key of each row (see ``check_metadata``). ``None``: row
        order.
    n_samples : int
        Number of rows.

    Returns
    -------
    SessionTransitions
    """
    rows = np.arange(n_samples)
    if session_ids is None:
        return SessionTransitions(
            next_row=rows,
            done=np.ones(n_samples, dtype=bool),
            position=np.zeros(n_samples, dtype=np.int64),
            n_sessions=n_samples,
            order=rows,
        )
    # sort=True numbers sessions by id value, independent of row order.
    codes, uniques = pd.factorize(session_ids, sort=True)
    keys = rows if sort_keys is None else sort_keys
    order = np.lexsort((keys, codes))  # stable: ties keep row order
    sorted_codes = codes[order]
    last = np.ones(n_samples, dtype=bool)
    last[:-1] = sorted_codes[1:] != sorted_codes[:-1]
    next_sorted = np.where(last, order, np.roll(order, -1))
    # Position = index in sorted order minus the index of the session start.
    first = np.ones(n_samples, dtype=bool)
    first[1:] = last[:-1]
    starts = np.maximum.accumulate(np.where(first, rows, 0))
    next_row = np.empty(n_samples, dtype=np.int64)
    done = np.empty(n_samples, dtype=bool)
    position = np.empty(n_samples, dtype=np.int64)
    next_row[order] = next_sorted
    done[order] = last
    position[order] = rows - starts
    return SessionTransitions(
        next_row=next_row,
        done=done,
        position=position,
        n_sessions=len(uniques),
        order=order,
    )


def session_uniforms(
    session_ids: np.ndarray | None, first_row: int, n_samples: int, seed: int
) -> np.ndarray:
    """A number in [0, 1) per row, the same for every row of a session.

    Drawn from a hash of the session id and ``seed``, so a session gets its
    number whatever block or chunk its rows arrive in: ``u < fraction``
    holds a fraction of the sessions out, ``floor(u * k)`` deals them into
    k folds. Without ``session_ids`` each row is its own session, named by
    its position (``first_row`` is the position of the first one).

    Parameters
    ----------
    session_ids : ndarray of shape (n_samples,) or None
        Session of each row (ints or strings).
    first_row : int
        Position of the first row among all rows of the fit.
    n_samples : int
        Number of rows.
    seed : int
        Seed mixed into the hash.

    Returns
    -------
    ndarray of shape (n_samples,), dtype float64
    """
    keys = (
        np.arange(first_row, first_row + n_samples)
        if session_ids is None
        else np.asarray(session_ids)
    )
    h = pd.util.hash_array(keys) ^ np.uint64(seed % 2**64)
    # One splitmix64 finaliser: the seed's bits reach every bit of the hash.
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) / 2.0**53


#: Seed of the critics' cross-fitting folds: fixed, so that a row's fold is a
#: function of its session id alone and is found again after fit.
FOLD_SEED = 0x5E55


def session_folds(
    session_ids: np.ndarray | None, first_row: int, n_samples: int, n_folds: int
) -> np.ndarray:
    """The cross-fitting fold of every row, the same for every row of a session.

    ``floor(u * n_folds)`` of :func:`session_uniforms` at :data:`FOLD_SEED`:
    the folds depend on the session ids only (not on a fit's seed), so
    ``loss_weights`` and ``critic_diagnostics`` route a fitted estimator's
    rows to the critics that never saw their session.

    Parameters
    ----------
    session_ids : ndarray of shape (n_samples,) or None
        Session of each row; None: each row its own session, named by its
        position (``first_row`` is the position of the first one).
    first_row : int
        Position of the first row among all rows of the fit.
    n_samples : int
        Number of rows.
    n_folds : int
        Number of folds.

    Returns
    -------
    ndarray of shape (n_samples,), dtype int64, in ``[0, n_folds)``
    """
    u = session_uniforms(session_ids, first_row, n_samples, FOLD_SEED)
    return np.floor(u * n_folds).astype(np.int64)


def rewards(
    y01: np.ndarray, actions: np.ndarray, observed: np.ndarray | None = None
) -> np.ndarray:
    """Per-task reward of Eq. (2): the negative BCE of the action.

    ``r = y log(a) + (1 - y) log(1 - a)`` with ``a`` clipped to
    ``[1e-4, 1 - 1e-4]``, so ``-9.21 <= r <= 0``. A missing label has no
    reward: it is 0 there, and the critics' TD loss masks that entry
    (:func:`~sklearn_rmtl._td.td_step`).

    Parameters
    ----------
    y01 : ndarray of shape (n_samples, n_tasks)
        0/1 labels.
    actions : ndarray of shape (n_samples, n_tasks)
        Predicted probabilities (the actions).
    observed : ndarray of bool of shape (n_samples, n_tasks), default=None
        Which labels exist; None: all.

    Returns
    -------
    ndarray of shape (n_samples, n_tasks), dtype float32
    """
    a = np.clip(actions, ACTION_CLIP, 1 - ACTION_CLIP)
    r = (y01 * np.log(a) + (1 - y01) * np.log1p(-a)).astype(np.float32)
    return r if observed is None else np.where(observed, r, np.float32(0.0))


def behavior_actions(
    policy: np.ndarray,
    order: np.ndarray,
    *,
    behavior_policy: str,
    action_noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """The actions stored in the transitions (the behaviour policy's draws).

    Parameters
    ----------
    policy : ndarray of shape (n_samples, n_tasks)
        The pretrained actor's probabilities.
    order : ndarray of shape (n_samples,)
        :attr:`SessionTransitions.order`: random numbers are drawn in this
        canonical (session, time) order, so the actions do not depend on the
        order of the input rows.
    behavior_policy : {"actor", "actor_logit", "uniform"}
        "actor": ``policy`` plus Gaussian noise of std ``action_noise``
        clipped at two std, then to [0, 1] (the paper); "actor_logit": the
        same noise added to the logit of ``policy``, so an action is never
        exactly 0 or 1; "uniform": uniform draws from [0, 1] (the authors'
        code).
    action_noise : float
        Std of the noise of the "actor" policies (in probability, or in
        logit for "actor_logit").
    rng : numpy.random.Generator
        Source of the draws.

    Returns
    -------
    ndarray of shape (n_samples, n_tasks)
    """
    draws = np.empty_like(policy)
    if behavior_policy in ("actor", "actor_logit"):
        # NOTE[DIFF]: the paper names the pretrained actor as behaviour
        # policy without noise details; clipped Gaussian noise explores
        # around it (TD3-style).
        sd = action_noise
        draws[order] = rng.normal(0.0, sd, policy.shape)
        noise = np.clip(draws, -2 * sd, 2 * sd)
        if behavior_policy == "actor":
            return np.clip(policy + noise, 0.0, 1.0)
        # NOTE[DIFF]: noise in logit space never pins an action at the [0, 1]
        # boundary, where "actor" puts a fifth of the rare-label actions
        # (their rewards then carry most of the reward variance, measured).
        p = np.clip(policy, ACTION_CLIP, 1 - ACTION_CLIP)
        return 1.0 / (1.0 + np.exp(-(np.log(p) - np.log1p(-p) + noise)))
    draws[order] = rng.random(policy.shape)
    return draws
