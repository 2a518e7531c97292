"""The rmtl command line end to end on a tiny configuration."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import Bunch

from sklearn_rmtl import _experiments as ex
from sklearn_rmtl import datasets
from sklearn_rmtl._precision import native_bfloat16
from sklearn_rmtl.cli import main

#: Sizes every backbone takes, and the expert counts of MMoE / PLE.
SIZES = {"bottom_dims": [8], "tower_dims": [4]}
EXPERTS = {"n_experts": 2, "n_shared_experts": 1, "n_specific_experts": 1}
TINY = [
    "--dataset",
    "synthetic",
    "--n-sessions",
    "80",
    "--seeds",
    "2",
    "--max-epochs",
    "1",
    "--critic-max-epochs",
    "1",
    "--batch-size",
    "256",
    "--embedding-dim",
    "4",
    "--backbone-params",
    json.dumps(SIZES),
]
#: TINY for commands that run MMoE or PLE (the last --backbone-params wins).
TINY_EXPERTS = [*TINY, "--backbone-params", json.dumps({**SIZES, **EXPERTS})]


def test_experiments_retrain_where_validated(tmp_path, capsys):
    """--retrain-on-all defaults to the dataset's validated setting; D-PLE never."""
    argv = ["reproduce", *TINY_EXPERTS, "--backbones", "mmoe", "--seeds", "1"]
    assert main([*argv, "--retrain-on-all", "--output", str(tmp_path)]) == 0
    runs = json.loads((tmp_path / "reproduce/synthetic/runs.json").read_text())
    for r in runs:
        assert r["params"]["retrain_on_all"] is (r["method"] != "D-PLE"), r


