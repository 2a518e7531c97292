"""GridSearchCV on Dask and Ray (docs/scaling.rst): same results as sequential.

The recipes of the docs' "Distributed hyper-parameter search" section, on
the loopback interface only: a ``distributed.LocalCluster`` of two worker
processes and a local Ray instance of two CPUs, both through joblib, so the
search code is unchanged. Each fit draws from its own seeded generator, so
the scores must be exactly equal to those of the sequential search.
"""

from __future__ import annotations

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.model_selection import GridSearchCV, GroupKFold

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.metrics import session_log_loss_scorer

TINY = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
COMMON = {
    "backbone": "sharedbottom",
    "backbone_params": TINY,
    "max_epochs": 2,
    "random_state": 0,
}
SEARCHES = {
    "mtl": (MTLClassifier(**COMMON), {"lr": [1e-3, 1e-2]}),
    "rmtl": (
        RMTLClassifier(
            **COMMON,
            critic=SessionCritic(hidden_dims=(4,), max_epochs=2),
            refit_max_epochs=1,
        ),
        {"q_lambda": [0.3, 0.7]},
    ),
}


@pytest.fixture(scope="module")
def data():
    d = make_sessions(n_sessions=40, random_state=0)
    return d.X, d.y, d.session_ids, d.timestamps


def search(name, data):
    """The docs' search: whole sessions per fold, routed session metadata."""
    estimator, grid = SEARCHES[name]
    X, Y, s, t = data
    gs = GridSearchCV(
        estimator,
        grid,
        cv=GroupKFold(n_splits=2),
        scoring=session_log_loss_scorer,
        n_jobs=2,
    )
    with sklearn.config_context(enable_metadata_routing=True):
        return gs.fit(X, Y, groups=s, session_ids=s, timestamps=t)


@pytest.fixture(scope="module")
def sequential(data):
    results = {}

    def get(name):
        if name not in results:
            with joblib.parallel_backend("sequential"):
                results[name] = search(name, data)
        return results[name]

    return get


def assert_same_search(got, expected):
    score_keys = [k for k in expected.cv_results_ if "test_score" in k]
    assert len(score_keys) == 5  # 2 splits, mean, std, rank
    for key in score_keys:
        np.testing.assert_array_equal(
            got.cv_results_[key], expected.cv_results_[key], err_msg=key
        )
    assert got.cv_results_["params"] == expected.cv_results_["params"]
    assert got.best_params_ == expected.best_params_
    assert got.best_index_ == expected.best_index_


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    # Worker processes, as on a real cluster: the estimator, the data, the
    # scorer and scikit-learn's routing setting are pickled to them.
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    from ray.util.joblib import register_ray

    # address="local" starts a new instance even if RAY_ADDRESS is set.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    register_ray()
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.parametrize("name", list(SEARCHES))
def test_dask_search_matches_sequential(dask_client, data, sequential, name):
    from distributed import get_task_stream

    with get_task_stream(dask_client) as stream, joblib.parallel_backend("dask"):
        got = search(name, data)
    assert_same_search(got, sequential(name))
    # The fits ran on the cluster's workers, not in this process.
    workers = set(dask_client.scheduler_info()["workers"])
    assert stream.data and {task["worker"] for task in stream.data} <= workers


def test_ray_search_matches_sequential(ray_local, data, sequential):
    # MTLClassifier only: every search on Ray starts its own pool of actor
    # processes, each importing torch (~5 s here); the RMTLClassifier search
    # is pickled and routed alike and is covered on Dask's worker processes.
    from ray.util.joblib.ray_backend import RayBackend

    with joblib.parallel_backend("ray"):
        assert isinstance(joblib.parallel.get_active_backend()[0], RayBackend)
        got = search("mtl", data)
    assert_same_search(got, sequential("mtl"))
