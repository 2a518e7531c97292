"""Same data, same seed, same predictions as before the package was reorganised.

``tests/data/seeded_predictions.npz`` was recorded by :func:`record` at
commit 7152844, before the modules were reorganised (training driver,
persistence container and schema, integer codes): fits of every phase must
still give its predictions. Re-record only for an intended change of the
results, and say so in the changelog::

    python tests/test_regression.py tests/data/seeded_predictions.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl.datasets import make_sessions

EXPECTED = Path(__file__).parent / "data" / "seeded_predictions.npz"
SMALL = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
ESTIMATORS = {
    "mtl_ple": lambda: MTLClassifier(
        backbone="ple",
        backbone_params={**SMALL, "n_shared_experts": 1, "n_specific_experts": 1},
        max_epochs=2,
        random_state=0,
    ),
    "mtl_esmm": lambda: MTLClassifier(
        backbone="esmm", backbone_params=SMALL, max_epochs=2, random_state=1
    ),
    "rmtl_mmoe": lambda: RMTLClassifier(
        backbone="mmoe",
        backbone_params={**SMALL, "n_experts": 2},
        max_epochs=2,
        critic=SessionCritic(max_epochs=2),
        random_state=0,
    ),
    "rmtl_constant": lambda: RMTLClassifier(
        backbone="sharedbottom",
        backbone_params=SMALL,
        weighting="constant",
        max_epochs=2,
        random_state=2,
    ),
}


def _predictions(name: str) -> dict[str, np.ndarray]:
    data = make_sessions(n_sessions=60, random_state=0)
    est = ESTIMATORS[name]().fit(
        data.X, data.y, session_ids=data.session_ids, timestamps=data.timestamps
    )
    out = {name: est.predict_proba(data.X)}
    if name == "rmtl_mmoe":
        out[f"{name}_weights"] = est.loss_weights(data.X, data.y)
    return out


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_seeded_fits_predict_as_recorded(name):
    expected = np.load(EXPECTED)
    for key, values in _predictions(name).items():
        # Equal to the bit on the recording machine; the tolerance allows for
        # another CPU's floating-point kernels.
        np.testing.assert_allclose(values, expected[key], rtol=0, atol=1e-5)


def record(path: str) -> None:
    """Write the predictions of every estimator above to ``path``."""
    out: dict[str, np.ndarray] = {}
    for name in ESTIMATORS:
        out.update(_predictions(name))
    np.savez(path, **out)


if __name__ == "__main__":
    record(sys.argv[1])
