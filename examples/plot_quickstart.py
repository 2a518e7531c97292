"""
Quickstart: RMTL on real RetailRocket sessions
==============================================

Fit a multi-task baseline and RMTL on the bundled sample of the RetailRocket
e-commerce log: predict, for every item a visitor viewed, whether they add it
to the cart (``click``) and whether they buy it (``purchase``). The data are
split by time, as in the paper, and the models are scored on the latest
sessions with the paper's metrics.
"""

# %%
# Load a bundled real dataset
# ---------------------------
# :func:`~sklearn_rmtl.datasets.load_retailrocket` works offline on a sample
# of 2,174 visitors shipped with the package. ``X`` holds one row per viewed
# item, ``y`` one 0/1 column per task, and every row has a session and a
# timestamp: RMTL learns from what happens later in the session.
import numpy as np
import pandas as pd

from sklearn_rmtl.datasets import load_retailrocket

data = load_retailrocket()
X, y, sessions, times = data.X, data.y, data.session_ids, data.timestamps
print(f"{len(X):,} rows in {len(np.unique(sessions)):,} sessions")
print(y.mean().rename("positive rate"))
X.head()

# %%
# Split by time, keeping sessions whole
# -------------------------------------
# :func:`~sklearn_rmtl.model_selection.temporal_train_test_split` cuts the
# sessions 6:2:2 by their start time: train on the past, test on the future.
# The estimators do their own early stopping on the latest rows they are
# given, so we fit on train + validation and hold out the latest quarter of
# it (``validation_fraction=0.25``), which is about the validation part.
from sklearn_rmtl.model_selection import temporal_train_test_split

parts = temporal_train_test_split(
    X, y, sessions, times, timestamps=times, session_ids=sessions
)
X_tr, X_va, X_te, y_tr, y_va, y_te, s_tr, s_va, s_te, t_tr, t_va, t_te = parts
X_fit, y_fit = pd.concat([X_tr, X_va]), pd.concat([y_tr, y_va])
s_fit, t_fit = np.concatenate([s_tr, s_va]), np.concatenate([t_tr, t_va])
print(f"fit on {len(X_fit):,} rows, test on {len(X_te):,} rows")

# %%
# Fit a baseline, then RMTL on top of it
# --------------------------------------
# :class:`~sklearn_rmtl.MTLClassifier` trains one multi-task network (here
# MMoE). :class:`~sklearn_rmtl.RMTLClassifier` takes that fitted network as
# its pretrained actor, learns one critic per task on the session MDP, and
# refits the network with per-row, per-task loss weights ``1 - 0.7 Q``.
# The networks are much smaller than the paper's (``backbone_params``) so
# that the example runs in seconds on a CPU.
from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic

small = {"embedding_dim": 16, "bottom_dims": (64,), "tower_dims": (32,)}
baseline = MTLClassifier(
    backbone="mmoe",
    backbone_params={**small, "n_experts": 4},
    max_epochs=4,
    validation_fraction=0.25,
    random_state=0,
)
baseline.fit(X_fit, y_fit, timestamps=t_fit)

rmtl = RMTLClassifier(
    actor=baseline,  # reuse the fitted baseline as the pretrained actor
    critic=SessionCritic(hidden_dims=(64,), max_epochs=3),
    max_epochs=3,
    validation_fraction=0.25,
    random_state=0,
)
rmtl.fit(X_fit, y_fit, session_ids=s_fit, timestamps=t_fit)

# %%
# Score on the latest sessions
# ----------------------------
# The paper reports per-task AUC, logloss and session logloss (s-Logloss:
# the logloss averaged within each session, then over sessions).
from sklearn_rmtl.metrics import per_task_log_loss, per_task_roc_auc, session_log_loss

rows = {}
for name, est in {"MMoE": baseline, "RMTL-MMoE": rmtl}.items():
    proba = est.predict_proba(X_te)  # shape (n_rows, n_tasks)
    scores = {
        "AUC": per_task_roc_auc(y_te, proba),
        "Logloss": per_task_log_loss(y_te, proba),
        "s-Logloss": session_log_loss(y_te, proba, session_ids=s_te),
    }
    rows[name] = {
        (task, metric): values[k]
        for metric, values in scores.items()
        for k, task in enumerate(y.columns)
    }
print(pd.DataFrame(rows).T.round(4).to_string())
print("refit improved on the baseline's validation loss:", rmtl.refit_improved_)

# %%
# Look at the training curves
# ---------------------------
# :class:`~sklearn_rmtl.plotting.TrainingCurvesDisplay` draws one panel per
# phase from ``history_``: the pretraining losses (here the baseline's), the
# critics' temporal-difference loss, and the Q-weighted refit. The refit's
# training loss is weighted (weights >= 1), so it sits above the unweighted
# validation loss. When no refit epoch beats the pretrained network on the
# validation rows, the pretrained weights are kept and the panel says so.
import matplotlib.pyplot as plt

from sklearn_rmtl.plotting import TrainingCurvesDisplay

TrainingCurvesDisplay.from_estimator(rmtl)
plt.show()
