"""Non-finite losses or weights raise DivergenceError and keep the old fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.exceptions import DivergenceError

DATA = make_sessions(n_sessions=40, random_state=0)
FIT = {"session_ids": DATA.session_ids, "timestamps": DATA.timestamps}
SMALL = {"backbone": "sharedbottom", "max_epochs": 2, "random_state": 0}


class PoisonLastEpoch(Callback):
    """Makes one weight NaN at the end of the last epoch, after its loss."""

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == net.max_epochs:
            with torch.no_grad():
                next(net.module_.parameters()).view(-1)[0] = float("nan")


def test_non_finite_weights_after_the_last_step_raise():
    clf = MTLClassifier(**SMALL, early_stopping=False).fit(DATA.X, DATA.y, **FIT)
    before = clf.predict_proba(DATA.X)
    clf.set_params(callbacks=[PoisonLastEpoch()])
    with pytest.raises(DivergenceError, match=r"pretrain weights became nan.*Lower lr"):
        clf.fit(DATA.X, DATA.y, **FIT)
    # The previous fit is intact and still predicts as before.
    np.testing.assert_array_equal(clf.predict_proba(DATA.X), before)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lr": 1e9}, r"The pretrain .* became nan .* Lower lr, .*\)\.$"),
        ({"refit_lr": 1e9}, r"The refit .* Lower refit_lr, .*, or lower q_lambda\."),
    ],
)
@pytest.mark.parametrize("early_stopping", [True, False])
def test_an_absurd_learning_rate_names_its_phase(params, message, early_stopping):
    clf = RMTLClassifier(
        **SMALL,
        critic=SessionCritic(max_epochs=1),
        early_stopping=early_stopping,
        **params,
    )
    with pytest.raises(DivergenceError, match=message):
        clf.fit(DATA.X, DATA.y, **FIT)
    assert not hasattr(clf, "critic_")
