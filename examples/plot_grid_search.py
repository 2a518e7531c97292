"""
Hyper-parameter search with sessions: routing, scorers and GroupKFold
=====================================================================

Choosing RMTL's settings by cross-validation needs three things that plain
scikit-learn does not pass by itself:

- ``session_ids`` and ``timestamps`` must reach every ``fit``, to build the
  session MDP;
- session metrics (s-Logloss, GAUC) must receive the ``session_ids`` of the
  rows they score;
- folds must keep sessions whole, or the critics would learn from sessions
  cut in two and test rows would leak into training sessions.

scikit-learn's **metadata routing** handles the first two;
:class:`~sklearn.model_selection.GroupKFold` with the sessions as groups
handles the third.
"""

# %%
# Data: synthetic sessions with sequential structure
# --------------------------------------------------
# :func:`~sklearn_rmtl.datasets.make_sessions` generates sessions whose
# labels depend on what happened earlier in the session (a latent intent,
# momentum of clicks, fatigue with position), which is what RMTL's critics
# learn from. It is small and learnable in seconds, so each of the nine fits
# of the search below is fast; the same code runs on the bundled real
# datasets.
import numpy as np
import sklearn

from sklearn_rmtl.datasets import make_sessions

data = make_sessions(n_sessions=1500, random_state=0)
X, y, s, t = data.X, data.y, data.session_ids, data.timestamps
print(f"{len(X):,} rows in {len(np.unique(s)):,} sessions")
print(y.mean().rename("positive rate"))

# %%
# Turn routing on and build the search
# ------------------------------------
# Both estimators request ``session_ids`` and ``timestamps`` for ``fit`` by
# default, and the session scorers request ``session_ids``: once routing is
# on, passing them to ``GridSearchCV.fit`` is enough. The grid compares
# RMTL's critic weights with plain continued training (constant weights),
# and two values of the paper's ``q_lambda``. The critic phase's settings
# are one parameter, ``critic``, a :class:`~sklearn_rmtl.SessionCritic`; a
# grid reaches them as ``critic__<name>``, e.g. ``{"critic__gamma": [0.5,
# 0.95]}``.
from sklearn.model_selection import GridSearchCV, GroupKFold

from sklearn_rmtl import RMTLClassifier, SessionCritic
from sklearn_rmtl.metrics import (
    group_roc_auc_scorer,
    make_task_scorer,
    session_log_loss_scorer,
)

sklearn.set_config(enable_metadata_routing=True)

rmtl = RMTLClassifier(
    backbone="sharedbottom",
    backbone_params={"embedding_dim": 8, "bottom_dims": (32,), "tower_dims": (16,)},
    critic=SessionCritic(hidden_dims=(32,), max_epochs=3),
    max_epochs=5,
    batch_size=512,
    random_state=0,
)
search = GridSearchCV(
    rmtl,
    param_grid=[
        {"weighting": ["constant"]},
        {"weighting": ["rmtl"], "q_lambda": [0.3, 0.7]},
    ],
    cv=GroupKFold(n_splits=3),
    scoring={
        "s-Logloss": session_log_loss_scorer,  # negated: greater is better
        "GAUC": group_roc_auc_scorer,
        "purchase AUC": make_task_scorer("roc_auc", task="purchase"),
    },
    refit="s-Logloss",
    n_jobs=1,  # n_jobs=-1 fits candidates and folds in parallel
)
search.fit(X, y, groups=s, session_ids=s, timestamps=t)
print("best:", search.best_params_)

# %%
# Plot the cross-validated scores
# -------------------------------
# Every candidate is scored on the same three folds, so the comparison is
# paired: each grey line is one fold, the black markers the mean. Folds
# differ more from each other than candidates do; what matters is whether
# the lines move the same way. s-Logloss is negated by its scorer, so that
# greater is better for all three scores.
import matplotlib.pyplot as plt
import pandas as pd

results = pd.DataFrame(search.cv_results_)
labels = [
    "constant" if p["weighting"] == "constant" else f"rmtl\nq_lambda={p['q_lambda']}"
    for p in results["params"]
]
n_folds = search.n_splits_
x = np.arange(len(labels))
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
for ax, name in zip(axes, search.scorer_, strict=True):
    for fold in range(n_folds):
        ax.plot(x, results[f"split{fold}_test_{name}"], color="0.6", marker=".")
    ax.plot(x, results[f"mean_test_{name}"], "ko", label="mean over folds")
    ax.set_xticks(x, labels)
    ax.set(title=name, xlim=(-0.4, len(labels) - 0.6))
axes[0].set_ylabel("test score (greater is better)")
axes[0].legend()
plt.show()

# %%
# The table behind the plot:
columns = [f"mean_test_{name}" for name in search.scorer_]
print(results[columns].set_axis(labels).round(4))

# %%
# Routing is a global setting: switch it back off when done.
sklearn.set_config(enable_metadata_routing=False)
