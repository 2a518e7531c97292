"""Targets that cannot be trained on fail before training, naming what is wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sklearn_rmtl import MTLClassifier

X = np.random.default_rng(0).random((20, 3))


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (np.empty((0, 2)), "y has no rows"),
        (pd.DataFrame({"click": [], "buy": []}), "y has no rows"),
        (
            pd.DataFrame({"click": [1, "1"] * 10, "buy": [0, 1] * 10}),
            r"Task 'click' mixes label types \(number, str\)",
        ),
    ],
)
def test_untrainable_targets_are_clear_errors(y, message):
    clf = MTLClassifier(max_epochs=1)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)
    assert not hasattr(clf, "classes_")  # nothing half-fitted


def test_string_labels_of_one_type_are_accepted():
    y = pd.DataFrame({"click": ["no", "yes"] * 10, "buy": [0, 1] * 10})
    clf = MTLClassifier(max_epochs=1, random_state=0).fit(X, y)
    assert list(clf.classes_[0]) == ["no", "yes"]


def test_a_skorch_early_stopping_callback_is_rejected_before_training():
    from skorch.callbacks import EarlyStopping

    y = pd.DataFrame({"click": [0, 1] * 10, "buy": [0, 1] * 10})
    for callbacks in ([EarlyStopping()], [("stop", EarlyStopping(patience=1))]):
        clf = MTLClassifier(max_epochs=2, callbacks=callbacks)
        with pytest.raises(ValueError, match="Early stopping is built in"):
            clf.fit(X, y)
        assert not hasattr(clf, "classes_")


def _click_buy():
    from sklearn_rmtl.datasets import make_sessions

    data = make_sessions(n_sessions=40, random_state=0)
    y = data.y.copy()
    y.columns = ["click", "buy"]
    return data, y


@pytest.mark.parametrize("given", ["actor", "critic"])
def test_an_actor_or_critic_of_other_tasks_is_rejected(given):
    from sklearn_rmtl import RMTLClassifier, SessionCritic

    data, y = _click_buy()
    fit = {"session_ids": data.session_ids, "timestamps": data.timestamps}
    small = {"backbone": "sharedbottom", "max_epochs": 1, "random_state": 0}
    if given == "actor":
        component = MTLClassifier(**small).fit(data.X, y, **fit)
    else:
        critic = SessionCritic(max_epochs=1)
        rmtl = RMTLClassifier(**small, critic=critic).fit(data.X, y, **fit)
        component = rmtl.critic_
    params = {"critic": SessionCritic(max_epochs=1), **small, given: component}
    swapped = y[["buy", "click"]]
    with pytest.raises(ValueError, match=r"the same tasks in another order; reorder"):
        RMTLClassifier(**params).fit(data.X, swapped, **fit)
    renamed = y.set_axis(["like", "view"], axis=1)
    with pytest.raises(ValueError, match=r"tasks \['click', 'buy'\] but y has col"):
        RMTLClassifier(**params).fit(data.X, renamed, **fit)
    # Unnamed targets (a NumPy y) are compared by their number only.
    RMTLClassifier(**params).fit(data.X, y.to_numpy(), **fit)
