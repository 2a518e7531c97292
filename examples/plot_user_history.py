"""
What the user did before: a behaviour history with target attention
====================================================================

The most predictive input of click models since DIN (Zhou et al., KDD
2018) is the user's recent behaviour: the items they viewed before this
one, weighted by how much each resembles the candidate item. Here the
history is built from the log of the bundled RetailRocket sample with
:func:`~sklearn_rmtl.datasets.history_column` (each visitor's earlier
items, strictly earlier in time, so no row sees its own or a later event),
and an MMoE with and without it is compared on the validation part of a
temporal split. The history shares the item column's vocabulary and
embedding table; ``sequence_pooling="attention"`` weights each earlier
item by an MLP of it and the candidate item.
"""

# %%
# A history column from the log
# ------------------------------
# One row per viewed item; the history of a row is the list of the
# visitor's earlier items, oldest first, at most ``max_len`` of them.
from sklearn_rmtl.datasets import history_column, load_retailrocket

data = load_retailrocket()
X = data.X.assign(
    history=history_column(
        data.X, user="visitorid", item="itemid", time=data.timestamps, max_len=20
    )
)
print(X[["visitorid", "itemid", "history"]].iloc[200:204])

# %%
# Fit with and without the history
# --------------------------------
# A 6:2:2 split by time with whole sessions; both models are fitted on the
# train part and compared on the validation part. The networks are small
# and the epochs few, to keep the example fast on a CPU.
from sklearn_rmtl import MTLClassifier
from sklearn_rmtl.model_selection import temporal_train_test_split

parts = temporal_train_test_split(
    X, data.y, data.timestamps, timestamps=data.timestamps, session_ids=data.session_ids
)
X_tr, X_va, _, y_tr, y_va, _, t_tr, _, _ = parts
sizes = {"embedding_dim": 16, "bottom_dims": (64,), "tower_dims": (32,), "n_experts": 4}
common = {"backbone": "mmoe", "max_epochs": 4, "random_state": 0}
models = {
    "MMoE": MTLClassifier(backbone_params=sizes, **common).fit(
        X_tr.drop(columns="history"), y_tr, timestamps=t_tr
    ),
    "MMoE + history": MTLClassifier(
        backbone_params={**sizes, "sequence_pooling": "attention"},
        sequence_features={"history": "itemid"},
        max_sequence_length=20,
        **common,
    ).fit(X_tr, y_tr, timestamps=t_tr),
}

# %%
# Compare on the validation part
# ------------------------------
# One panel per metric, one group of bars per task (AUC: higher is better;
# Logloss: lower is better). This is one seed of small networks on a small
# sample, and its differences are not a finding: the paired study over five
# seeds at the experiments' settings (``benchmarks/study_history.py``; the
# backbone quality page, "Behaviour histories") found a gain of about 0.03
# click AUC on RetailRocket's validation part (5/5 seeds) that its test
# part did not confirm, none on the bundled KuaiRand and Taobao samples,
# and a significant loss for PLE on KuaiRand. Validate a history on your
# own data the same way, and confirm it once on held-out data.
import matplotlib.pyplot as plt
import pandas as pd

from sklearn_rmtl.metrics import per_task_log_loss, per_task_roc_auc

inputs = {"MMoE": X_va.drop(columns="history"), "MMoE + history": X_va}
table = pd.DataFrame(
    {
        name: {
            **dict(
                zip(y_va.columns + " AUC", per_task_roc_auc(y_va, proba), strict=True)
            ),
            **dict(
                zip(
                    y_va.columns + " Logloss",
                    per_task_log_loss(y_va, proba),
                    strict=True,
                )
            ),
        }
        for name, model in models.items()
        for proba in [model.predict_proba(inputs[name])]
    }
)
print(table.round(4))
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for ax, metric in zip(axes, ("AUC", "Logloss"), strict=True):
    table[table.index.str.endswith(metric)].plot.bar(ax=ax, rot=20, title=metric)
    low, high = table[table.index.str.endswith(metric)].stack().agg(["min", "max"])
    ax.set_ylim(low - 0.05, high + 0.02)
plt.tight_layout()
plt.show()
