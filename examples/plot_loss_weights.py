"""
Inspecting the learned loss weights
===================================

RMTL refits the multi-task network with one loss weight per row and task,
``w = 1 - q_lambda * Q_k(s, a_k)``, where the critic ``Q_k <= 0`` estimates
the discounted return of the rest of the session for task ``k``. Rows whose
remaining session the critic expects to go badly get weights above 1; rows
it expects to go well stay near 1.

This example fits RMTL on the bundled RetailRocket sample and looks at the
weights with :class:`~sklearn_rmtl.plotting.LossWeightsDisplay`: their
distribution per task, and their mean at each position in the session.
"""

# %%
# Fit RMTL on the training sessions
# ---------------------------------
import numpy as np
import pandas as pd

from sklearn_rmtl import RMTLClassifier, SessionCritic
from sklearn_rmtl.datasets import load_retailrocket
from sklearn_rmtl.model_selection import temporal_train_test_split

data = load_retailrocket()
X_fit, _, y_fit, _, s_fit, _, t_fit, _ = temporal_train_test_split(
    data.X,
    data.y,
    data.session_ids,
    data.timestamps,
    timestamps=data.timestamps,
    session_ids=data.session_ids,
    sizes=(0.8, 0.2),
)
rmtl = RMTLClassifier(
    backbone="sharedbottom",
    backbone_params={"embedding_dim": 16, "bottom_dims": (64,), "tower_dims": (32,)},
    critic=SessionCritic(hidden_dims=(64,), max_epochs=3),
    max_epochs=3,
    validation_fraction=0.25,
    random_state=0,
)
rmtl.fit(X_fit, y_fit, session_ids=s_fit, timestamps=t_fit)

# %%
# The weights the refit used
# --------------------------
# :meth:`~sklearn_rmtl.RMTLClassifier.loss_weights` returns them for any
# labelled rows, in the input order; with the default ``weighting="rmtl"``
# they are at least 1.
weights = rmtl.loss_weights(X_fit, y_fit)
summary = pd.DataFrame(weights, columns=y_fit.columns).describe().T
print(summary[["mean", "std", "min", "50%", "max"]].round(3))

# %%
# Positive and negative rows are weighed differently: the reward of a row is
# the negative log loss of the prediction, and positives are rare and hard
# to predict, so the critic expects worse returns where they occur.
by_label = {
    task: pd.Series(weights[:, k]).groupby(y_fit[task].to_numpy()).mean()
    for k, task in enumerate(y_fit.columns)
}
print(pd.DataFrame(by_label).rename_axis("label").round(3))

# %%
# Distribution and trend along the session
# ----------------------------------------
# The display orders each session's rows by time (vectorised, from
# ``session_ids`` and ``timestamps``) to find every row's position, then
# plots a histogram of the weights per task and the mean weight at each of
# the first 15 positions. Deep positions are averaged over few sessions:
# ``display.rows_by_position_`` counts them.
import matplotlib.pyplot as plt

from sklearn_rmtl.plotting import LossWeightsDisplay

display = LossWeightsDisplay.from_estimator(
    rmtl, X_fit, y_fit, session_ids=s_fit, timestamps=t_fit, max_position=15
)
print(display.rows_by_position_.head(10).to_string())
plt.show()

# %%
# The weights depend on ``q_lambda`` linearly: the paper's 0.7 is the
# default; ``weighting="label_q"`` applies the critic to positive rows only
# and ``"neg_q"`` uses ``-Q`` itself (Table 2 of the paper, run by
# ``rmtl ablation``).
print("max weight with q_lambda=0.7:", np.round(weights.max(axis=0), 3))
