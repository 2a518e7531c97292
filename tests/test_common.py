"""scikit-learn's estimator checks on every public estimator."""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_rmtl import FeatureEncoder, MTLClassifier, RMTLClassifier, SessionCritic

# sklearn's checks have no sessions; RMTL warns about that on every fit.
pytestmark = pytest.mark.filterwarnings("ignore:session_ids is None")

# Small networks keep the checks fast; behaviour does not depend on size.
SMALL = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,), "n_experts": 2}

# These checks assume a 1-D target; the estimators are multi-output only
# (predict_proba returns (n_samples, n_tasks)); see the Notes of MTLClassifier
# (docs/api/estimators.rst) and the quickstart (docs/quickstart.rst).
ONE_D_TARGET_CHECKS = {
    "check_classifiers_train": "assumes a 1-D target and (n, n_classes) probabilities",
    "check_classifiers_one_label": "assumes a 1-D target",
    "check_classifiers_classes": "assumes a 1-D target and 1-D classes_",
    "check_classifiers_one_label_sample_weights": "assumes a 1-D target",
}

# A zero weight equals dropping the row (tests/test_sample_weight.py), but an
# integer weight is not the same as repeating the row: repetitions change the
# encoder's scaling statistics (which are not weighted) and the rows held out
# for early stopping, and shuffled minibatches see repeated rows in other
# batches than a weighted row (user guide, "Sample weights").
SAMPLE_WEIGHT_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "weights are not repetitions: unweighted encoder statistics, held-out "
        "split and stochastic minibatches differ"
    ),
}


def _expected_failed_checks(estimator):
    if isinstance(estimator, MTLClassifier):
        return {**ONE_D_TARGET_CHECKS, **SAMPLE_WEIGHT_CHECKS}
    return {}


@parametrize_with_checks(
    [
        FeatureEncoder(),
        MTLClassifier(backbone="mmoe", backbone_params=SMALL, max_epochs=3),
        RMTLClassifier(
            backbone="mmoe",
            backbone_params=SMALL,
            critic=SessionCritic(hidden_dims=(8,), max_epochs=2),
            max_epochs=2,
        ),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
