"""
Quickstart: multi-task baselines on click and purchase
======================================================

Train the paper's multi-task backbones with :class:`sklearn_rmtl.MTLClassifier`
on a click -> purchase funnel and compare their per-task AUC on held-out rows.
"""

# %%
# Data: mixed categorical and numerical features, two funnel tasks
# ----------------------------------------------------------------
# A purchase is only possible after a click; both depend on the item and the
# price. (The bundled real datasets replace this block once they land.)
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from sklearn_rmtl import MTLClassifier

rng = np.random.default_rng(0)
n = 20_000
X = pd.DataFrame(
    {
        "item": pd.Categorical(rng.choice([f"i{k}" for k in range(200)], n)),
        "shop": pd.Categorical(rng.choice([f"s{k}" for k in range(20)], n)),
        "price": rng.lognormal(size=n),
        "position": rng.integers(1, 20, n),
    }
)
item_effect = dict(zip(X["item"].cat.categories, rng.normal(size=200), strict=True))
score = X["item"].map(item_effect).astype(float) - 0.1 * X["position"] - 0.3 * np.log(X["price"])
click = rng.random(n) < 1 / (1 + np.exp(-(score - 1.0)))
purchase = click & (rng.random(n) < 1 / (1 + np.exp(-(score - 1.5))))
Y = pd.DataFrame({"click": click.astype(int), "purchase": purchase.astype(int)})
train, test = slice(0, 16_000), slice(16_000, None)

# %%
# Fit every backbone with the paper's defaults (a few epochs to keep it short)
# ---------------------------------------------------------------------------
rows = []
for backbone in ["singletask", "sharedbottom", "esmm", "mmoe", "ple", "omoe", "aitm"]:
    start = time.perf_counter()
    clf = MTLClassifier(backbone=backbone, max_epochs=5, random_state=0)
    clf.fit(X[train], Y[train])
    proba = clf.predict_proba(X[test])
    rows.append(
        {
            "backbone": backbone,
            **{
                f"AUC {task}": roc_auc_score(Y[task][test], proba[:, k])
                for k, task in enumerate(clf.task_names_)
            },
            "epochs": clf.n_iter_,
            "seconds": time.perf_counter() - start,
        }
    )
results = pd.DataFrame(rows).set_index("backbone")
print(results.round(3).to_string())
