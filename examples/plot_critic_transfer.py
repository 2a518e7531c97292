"""
Transferring a critic between backbones
=======================================

The critics of RMTL judge a row by its features and the predicted
probabilities only, not by the network that made them. A critic learnt while
training one backbone can therefore weight the refit of another (paper Sec.
3.4): fit RMTL once, then pass its fitted ``critic_`` as ``critic`` and skip
the critic phase (an unfitted :class:`~sklearn_rmtl.SessionCritic` there
holds the settings of critics still to train).

Here a critic learnt with MMoE refits an ESMM network, next to ESMM with a
critic of its own.
"""

# %%
# Data
# ----
from sklearn_rmtl.datasets import load_retailrocket
from sklearn_rmtl.model_selection import temporal_train_test_split

data = load_retailrocket()
parts = temporal_train_test_split(
    data.X,
    data.y,
    data.session_ids,
    data.timestamps,
    timestamps=data.timestamps,
    session_ids=data.session_ids,
)
# Early stopping holds out the latest rows of the training part itself.
X_fit, _, X_te, y_fit, _, y_te, s_fit, _, s_te, t_fit, _, _ = parts

# %%
# Learn a critic with MMoE
# ------------------------
from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic

sizes = {"embedding_dim": 16, "bottom_dims": (64,), "tower_dims": (32,)}
settings = {"max_epochs": 2, "validation_fraction": 0.2, "random_state": 0}
rmtl_mmoe = RMTLClassifier(
    backbone="mmoe",
    backbone_params={**sizes, "n_experts": 4},
    critic=SessionCritic(hidden_dims=(64,), max_epochs=3),
    **settings,
).fit(X_fit, y_fit, session_ids=s_fit, timestamps=t_fit)
critic = rmtl_mmoe.critic_
print(f"critic of tasks {list(critic.task_names_)}, {len(critic.history_)} epochs")

# %%
# Refit ESMM with its own critic, and with MMoE's
# -----------------------------------------------
# Both start from the same fitted ESMM baseline. With fitted critics as
# ``critic=`` the critic phase is skipped: ``history_["critic"]`` stays empty
# and the fit only runs the refit. The critic keeps its own feature encoder,
# so the two estimators only need the same feature columns and tasks.
esmm = MTLClassifier(
    backbone="esmm",
    backbone_params=sizes,
    max_epochs=3,
    validation_fraction=0.2,
    random_state=0,
).fit(X_fit, y_fit, timestamps=t_fit)

own = RMTLClassifier(
    actor=esmm, critic=SessionCritic(hidden_dims=(64,), max_epochs=3), **settings
).fit(X_fit, y_fit, session_ids=s_fit, timestamps=t_fit)
transferred = RMTLClassifier(actor=esmm, critic=critic, **settings).fit(
    X_fit, y_fit, session_ids=s_fit, timestamps=t_fit
)
for name, est in {"own critic": own, "MMoE's critic": transferred}.items():
    print(
        f"{name:>14}: {len(est.history_['critic'])} critic epochs, "
        f"{len(est.history_['refit'])} refit epochs"
    )

# %%
# The weights of the two critics on the same rows
# -----------------------------------------------
# The transferred critic was trained on MMoE's predictions, yet it weighs
# ESMM's rows much like ESMM's own critic does.
import numpy as np

w_own = own.loss_weights(X_fit, y_fit)
w_transferred = transferred.loss_weights(X_fit, y_fit)
for k, task in enumerate(y_fit.columns):
    r = np.corrcoef(w_own[:, k], w_transferred[:, k])[0, 1]
    print(f"{task}: correlation of the two critics' weights {r:.3f}")

# %%
# Test metrics
# ------------
import matplotlib.pyplot as plt

from sklearn_rmtl.plotting import MetricComparisonDisplay

MetricComparisonDisplay.from_estimators(
    {
        "ESMM": esmm,
        "RMTL-ESMM (own critic)": own,
        "RMTL-ESMM (MMoE's critic)": transferred,
    },
    X_te,
    y_te,
    session_ids=s_te,
)
plt.show()
