"""precision="bfloat16": every phase's matrix products, reproducibility, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL, make_session_data
from sklearn.utils._param_validation import InvalidParameterError
from torch.utils._python_dispatch import TorchDispatchMode

from sklearn_rmtl import MTLClassifier, RMTLClassifier, persistence
from sklearn_rmtl.metrics import per_task_roc_auc

ops = torch.ops.aten
#: The matrix products autocast runs in its low precision.
PRODUCTS = {ops.mm.default, ops.addmm.default, ops.bmm.default, ops.baddbmm.default}

MTL_FAST = {
    "backbone": "mmoe",
    "backbone_params": {**SMALL, "n_experts": 2},
    "max_epochs": 2,
    "batch_size": 128,
    "random_state": 0,
}
FAST = {
    **MTL_FAST,
    "critic_hidden_dims": (16,),
    "refit_max_epochs": 1,
    "critic_max_epochs": 2,
}


class ProductDtypes(TorchDispatchMode):
    """Record the dtype of every matrix product torch runs."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in PRODUCTS:
            self.dtypes.append(args[-1].dtype)
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def sessions():
    return make_session_data(n_sessions=60, seed=0)


@pytest.mark.parametrize(
    "extra",
    [{}, {"actor_update": True}, {"task_balancing": "pcgrad"}],
    ids=["paper", "actor_update", "pcgrad"],
)
def test_bfloat16_reaches_every_product_of_fit_and_predict(sessions, extra):
    X, Y, s, t = sessions
    est = RMTLClassifier(**FAST, precision="bfloat16", **extra)
    with ProductDtypes() as spy:
        est.fit(X, Y, session_ids=s, timestamps=t)
    # Forward and backward products of pretraining, validation, the
    # behaviour actor, the TD steps (and actor steps), the refit and its Q.
    assert len(spy.dtypes) > 100
    assert set(spy.dtypes) == {torch.bfloat16}
    with ProductDtypes() as spy:
        proba = est.predict_proba(X)
        weights = est.loss_weights(X, Y)
    assert spy.dtypes and set(spy.dtypes) == {torch.bfloat16}
    assert proba.dtype == np.float64 and np.isfinite(weights).all()
    # Master weights stay float32.
    assert {p.dtype for p in est.net_.module_.parameters()} == {torch.float32}
    assert {p.dtype for p in est.critic_.module.parameters()} == {torch.float32}


def test_float32_runs_no_bfloat16_product(sessions):
    X, Y, s, t = sessions
    with ProductDtypes() as spy:
        RMTLClassifier(**FAST).fit(X, Y, session_ids=s, timestamps=t)
    assert set(spy.dtypes) == {torch.float32}


def test_bfloat16_is_reproducible_and_close_to_float32(sessions):
    X, Y, s, t = sessions
    fits = [
        RMTLClassifier(**FAST, precision=p).fit(X, Y, session_ids=s, timestamps=t)
        for p in ("bfloat16", "bfloat16", "float32")
    ]
    low, again, full = (f.predict_proba(X) for f in fits)
    np.testing.assert_array_equal(low, again)
    assert not np.array_equal(low, full)
    auc_low, auc_full = per_task_roc_auc(Y, low), per_task_roc_auc(Y, full)
    np.testing.assert_allclose(auc_low, auc_full, atol=0.02)
    w_low, w_full = (f.loss_weights(X, Y) for f in (fits[0], fits[2]))
    assert np.corrcoef(w_low.ravel(), w_full.ravel())[0, 1] > 0.9


def test_precision_is_saved_and_loaded(sessions, tmp_path):
    X, Y, _s, t = sessions
    est = MTLClassifier(**MTL_FAST, precision="bfloat16").fit(X, Y, timestamps=t)
    persistence.save(est, tmp_path / "m.rmtl")
    loaded = persistence.load(tmp_path / "m.rmtl")
    assert loaded.precision == "bfloat16" and loaded.net_.precision == "bfloat16"
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))


def test_bfloat16_warns_where_it_is_emulated(sessions, monkeypatch):
    import sklearn_rmtl._precision as precision

    monkeypatch.setattr(precision, "native_bfloat16", lambda device: False)
    X, Y, _s, _t = sessions
    with pytest.warns(UserWarning, match="no bfloat16 matrix units.*float32"):
        MTLClassifier(**MTL_FAST, precision="bfloat16").fit(X, Y)


def test_unknown_precision_is_a_parameter_error(sessions):
    X, Y, _s, _t = sessions
    with pytest.raises(InvalidParameterError, match="precision"):
        MTLClassifier(precision="float16").fit(X, Y)
