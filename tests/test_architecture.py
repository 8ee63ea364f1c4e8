"""The import direction written down in .importlinter holds (so `make test` checks it in CI).

The contracts: modelhub.ml imports no Django or app code; nothing the web process loads imports
TensorFlow, Keras or modelhub.ml when imported; apps import each other only through services,
selectors and models; apps depend downward only (no cycles). tests/import_contracts.py holds
the two contract types written for ModelHub.
"""

import subprocess

from tests.conftest import REPO_ROOT, VENV_BIN


def test_import_contracts_are_kept():
    result = subprocess.run(
        [str(VENV_BIN / "lint-imports"), "--no-cache", "--no-logo"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "4 kept" in result.stdout, result.stdout


def test_the_import_time_contract_sees_module_level_imports_only(tmp_path):
    """A worker function may import TensorFlow; a module-level import (or one in a class body) may not."""
    from tests.import_contracts import import_time_lines

    lines = import_time_lines("training.tasks")
    source = (REPO_ROOT / "training" / "tasks.py").read_text().splitlines()
    module_level = {number for number, text in enumerate(source, start=1) if text.startswith(("import ", "from "))}
    assert lines == frozenset(module_level)
    assert not any("training.runners" in source[number - 1] for number in lines)  # imported inside the task
    assert import_time_lines("keras") is None  # not ours: not scanned