def test_reproduce_end_to_end_and_resume(tmp_path, capsys):
    argv = ["reproduce", *TINY_EXPERTS, "--backbones", "mmoe"]
    argv += ["--output", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr()
    table = out.out
    methods = [
        "SingleTask",
        "SharedBottom",
        "ESMM",
        "MMoE",
        "PLE",
        "D-PLE",
        "RMTL-MMoE",
    ]
    for m in methods:
        assert f"| {m} |" in table
    for column in ("AUC", "Logloss", "s-Logloss"):
        assert f"click {column}" in table and f"purchase {column}" in table
    assert "[14/14]" in out.err and "left" in out.err  # progress with an estimate
    folder = tmp_path / "reproduce" / "synthetic"
    results = pd.read_csv(folder / "results.csv")
    assert set(results["method"]) == set(methods)
    assert (results["n_seeds"] == 2).all()
    runs = json.loads((folder / "runs.json").read_text())
    assert len(runs) == 14 and {r["seed"] for r in runs} == {0, 1}
    assert all("fit_seconds" in r and "params" in r for r in runs)
    # The experiments' defaults: bfloat16 where it is native, and not
    # retrained on all rows on synthetic data (only where validated).
    native = native_bfloat16("cpu")
    for r in runs:
        assert r["params"]["retrain_on_all"] is False
        assert r["params"]["precision"] == ("bfloat16" if native else "float32")
    assert (folder / "results.md").read_text().startswith("# Table 1 on synthetic")
    # A re-run skips the finished runs and gives the same table.
    assert main(argv) == 0
    again = capsys.readouterr()
    assert again.err.count("skipped (done before)") == 14
    assert again.out == table


# "fixed" is the baseline itself: two more baselines.
BALANCED = ["--task-balancing", "dwa", "fixed", "pcgrad"]


@pytest.mark.parametrize(
    ("command", "rows"),
    [
        (["ablation", "--backbone", "sharedbottom"], 5),
        (["ablation", "--backbone", "sharedbottom", *BALANCED], 7),
        (["transfer", "--backbones", "sharedbottom", "esmm"], 2 + 4),
    ],
)
def test_ablation_and_transfer(tmp_path, capsys, command, rows):
    assert main([*command, *TINY, "--seeds", "1", "--output", str(tmp_path)]) == 0
    results = pd.read_csv(next(tmp_path.glob("*/synthetic/results.csv")))
    assert results["method"].nunique() == rows


def _record(method, kind, seed, auc):
    scores = {"AUC": auc, "Logloss": 1 - auc, "s-Logloss": 1 - auc}
    return {"method": method, "kind": kind, "seed": seed, "scores": {"click": scores}}


def test_t_test_marks_only_significant_improvements():
    rng = np.random.default_rng(0)
    results = []
    for seed in range(5):
        noise = rng.normal(0, 0.001)
        results += [
            _record("PLE", "baseline", seed, 0.70 + noise),
            _record("MMoE", "baseline", seed, 0.69 + noise),
            _record("RMTL-PLE", "rmtl", seed, 0.72 + noise + rng.normal(0, 0.001)),
            _record("RMTL-tie", "rmtl", seed, 0.70 + rng.normal(0, 0.001)),
            _record("RMTL-worse", "rmtl", seed, 0.60 + rng.normal(0, 0.001)),
        ]
    methods = ["PLE", "MMoE", "RMTL-PLE", "RMTL-tie", "RMTL-worse"]
    summary = ex.summarise(results, methods).set_index(["method", "metric"])
    assert summary.loc[("RMTL-PLE", "AUC"), "better"]
    assert summary.loc[("RMTL-PLE", "Logloss"), "better"]  # lower is better
    assert summary.loc[("RMTL-PLE", "AUC"), "best_baseline"] == "PLE"
    assert summary.loc[("RMTL-PLE", "AUC"), "p_value"] < 0.05
    assert not summary.loc[("RMTL-tie", "AUC"), "better"]
    assert not summary.loc[("RMTL-worse", "AUC"), "better"]  # significant, but worse
    assert np.isnan(summary.loc[("PLE", "AUC"), "p_value"])
    table = ex.markdown_table(summary.reset_index(), methods)
    assert table.count("*") == 3  # RMTL-PLE in AUC, Logloss and s-Logloss


STUDY_METHODS = [
    "SharedBottom",
    "RMTL-SharedBottom",
    "SharedBottom constant refit",
    "SharedBottom label-mean refit",
]


def test_study_end_to_end_and_resume(tmp_path, capsys):
    argv = ["study", *TINY, "--backbones", "sharedbottom", "--output", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "[8/8]" in out.err
    for heading in ("## Scores", "## Paired differences"):
        assert heading in out.out
    for comparison in ("RMTL - backbone", "RMTL - constant", "RMTL - label_mean"):
        assert f"| SharedBottom | {comparison} |" in out.out
        assert f"SharedBottom, {comparison}: RMTL is significantly" in out.out
    folder = tmp_path / "study" / "synthetic"
    scores = pd.read_csv(folder / "results.csv")
    assert list(scores["method"].unique()) == STUDY_METHODS
    assert {"mean", "std", "n_seeds"} <= set(scores.columns)
    assert (scores["n_seeds"] == 2).all()
    diffs = pd.read_csv(folder / "differences.csv")
    assert len(diffs) == 3 * 2 * 3  # comparisons x tasks x metrics
    for column in ("mean_diff", "std_diff", "p_value", "wins", "wins_label"):
        assert column in diffs.columns
    assert diffs["wins_label"].str.fullmatch(r"[0-2]/2").all()
    assert (folder / "results.md").read_text().startswith("# Paired study")
    runs = json.loads((folder / "runs.json").read_text())
    assert len(runs) == 8 and {r["evaluate_on"] for r in runs} == {"test"}
    by_variant = {(r["variant"], r["seed"]): r for r in runs}
    assert by_variant[("label_mean", 0)]["params"]["weighting"] == "label_mean"
    assert by_variant[("constant", 1)]["params"]["weighting"] == "constant"
    # A re-run skips the finished runs and prints the same tables.
    assert main(argv) == 0
    again = capsys.readouterr()
    assert again.err.count("skipped (done before)") == 8
    assert again.out == out.out


def test_study_on_validation_part_with_refit_flags(tmp_path, capsys):
    argv = ["study", *TINY, "--seeds", "1", "--backbones", "sharedbottom"]
    argv += ["--evaluate-on", "valid", "--q-lambda", "0.5", "--output", str(tmp_path)]
    argv += ["--gamma", "0.25", "--critic-lr", "0.002"]
    argv += ["--critic-params", '{"cv": 2, "hidden_dims": [8]}']
    assert main(argv) == 0
    runs = json.loads(
        (tmp_path / "study-valid" / "synthetic" / "runs.json").read_text()
    )
    assert {r["evaluate_on"] for r in runs} == {"valid"}
    rmtl = [r for r in runs if r["kind"] != "baseline"]
    assert rmtl and all(r["params"]["q_lambda"] == 0.5 for r in rmtl)
    assert all(r["params"]["critic__gamma"] == 0.25 for r in rmtl)
    assert all(r["params"]["critic__lr"] == 0.002 for r in rmtl)
    assert all(r["params"]["critic__cv"] == 2 for r in rmtl)
    assert all(r["params"]["critic__hidden_dims"] == "(8,)" for r in rmtl)
    assert "scored on valid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seeds", "0"], "must be in [1, inf)"),
        (["--max-epochs", "two"], "expected an integer"),
        (["--validation-interval", "1.5"], "must be in (0, 1]"),
        (["--refit-lr", "0"], "must be in (0, inf)"),
        (["--evaluate-on", "train"], "invalid choice"),
        (["--device", "gpu0"], "expected auto, cpu or a CUDA device"),
        (["--validation-metric", "f1"], "or e.g. auc:<task> for one task"),
        (["--precision", "float8"], "invalid choice"),
        (["--gamma", "1.5"], "must be in [0, 1]"),
        (["--critic-params", "[5]"], "expected a JSON object"),
        (["--critic-params", '{"folds": 5}'], "['folds'] are no SessionCritic"),
        (
            ["--gamma", "0.5", "--critic-params", '{"gamma": 0.3}'],
            "['gamma'] are set by their own flags",
        ),
    ],
)
def test_study_flag_errors(capsys, flags, message):
    with pytest.raises(SystemExit):
        main(["study", *flags])
    assert message in capsys.readouterr().err


def test_validation_metric_help_lists_the_selectable_metrics(capsys):
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    # argparse may wrap the help between any two words.
    text = " ".join(capsys.readouterr().out.split())
    assert "by: loss, auc or gauc over all tasks" in text


