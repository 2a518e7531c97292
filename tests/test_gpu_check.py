"""benchmarks/gpu_check.py works before a GPU is at hand: its checks on CPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_gpu_checks_pass_on_the_cpu(gpu_check, capsys):
    checks = ["backbones", "rmtl", "files", "parquet", "distributed"]
    argv = ["--device", "cpu", "--precisions", "float32", "--checks", *checks]
    assert gpu_check.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("PASS") for line in lines) == len(checks)


def test_without_cuda_the_gpu_check_skips(gpu_check, capsys, monkeypatch):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert "no CUDA device here" in capsys.readouterr().out


def test_a_failing_check_fails_the_run(gpu_check, monkeypatch, capsys):
    def broken(device, precision):
        raise RuntimeError("a kernel failed")

    monkeypatch.setitem(gpu_check.CHECKS, "files", (broken, {"float32": 1.0}))
    argv = ["--device", "cpu", "--precisions", "float32", "--checks", "files"]
    assert gpu_check.main(argv) == 1
    assert "FAIL files" in capsys.readouterr().out
