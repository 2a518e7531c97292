"""
From a CSV log to ONNX predictions
==================================

Go from an interaction log in a CSV file to a fitted RMTL model, export it
as one ONNX graph that holds the feature encoding, and predict with
onnxruntime alone: no hand-written encoding on the serving side. The same
steps on the command line are ``rmtl fit``, ``rmtl export`` and ``rmtl
predict`` (see the docs' "Your data from the command line" page).
Exporting needs ``pip install "sklearn-rmtl[onnx]"``.
"""

# %%
# A log as a CSV file
# -------------------
# The bundled RetailRocket sample, written the way a log usually arrives:
# one row per viewed item, ids as columns, one 0/1 column per task, the
# session and the time. We keep the first 8,000 rows so that the example
# runs in seconds.
import tempfile
from pathlib import Path

import pandas as pd

from sklearn_rmtl.datasets import load_retailrocket

data = load_retailrocket()
log = data.X.copy()
log[["click", "purchase"]] = data.y.to_numpy()
log["session"], log["time"] = data.session_ids, data.timestamps
folder = Path(tempfile.mkdtemp())
log.iloc[:8000].to_csv(folder / "train.csv", index=False)
log.iloc[8000:10000].to_csv(folder / "new.csv", index=False)
print(pd.read_csv(folder / "train.csv").head(3))

# %%
# Fit on the file
# ---------------
# Visitor and item ids are integers in the CSV, so we name them as
# categories; text columns would be categories anyway.
from sklearn_rmtl import RMTLClassifier, SessionCritic

train = pd.read_csv(folder / "train.csv")
features = [
    c for c in train.columns if c not in ("click", "purchase", "session", "time")
]
est = RMTLClassifier(
    backbone="mmoe",
    backbone_params={
        "embedding_dim": 8,
        "bottom_dims": (32,),
        "tower_dims": (16,),
        "n_experts": 2,
    },
    categorical_features=["visitorid", "itemid"],
    max_epochs=3,
    critic=SessionCritic(max_epochs=2),
    random_state=0,
)
est.fit(
    train[features],
    train[["click", "purchase"]],
    session_ids=train["session"],
    timestamps=pd.to_datetime(train["time"]),
)

# %%
# Export one graph, encoding included
# -----------------------------------
# :func:`~sklearn_rmtl.export.to_onnx` writes the vocabulary lookups (unseen
# ids to the unknown code), the imputation and scaling of the numbers and
# the network into one file. Its inputs are the raw columns.
import onnxruntime as ort

from sklearn_rmtl.export import onnx_inputs, to_onnx

to_onnx(est, folder / "model.onnx")
session = ort.InferenceSession(str(folder / "model.onnx"))
print([(i.name, i.type) for i in session.get_inputs()])

# %%
# Predict with onnxruntime
# ------------------------
# :func:`~sklearn_rmtl.export.onnx_inputs` only reshapes the columns of the
# new rows into the graph's ``(n, 1)`` inputs (a server in another language
# does the same); everything else happens inside the graph. The
# probabilities equal ``predict_proba``'s to float32 rounding, for visitors
# and items never seen in training as well.
import numpy as np

new = pd.read_csv(folder / "new.csv")
served = session.run(["probabilities"], onnx_inputs(est, new))[0]
expected = est.predict_proba(new[features])
unseen = ~new["itemid"].isin(train["itemid"])
print(f"{unseen.mean():.0%} of the new rows show an item unseen in training")
print(f"largest difference to predict_proba: {np.abs(served - expected).max():.1e}")

# %%
# The two predictions, task by task
# ---------------------------------
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
for k, (ax, task) in enumerate(zip(axes, est.task_names_, strict=True)):
    ax.scatter(expected[:, k], served[:, k], s=4, alpha=0.5)
    ax.set(title=task, xlabel="predict_proba", ylabel="onnxruntime")
fig.tight_layout()
plt.show()