def test_device_flag_takes_the_devices_the_library_trains_on(capsys):
    from sklearn_rmtl.cli import _device

    devices = ("auto", "cpu", "cuda", "cuda:1")
    assert [_device(d) for d in devices] == list(devices)
    for wrong in ("mps", "gpu", "cuda:x", "cpu:0:1"):
        with pytest.raises(SystemExit):
            main(["study", "--device", wrong])
        err = capsys.readouterr().err
        assert f"got {wrong!r}" in err and "CUDA" in err


def test_version(capsys):
    from sklearn_rmtl import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"rmtl {__version__}"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ("{bottom_dims: 8}", "not valid JSON"),
        # n_expert (typo of n_experts) configures no backbone of the command.
        ('{"n_expert": 2}', "['n_expert'] configure none of the backbones"),
        # MMoE's key, but ablation runs SharedBottom only.
        ('{"n_experts": 2}', "valid keys are ['attention_dims', 'batch_norm'"),
    ],
)
def test_backbone_params_errors(tmp_path, capsys, params, message):
    argv = ["ablation", "--backbone", "sharedbottom", "--backbone-params", params]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--output", str(tmp_path)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # stopped before any training


def test_runs_are_redone_when_the_data_changes(tmp_path, capsys):
    argv = ["ablation", *TINY, "--seeds", "1", "--backbone", "sharedbottom"]
    argv += ["--output", str(tmp_path)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--n-sessions", "90"]) == 0
    assert "skipped (done before)" not in capsys.readouterr().err
    runs = [json.loads(x) for x in next(tmp_path.glob("*/*/runs.jsonl")).open()]
    assert len(runs) == 10 and len({r["data"] for r in runs}) == 2
    # The same data again reuses every run.
    assert main([*argv, "--n-sessions", "90"]) == 0
    assert capsys.readouterr().err.count("skipped (done before)") == 5


def test_run_log_drops_a_cut_last_line_and_rejects_a_broken_one(tmp_path):
    path = tmp_path / "runs.jsonl"
    records = [{"method": "a", "seed": 0}, {"method": "b", "seed": 0}]
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + '{"method": "c", "se')  # interrupted while writing
    with pytest.warns(UserWarning, match=r"runs\.jsonl: the last line .* redone"):
        log = ex.RunLog(path)
    assert log.runs == records
    assert log.find({"method": "c"}) is None
    log.add({"method": "c", "seed": 0})
    assert [json.loads(x)["method"] for x in path.open()] == ["a", "b", "c"]
    path.write_text('{"method": "a"}\nnot json\n{"method": "b"}\n')
    with pytest.raises(ValueError, match=r"runs\.jsonl, line 2: not a run record"):
        ex.RunLog(path)


