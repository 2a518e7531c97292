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
