"""
Loading the full public datasets from their raw files
=====================================================

The loaders of :mod:`sklearn_rmtl.datasets` read the bundled samples by
default. Pointed at a folder with ``data_home=``, they build the same
session-wise rows from the official files of the full datasets, which you
download yourself (their licences do not allow redistribution):

- :func:`~sklearn_rmtl.datasets.load_retailrocket`: ``events.csv``, and
  optionally ``item_properties_part1.csv``, ``item_properties_part2.csv``
  and ``category_tree.csv``, from Kaggle's "retailrocket/ecommerce-dataset";
- :func:`~sklearn_rmtl.datasets.load_taobao`: the headerless
  ``UserBehavior.csv`` of Alibaba Tianchi dataset 649;
- :func:`~sklearn_rmtl.datasets.load_kuairand`: the ``log_standard_*.csv``
  files of the ``data/`` folder of KuaiRand-Pure, -1K or -27K
  (kuairand.com).

The full files are large (Taobao: about 100M rows) and cannot be fetched
while this documentation is built, so this example writes a few rows in
each official layout to a temporary folder and runs exactly the code path
you would run on the real downloads.
"""

# %%
# Write tiny files in the official layouts
# ----------------------------------------
# A few visitors browse items; some add them to the cart and buy them.
# Timestamps are in milliseconds (RetailRocket, KuaiRand) or seconds
# (Taobao), as in the originals.
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

rng = np.random.default_rng(0)
home = Path(tempfile.mkdtemp(prefix="rmtl_raw_"))


def browsing_log(n_users=60, start=1_433_000_000):
    """Per user, 1-3 sessions of views an hour apart, some carts and buys."""
    rows = []
    for user in range(n_users):
        t = start + int(rng.integers(0, 86_400))
        for _ in range(rng.integers(1, 4)):
            for _ in range(rng.integers(1, 9)):
                item = int(rng.integers(0, 40))
                t += int(rng.integers(5, 300))
                rows.append((t, user, "view", item))
                if rng.random() < 0.2:
                    rows.append((t + 20, user, "cart", item))
                    if rng.random() < 0.5:
                        rows.append((t + 60, user, "buy", item))
            t += 3_600
    return pd.DataFrame(rows, columns=["t", "user", "event", "item"])


log = browsing_log()
retailrocket = pd.DataFrame(
    {
        "timestamp": log["t"] * 1000,
        "visitorid": log["user"],
        "event": log["event"].map(
            {"view": "view", "cart": "addtocart", "buy": "transaction"}
        ),
        "itemid": log["item"],
        "transactionid": np.nan,
    }
)
retailrocket.to_csv(home / "events.csv", index=False)
# Item properties, split in two files like the originals: the category of
# each item, known from the start.
for part, items in enumerate([np.arange(20), np.arange(20, 40)], start=1):
    pd.DataFrame(
        {
            "timestamp": 1_400_000_000_000,
            "itemid": items,
            "property": "categoryid",
            "value": items % 5,
        }
    ).to_csv(home / f"item_properties_part{part}.csv", index=False)
pd.DataFrame({"categoryid": np.arange(5), "parentid": [9, 9, 8, 8, 8]}).to_csv(
    home / "category_tree.csv", index=False
)

# Taobao: headerless user_id, item_id, category_id, behavior_type, timestamp.
taobao = pd.DataFrame(
    {
        "user_id": log["user"],
        "item_id": log["item"],
        "category_id": log["item"] % 5,
        "behavior_type": log["event"].map({"view": "pv", "cart": "cart", "buy": "buy"}),
        "timestamp": log["t"],
    }
)
taobao.to_csv(home / "UserBehavior.csv", index=False, header=False)

# KuaiRand: one row per exposure of a video, with binary feedback columns.
views = log[log["event"] == "view"].reset_index(drop=True)
click = rng.random(len(views)) < 0.4
pd.DataFrame(
    {
        "user_id": views["user"],
        "video_id": views["item"],
        "time_ms": views["t"] * 1000,
        "is_click": click.astype(int),
        "long_view": (click & (rng.random(len(views)) < 0.5)).astype(int),
        "is_like": (click & (rng.random(len(views)) < 0.2)).astype(int),
        "duration_ms": rng.integers(5_000, 60_000, len(views)),
        "tab": rng.integers(0, 3, len(views)),
    }
).to_csv(home / "log_standard_4_08_to_4_21_pure.csv", index=False)
print(sorted(p.name for p in home.iterdir()))

# %%
# Load them like the full datasets
# --------------------------------
# The same call works on the real folders; only ``data_home`` changes. With
# the item properties present, RetailRocket rows also get the item's
# category (the value known at view time) and its parent category.
from sklearn_rmtl.datasets import load_kuairand, load_retailrocket, load_taobao

datasets = {
    "RetailRocket": load_retailrocket(data_home=home),
    "Taobao": load_taobao(data_home=home),
    "KuaiRand": load_kuairand(data_home=home),
}
for name, bunch in datasets.items():
    print(
        f"{name}: {len(bunch.X)} rows, {len(np.unique(bunch.session_ids))} sessions,"
        f" tasks {list(bunch.y.columns)}\n  features {list(bunch.X.columns)}"
    )
datasets["RetailRocket"].X.head()

# %%
# Every Bunch carries its provenance and preprocessing in ``DESCR``; read it
# before drawing conclusions. Its first lines:
print("\n".join(datasets["RetailRocket"].DESCR.splitlines()[2:10]))

# %%
# Sessions and label rates
# ------------------------
# Sessions are split at gaps of more than ``session_gap`` (30 minutes by
# default), so the hour between our visitor's bursts starts a new session.
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
# RetailRocket and Taobao were written from the same events, so their
# sessions coincide: dashed and dotted lines keep all three visible.
for (name, bunch), style in zip(datasets.items(), ["-", "--", ":"], strict=True):
    lengths = pd.Series(bunch.session_ids).value_counts()
    bins = np.arange(1, 12) - 0.5
    axes[0].hist(lengths, bins=bins, histtype="step", lw=2, ls=style, label=name)
rates = pd.DataFrame({name: b.y.mean() for name, b in datasets.items()}).T
rates.plot.bar(ax=axes[1], rot=0)
axes[0].set(title="rows per session", xlabel="rows", ylabel="sessions")
axes[0].legend()
axes[1].set(title="positive rate per task", ylabel="rate")
plt.show()

# %%
# Clean up the temporary folder.
import shutil

shutil.rmtree(home)