def test_history_is_refused_where_the_rows_have_no_items(tmp_path, capsys):
    from sklearn_rmtl.cli import _parser

    for command in ("reproduce", "ablation", "transfer", "study"):
        assert _parser().parse_args([command]).history is None  # off by default
        assert _parser().parse_args([command, "--history", "7"]).history == 7
    argv = ["ablation", "--dataset", "synthetic", "--history", "5"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--output", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--dataset synthetic has no item history" in err
    assert "kuairand, retailrocket, taobao" in err
    assert not any(tmp_path.iterdir())  # stopped before any training


def test_history_reaches_every_model_and_keys_its_runs_apart(
    tmp_path, capsys, monkeypatch
):
    """--history N: the baseline and the RMTL run both read the item history
    (through the encoder), and runs with and without it are other runs."""
    load, loaded = datasets.load_retailrocket, {}

    def first_rows(**kwargs):
        # The bundled sample's first 3000 rows keep the test fast; loaded
        # once per setting.
        key = json.dumps(kwargs, sort_keys=True, default=str)
        if key not in loaded:
            data = load(**kwargs)
            head = {k: data[k][:3000] for k in ("session_ids", "timestamps")}
            loaded[key] = Bunch(X=data.X.iloc[:3000], y=data.y.iloc[:3000], **head)
        return loaded[key]

    fitted, evaluate = [], ex.evaluate

    def recording(estimator, split):
        fitted.append(estimator)
        return evaluate(estimator, split)

    monkeypatch.setattr(datasets, "load_retailrocket", first_rows)
    monkeypatch.setattr(ex, "evaluate", recording)
    # TINY's sizes, on RetailRocket's first rows.
    argv = ["study", *TINY[4:], "--dataset", "retailrocket", "--seeds", "1"]
    argv += ["--backbones", "sharedbottom", "--variants", "backbone", "rmtl"]
    argv += ["--no-retrain-on-all", "--output", str(tmp_path)]
    assert main([*argv, "--history", "3"]) == 0
    assert "each user's last 3 earlier items" in capsys.readouterr().out
    assert [type(e).__name__ for e in fitted] == ["MTLClassifier", "RMTLClassifier"]
    for estimator in fitted:
        encoder = estimator.encoder_
        assert list(encoder.sequence_features_) == ["itemid_history"]
        assert list(encoder.sequence_vocabularies_) == ["itemid"]  # shared
        assert encoder.max_sequence_length == 3
    fitted.clear()
    assert main(argv) == 0
    assert "skipped (done before)" not in capsys.readouterr().err
    assert all(len(e.encoder_.sequence_features_) == 0 for e in fitted)
    log = (tmp_path / "study/retailrocket/runs.jsonl").read_text()
    runs = [json.loads(line) for line in log.splitlines()]
    assert len(runs) == 4 and len({r["settings"] for r in runs}) == 2
    assert [r["params"]["max_sequence_length"] for r in runs] == [3, 3, 50, 50]
    # Each setting resumes its own runs.
    for history in (["--history", "3"], []):
        assert main([*argv, *history]) == 0
        assert capsys.readouterr().err.count("skipped (done before)") == 2
    # Another length is another setting too, whatever the data.
    settings = [ex.history_params("retailrocket", n) for n in (3, 4)]
    keys = {ex.Settings(rmtl_params=p).key() for p in [{}, *settings]}
    assert len(keys) == 3


# ------------------------------------------------------- rmtl fit / predict
TINY_FIT = ["--max-epochs", "1", "--batch-size", "64", "--backbone", "sharedbottom"]
TINY_FIT += [
    "--backbone-params",
    '{"bottom_dims": [8], "tower_dims": [4], "embedding_dim": 4}',
]


@pytest.fixture
def log_file(tmp_path):
    """A session log as a user would have it: ids as text, times as dates."""
    from sklearn_rmtl.datasets import make_sessions

    data = make_sessions(n_sessions=40, random_state=0)
    frame = data.X.copy()
    frame[["click", "purchase"]] = data.y.to_numpy()
    frame["session"] = data.session_ids
    frame["time"] = pd.to_datetime(data.timestamps, unit="s")
    frame["row_id"] = np.arange(len(frame))
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    return path, frame


@pytest.mark.filterwarnings("ignore:precision='float16' on device")
@pytest.mark.parametrize(
    ("method", "precision"), [("rmtl", "bfloat16"), ("mtl", "float16")]
)
def test_fit_then_predict_a_users_csv(tmp_path, capsys, log_file, method, precision):
    from sklearn_rmtl.persistence import load

    path, frame = log_file
    model, out = tmp_path / "model.rmtl", tmp_path / "pred.csv.gz"
    argv = ["fit", "--data", str(path), "--target", "click", "purchase"]
    argv += ["--session", "session", "--time", "time", "--method", method]
    argv += ["--categorical", "position", "--features"]
    argv += ["cat_0", "cat_1", "cat_2", "num_0", "num_1", "position"]
    argv += ["--precision", precision, "--validation-metric", "auc:purchase"]
    assert main([*argv, *TINY_FIT, "--model", str(model)]) == 0
    assert "saved to" in capsys.readouterr().err
    estimator = load(model)
    assert estimator.precision == precision
    assert estimator.validation_metric == "auc:purchase"
    assert type(estimator).__name__ == (
        "RMTLClassifier" if method == "rmtl" else "MTLClassifier"
    )
    assert list(estimator.task_names_) == ["click", "purchase"]
    # The integer column joins the text columns as a category.
    assert estimator.categorical_features == ["cat_0", "cat_1", "cat_2", "position"]
    predict = ["predict", "--model", str(model), "--data", str(path)]
    assert main([*predict, "--output", str(out), "--keep", "row_id"]) == 0
    pred = pd.read_csv(out)
    assert list(pred.columns) == ["row_id", "click_proba", "purchase_proba"]
    np.testing.assert_array_equal(pred["row_id"], frame["row_id"])
    expected = estimator.predict_proba(
        pd.read_csv(path)[list(estimator.feature_names_in_)]
    )
    np.testing.assert_allclose(
        pred[["click_proba", "purchase_proba"]], expected, rtol=1e-6
    )


def test_fit_summary_says_when_the_refit_kept_the_pretrained_weights(
    tmp_path, capsys, log_file
):
    from sklearn_rmtl.persistence import load

    path, _ = log_file
    model = tmp_path / "model.rmtl"
    argv = ["fit", "--data", str(path), "--target", "click", "purchase"]
    argv += ["--session", "session", "--time", "time", "--method", "rmtl"]
    # A refit rate far too large: no refit check beats the pretrained weights.
    argv += ["--refit-lr", "5", *TINY_FIT, "--model", str(model)]
    assert main(argv) == 0
    assert load(model).refit_improved_ is False
    assert "the refit kept the pretrained weights" in capsys.readouterr().err


def test_fit_with_sample_weight_and_missing_labels(tmp_path, log_file):
    from sklearn_rmtl.persistence import load

    path, frame = log_file
    frame = frame.assign(weight=np.where(frame["row_id"] % 3 == 0, 0.0, 2.0))
    frame.loc[frame["click"] == 0, "purchase"] = np.nan  # an empty CSV cell
    frame.drop(columns="row_id").to_csv(path, index=False)
    argv = ["fit", "--data", str(path), "--target", "click", "purchase"]
    argv += ["--session", "session", "--time", "time", "--method", "mtl"]
    argv += ["--features", "cat_0", "cat_1", "cat_2", "num_0", "num_1"]
    proba = []
    for extra in ([], ["--sample-weight", "weight"]):
        model = tmp_path / f"model{len(extra)}.rmtl"
        assert main([*argv, *TINY_FIT, *extra, "--model", str(model)]) == 0
        estimator = load(model)
        proba.append(estimator.predict_proba(frame[estimator.feature_names_in_]))
    assert np.abs(proba[0] - proba[1]).max() > 1e-4


def test_fit_and_predict_errors_name_the_file_and_column(tmp_path, capsys, log_file):
    path, frame = log_file
    model = tmp_path / "model.rmtl"
    fit = ["fit", "--data", str(path), "--model", str(model), *TINY_FIT]
    cases = [
        (
            [*fit, "--target", "clik"],
            "has no --target column(s) ['clik']; its columns are: cat_0",
        ),
        (
            [*fit, "--target", "click", "--time", "when"],
            "no --session/--time/--sample-weight column(s) ['when']",
        ),
        (
            ["fit", "--data", str(tmp_path / "x.csv"), "--target", "a", "--model", "m"],
            "x.csv: no such file",
        ),
        (
            [
                "fit",
                "--data",
                str(tmp_path / "x.xlsx"),
                "--target",
                "a",
                "--model",
                "m",
            ],
            "unknown file type",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not model.exists()
    with pytest.raises(SystemExit):
        main([*fit, "--target", "click", "--method", "mtl", "--refit-lr", "0.1"])
    assert "only --method rmtl uses --refit-lr" in capsys.readouterr().err
    main([*fit, "--target", "click", "purchase", "--method", "mtl"])
    frame.drop(columns="num_1").to_csv(tmp_path / "new.csv", index=False)
    predict = ["predict", "--model", str(model), "--data", str(tmp_path / "new.csv")]
    assert main([*predict, "--output", str(tmp_path / "p.csv")]) == 2
    assert "has no feature column(s) ['num_1']" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_predict_writes_parquet(tmp_path, log_file):
    pytest.importorskip("pyarrow")
    _, frame = log_file
    model, parquet = tmp_path / "m.rmtl", tmp_path / "log.parquet"
    frame.to_parquet(parquet)
    argv = ["fit", "--data", str(parquet), "--target", "click", "purchase"]
    assert main([*argv, "--method", "mtl", *TINY_FIT, "--model", str(model)]) == 0
    out = tmp_path / "pred.parquet"
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--data",
                str(parquet),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert pd.read_parquet(out).shape == (len(frame), 2)


def test_export_a_fitted_model_to_onnx_and_torch(tmp_path, capsys, log_file):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sklearn_rmtl.export import onnx_inputs
    from sklearn_rmtl.persistence import load

    path, frame = log_file
    model = tmp_path / "m.rmtl"
    argv = ["fit", "--data", str(path), "--target", "click", "purchase"]
    assert main([*argv, "--method", "mtl", *TINY_FIT, "--model", str(model)]) == 0
    onnx_file, torch_file = tmp_path / "m.onnx", tmp_path / "m.pt2"
    argv = ["export", "--model", str(model), "--onnx", str(onnx_file)]
    assert main([*argv, "--torch", str(torch_file)]) == 0
    assert torch_file.stat().st_size > 0
    estimator = load(model)
    X = frame[list(estimator.feature_names_in_)]
    served = ort.InferenceSession(str(onnx_file)).run(None, onnx_inputs(estimator, X))
    np.testing.assert_allclose(served[0], estimator.predict_proba(X), atol=1e-5)
    with pytest.raises(SystemExit):
        main(["export", "--model", str(model)])
    assert "give --onnx FILE, --torch FILE or both" in capsys.readouterr().err


# ------------------------------------------- rmtl fit / predict on Parquet
TINY_NET = {"bottom_dims": (8,), "tower_dims": (4,), "embedding_dim": 4}


def _parquet_log(tmp_path, frame, name="log.parquet", row_group_size=None):
    """``frame`` as a Parquet file, with a stored index (not a column)."""
    pytest.importorskip("pyarrow")
    path = tmp_path / name
    # A non-default index is stored as a column ('__index_level_0__'), which
    # pandas reads back as the index: it must not become a feature.
    frame.set_axis(frame.index * 2).to_parquet(path, row_group_size=row_group_size)
    return path


@pytest.mark.parametrize("method", ["mtl", "rmtl"])
def test_fit_parquet_streams_as_the_in_memory_fit(tmp_path, capsys, log_file, method):
    """One block (--block-rows >= rows): the in-memory fit's model, row for row."""
    from sklearn_rmtl import MTLClassifier, RMTLClassifier
    from sklearn_rmtl.persistence import load

    _, frame = log_file
    path = _parquet_log(tmp_path, frame, row_group_size=100)
    model = tmp_path / "model.rmtl"
    argv = ["fit", "--data", str(path), "--target", "click", "purchase"]
    argv += ["--session", "session", "--time", "time", "--method", method]
    argv += ["--categorical", "position", "--block-rows", str(len(frame))]
    assert main([*argv, *TINY_FIT, "--model", str(model)]) == 0
    err = capsys.readouterr().err
    assert f"{len(frame)} rows of {path} (streamed, {len(frame)} rows at a time" in err
    streamed = load(model)
    # Today's in-memory fit: the whole file read by pandas, fitted at once.
    memory = pd.read_parquet(path)
    features = [c for c in memory.columns if c not in {"click", "purchase"}]
    features = [c for c in features if c not in {"session", "time"}]
    assert list(streamed.feature_names_in_) == features  # no stored index
    cls = RMTLClassifier if method == "rmtl" else MTLClassifier
    reference = cls(
        backbone="sharedbottom",
        backbone_params=TINY_NET,
        max_epochs=1,
        batch_size=64,
        categorical_features=streamed.categorical_features,
        random_state=0,
    ).fit(
        memory[features],
        memory[["click", "purchase"]],
        session_ids=memory["session"],
        timestamps=memory["time"],
    )
    assert streamed.categorical_features == ["cat_0", "cat_1", "cat_2", "position"]
    assert streamed.history_.keys() == reference.history_.keys()
    np.testing.assert_allclose(
        streamed.predict_proba(memory[features]),
        reference.predict_proba(memory[features]),
        rtol=1e-5,
        atol=1e-7,
    )


def test_predict_streams_a_parquet_file(tmp_path, capsys, log_file):
    """Block by block, several blocks: the rows and values of an in-memory run."""
    from sklearn_rmtl.persistence import load

    _, frame = log_file
    path = _parquet_log(tmp_path, frame, row_group_size=50)
    model = tmp_path / "m.rmtl"
    argv = ["fit", "--data", str(path), "--target", "click", "purchase"]
    argv += ["--session", "session", "--time", "time", "--method", "rmtl"]
    argv += ["--block-rows", "120"]  # 3 blocks; the sessions' order checked
    assert main([*argv, *TINY_FIT, "--model", str(model)]) == 0
    estimator = load(model)
    X = pd.read_parquet(path)[list(estimator.feature_names_in_)]
    expected = estimator.predict_proba(X)
    predict = ["predict", "--model", str(model), "--data", str(path)]
    predict += ["--keep", "row_id", "time", "--block-rows", "100"]
    for name in ("pred.parquet", "pred.csv.gz"):
        out = tmp_path / name
        assert main([*predict, "--output", str(out)]) == 0
        assert f"wrote {len(frame)} rows to {out}" in capsys.readouterr().err
        pred = pd.read_parquet(out) if name.endswith(".parquet") else pd.read_csv(out)
        columns = ["row_id", "time", "click_proba", "purchase_proba"]
        assert list(pred.columns) == columns
        np.testing.assert_array_equal(pred["row_id"], frame["row_id"])
        np.testing.assert_allclose(
            pred[["click_proba", "purchase_proba"]], expected, rtol=1e-6
        )
    # The Parquet output: one row group per block, the --keep columns' types.
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "pred.parquet").num_row_groups == 3
    assert pd.read_parquet(tmp_path / "pred.parquet")["time"].equals(frame["time"])
    assert not list(tmp_path.glob(".tmp-*"))  # written under a temporary name


def test_block_rows_is_for_parquet_files(tmp_path, capsys, log_file):
    path, _ = log_file
    argv = ["fit", "--data", str(path), "--target", "click", "--block-rows", "10"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--model", str(tmp_path / "m.rmtl")])
    assert exc.value.code == 2
    assert f"--block-rows: {path} is a CSV/TSV file, which is read whole" in (
        capsys.readouterr().err
    )
    argv = ["predict", "--model", "m.rmtl", "--data", str(path), "--output", "p.csv"]
    with pytest.raises(SystemExit):
        main([*argv, "--block-rows", "10"])
    assert "only a Parquet file is read in blocks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--block-rows", "0"])
    assert "must be in [1, inf)" in capsys.readouterr().err


def test_fit_parquet_errors_read_as_for_csv(tmp_path, capsys, log_file):
    """Missing columns, an empty file, unsorted sessions: a one-line message."""
    _, frame = log_file
    path = _parquet_log(tmp_path, frame)
    model = tmp_path / "model.rmtl"
    fit = ["fit", "--data", str(path), "--model", str(model), *TINY_FIT]
    empty = _parquet_log(tmp_path, frame.iloc[:0], name="empty.parquet")
    # RMTL reads whole sessions: the rows must be sorted by session, then time.
    shuffled = _parquet_log(tmp_path, frame.sample(frac=1, random_state=0), "s.pq")
    sessions = ["--session", "session", "--time", "time", "--data", str(shuffled)]
    cases = [
        (
            [*fit, "--target", "clik"],
            "has no --target column(s) ['clik']; its columns are: cat_0",
        ),
        (
            [*fit, "--target", "click", "--time", "when"],
            "no --session/--time/--sample-weight column(s) ['when']",
        ),
        (
            [*fit, "--target", "click", "--features", "__index_level_0__"],
            "has no --features column(s) ['__index_level_0__']",
        ),
        ([*fit, "--target", "click", "--data", str(empty)], "the file has no rows"),
        (
            [*fit, "--target", "click", "--data", str(tmp_path / "x.parquet")],
            "x.parquet: no such file",
        ),
        (
            [*fit, "--target", "click", *sessions],
            "must be sorted by (session, time)",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        last = capsys.readouterr().err.splitlines()[-1]  # after "fitting ..."
        assert last.startswith("rmtl fit: error: ") and message in last
        if "sorted" in message:  # and it says how to sort
            assert "sort_by([('session', 'ascending'), ('time', 'ascending')])" in last
    assert not model.exists()


# ------------------------------------ rmtl predict / export: robust I/O
def _zip_frame(n=240, seed=0):
    """Zip codes as text (one not digit-like) and integer shops, as in a log."""
    rng = np.random.default_rng(seed)
    zips = np.array(["02139", "02140", "10001", "SW1A"])
    frame = pd.DataFrame(
        {
            "zip": zips[rng.integers(0, 4, n)],
            "shop": rng.integers(0, 5, n),
            "price": rng.normal(size=n),
        }
    )
    frame["click"] = ((frame["zip"] == "02139") | (rng.random(n) < 0.2)).astype(int)
    return frame


@pytest.fixture
def zip_model(tmp_path):
    """A model fitted by 'rmtl fit' on a CSV file of text zips and int shops."""
    data, model = tmp_path / "fit.csv", tmp_path / "model.rmtl"
    _zip_frame().to_csv(data, index=False)
    argv = ["fit", "--data", str(data), "--target", "click", "--method", "mtl"]
    argv += ["--categorical", "shop", *TINY_FIT, "--model", str(model)]
    assert main(argv) == 0
    return data, model


def test_predict_reads_csv_columns_as_the_model_learnt_them(tmp_path, zip_model):
    data, model = zip_model
    fit_rows = pd.read_csv(data)
    # Only digit-like zips (pandas would read 2139), and one unseen shop
    # given as text (pandas would read every shop as text).
    rows = fit_rows[fit_rows["zip"] != "SW1A"].reset_index(drop=True)
    new = rows.astype({"shop": object})
    new.loc[0, "shop"] = "new"
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "pred.csv"
    argv = ["predict", "--model", str(model), "--data", str(tmp_path / "new.csv")]
    assert main([*argv, "--output", str(out), "--keep", "zip"]) == 0
    pred = pd.read_csv(out, dtype={"zip": str})
    assert list(pred["zip"]) == list(rows["zip"])  # copied as written
    from sklearn_rmtl.persistence import load

    expected = load(model).predict_proba(rows[["zip", "shop", "price"]])
    np.testing.assert_allclose(pred["click_proba"][1:], expected[1:, 0], rtol=1e-6)


def test_predict_refuses_to_keep_a_column_named_as_an_output(
    tmp_path, capsys, zip_model
):
    data, model = zip_model
    out = tmp_path / "pred.csv"
    pd.read_csv(data).assign(click_proba=0.5).to_csv(tmp_path / "p.csv", index=False)
    argv = ["predict", "--model", str(model), "--data", str(tmp_path / "p.csv")]
    assert main([*argv, "--output", str(out), "--keep", "click_proba"]) == 2
    err = capsys.readouterr().err
    assert "--keep ['click_proba']: the output's probability columns" in err
    assert not out.exists()


def test_paths_are_checked_before_any_work(tmp_path, capsys, zip_model, monkeypatch):
    data, model = zip_model
    capsys.readouterr()
    missing = tmp_path / "nowhere" / "out.csv"
    fit = ["fit", "--data", str(data), "--target", "click", *TINY_FIT]
    predict = ["predict", "--data", str(data)]
    cases = [
        ([*fit, "--model", str(missing)], f"the folder {missing.parent} does not"),
        ([*fit, "--model", str(tmp_path)], f"--model {tmp_path} is a folder"),
        (
            [*predict, "--model", str(tmp_path), "--output", str(tmp_path / "p.csv")],
            f"--model {tmp_path} is a folder; give the file in it",
        ),
        (
            [*predict, "--model", str(model), "--output", str(missing)],
            "does not exist; create it first",
        ),
        (
            [*predict, "--model", str(model), "--output", str(tmp_path / "p.xlsx")],
            "unknown file type",
        ),
        (
            ["export", "--model", str(model), "--onnx", str(missing)],
            "--onnx",
        ),
        (
            ["export", "--model", str(tmp_path), "--torch", str(tmp_path / "m.pt2")],
            "is a folder",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rmtl {argv[0]}: error: ") and message in err, err
        assert len(err.splitlines()) == 1  # no "fitting ...", no traceback
    # A folder that takes no new files (as root, os.access is the test).
    monkeypatch.setattr("os.access", lambda *args, **kwargs: False)
    assert main([*predict, "--model", str(model), "--output", str(missing.name)]) == 2
    assert "is not writable" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "export"])
def test_writers_failing_mid_way_keep_the_earlier_output(
    tmp_path, zip_model, monkeypatch, command
):
    import sklearn_rmtl.export

    data, model = zip_model
    out = tmp_path / "out" / ("pred.csv" if command == "predict" else "m.pt2")
    out.parent.mkdir()
    out.write_bytes(b"an earlier complete output")

    def failing(*args, **kwargs):
        path = args[-1] if command == "export" else args[1]
        Path(path).write_bytes(b"half")
        raise RuntimeError("disk full")

    if command == "predict":
        monkeypatch.setattr(pd.DataFrame, "to_csv", failing)
        argv = ["predict", "--model", str(model), "--data", str(data)]
        argv += ["--output", str(out)]
    else:
        monkeypatch.setattr(sklearn_rmtl.export, "to_torch", failing)
        argv = ["export", "--model", str(model), "--torch", str(out)]
    with pytest.raises(RuntimeError, match="disk full"):
        main(argv)
    assert out.read_bytes() == b"an earlier complete output"
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_fit_parquet_keeps_pandas_integer_categories(tmp_path):
    """--categorical adds to the columns a Parquet file's pandas metadata names."""
    from sklearn_rmtl.persistence import load

    data, model = tmp_path / "log.parquet", tmp_path / "m.rmtl"
    _zip_frame().astype({"shop": "category"}).to_parquet(data)
    argv = ["fit", "--data", str(data), "--target", "click", "--method", "mtl"]
    assert main([*argv, "--categorical", "zip", *TINY_FIT, "--model", str(model)]) == 0
    assert list(load(model).encoder_.categorical_features_) == ["zip", "shop"]


@pytest.mark.parametrize(
    "argv", [["--version"], ["--help"], ["fit", "--help"], ["study", "--help"]]
)
def test_version_and_help_load_neither_torch_nor_sklearn(argv):
    """``rmtl --version`` and every ``--help`` (the console script's entry
    point) answer without torch, scikit-learn or pandas: well under a second."""
    code = (
        "import sys\n"
        "import sklearn_rmtl\n"
        "from sklearn_rmtl.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = {'torch', 'sklearn', 'pandas'} & set(sys.modules)\n"
        "assert not heavy, f'{heavy} imported'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    if argv == ["--version"]:
        from sklearn_rmtl import __version__

        assert out.stdout.strip() == f"rmtl {__version__}"
    else:
        assert out.stdout.startswith("usage: rmtl")


def test_vocabularies_the_parser_lists_are_the_registries():
    """The torch-free names the parser offers are the registries' keys."""
    from sklearn_rmtl import _experiments, _vocabulary
    from sklearn_rmtl._precision import PRECISIONS
    from sklearn_rmtl._training import SELECTIONS
    from sklearn_rmtl.backbones import BACKBONES
    from sklearn_rmtl.balancing import BALANCINGS
    from sklearn_rmtl.parquet import ParquetSource

    assert tuple(BACKBONES) == _vocabulary.BACKBONE_NAMES
    assert tuple(BALANCINGS) == _vocabulary.BALANCING_NAMES
    assert tuple(PRECISIONS) == _vocabulary.PRECISION_NAMES
    assert tuple(SELECTIONS) == _vocabulary.SELECTION_NAMES
    assert tuple(_experiments.STUDY_VARIANTS) == _vocabulary.STUDY_VARIANT_NAMES
    assert tuple(_experiments.EVALUATE_ON) == _vocabulary.EVALUATE_ON_NAMES
    assert set(_vocabulary.STUDY_DEFAULT) <= set(_experiments.STUDY_VARIANTS)
    for name in _vocabulary.DATASET_NAMES:  # each has its loader
        assert name == "synthetic" or hasattr(_experiments.datasets, f"load_{name}")
    block_rows = inspect.signature(ParquetSource).parameters["block_rows"].default
    assert block_rows == _vocabulary.BLOCK_ROWS


def test_fit_hashes_ids_and_reads_parquet_list_columns_as_sequences(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    from sklearn_rmtl.persistence import load

    frame = _zip_frame()
    rng = np.random.default_rng(1)
    frame["seen_shops"] = [
        list(rng.integers(0, 5, rng.integers(0, 4))) for _ in frame.index
    ]
    data, model, out = (
        tmp_path / "log.parquet",
        tmp_path / "m.rmtl",
        tmp_path / "p.parquet",
    )
    frame.to_parquet(data)
    argv = ["fit", "--data", str(data), "--target", "click", "--method", "mtl"]
    argv += ["--categorical", "shop", "--hash", "zip=16"]
    argv += ["--sequence", "seen_shops=shop", *TINY_FIT, "--model", str(model)]
    assert main(argv) == 0
    fitted = load(model)
    assert fitted.hash_buckets == {"zip": 16}
    assert fitted.encoder_.sequence_vocabularies_.tolist() == ["shop"]
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--data",
                str(data),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    features = frame.drop(columns="click")
    np.testing.assert_allclose(
        pd.read_parquet(out)["click_proba"],
        fitted.predict_proba(features)[:, 0],
        atol=1e-6,
    )
    csv = tmp_path / "log.csv"
    frame.to_csv(csv, index=False)
    argv = ["fit", "--data", str(csv), "--target", "click", "--sequence", "seen_shops="]
    with pytest.raises(SystemExit):
        main([*argv, "--model", str(model)])
    assert (
        "cannot hold lists; store the sequence columns as Parquet"
        in capsys.readouterr().err
    )
    fit = ["fit", "--data", str(data), "--target", "click", "--model", str(model)]
    for flag, value, message in (
        ("--hash", "zip=0", "expected COLUMN=N with N >= 1"),
        ("--sequence", "=shop", "expected COLUMN=VOCABULARY"),
    ):
        with pytest.raises(SystemExit):
            main([*fit, flag, value])
        assert message in capsys.readouterr().err
    assert main([*fit, "--hash", "nope=4"]) == 2
    assert "has no --hash column(s) ['nope']" in capsys.readouterr().err
