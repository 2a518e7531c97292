"""The README's example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs_as_written(capsys):
    text = README.read_text()
    section = text[text.index("## Example") :]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert code is not None, "the README's Example section has no Python block"
    namespace: dict = {}
    exec(compile(code.group(1), str(README), "exec"), namespace)
    auc, s_logloss, improved = capsys.readouterr().out.splitlines()
    assert namespace["proba"].shape == (len(namespace["X_te"]), 2)
    assert len(auc.strip("[]").split()) == len(s_logloss.strip("[]").split()) == 2
    assert improved in {"True", "False"}
