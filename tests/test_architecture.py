"""The import direction written down in .importlinter holds (so `make test` checks it in CI).

The contracts: modelhub.ml imports no Django or app code; nothing the web process loads imports
TensorFlow, Keras or modelhub.ml when imported; apps import each other only through services,
selectors and models; apps (and core and the dashboard web kit) depend downward only (no cycles);
apps use dashboard only through dashboard.kit; no two sibling modules of modelhub.ml (or of its
packages) import each other, not even inside a function. tests/import_contracts.py holds
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
    config = (REPO_ROOT / ".importlinter").read_text().splitlines()
    num_contracts = sum(line.startswith("[importlinter:contract:") for line in config)
    # ml, web side, app interfaces, layers (core and dashboard too), web kit, ml without cycles
    assert num_contracts >= 6
    assert "0 broken" in result.stdout and f"{num_contracts} kept" in result.stdout, result.stdout


def test_the_import_time_contract_sees_module_level_imports_only(tmp_path):
    """A worker function may import TensorFlow; a module-level import (or one in a class body) may not."""
    from tests.import_contracts import import_time_lines

    lines = import_time_lines("training.tasks")
    source = (REPO_ROOT / "training" / "tasks.py").read_text().splitlines()
    module_level = {number for number, text in enumerate(source, start=1) if text.startswith(("import ", "from "))}
    assert lines == frozenset(module_level)
    assert not any("training.work" in source[number - 1] for number in lines)  # imported inside the task
    assert import_time_lines("keras") is None  # not ours: not scanned


def test_the_web_kit_contract_refuses_an_app_that_imports_dashboard_internals():
    """Apps import dashboard only through dashboard.kit; the project (modelhub) and dashboard itself may import more."""
    from grimp import ImportGraph

    from tests.import_contracts import AppInterfacesContract

    graph = ImportGraph()
    imports = [
        ("heads.views", "dashboard.kit"),  # allowed: the kit
        ("heads.views", "dashboard.shortcuts"),  # refused: behind the kit
        ("training.views", "dashboard"),  # allowed: the package itself
        ("modelhub.urls", "dashboard.views"),  # allowed: not an app
        ("dashboard.kit", "dashboard.shortcuts"),  # allowed: dashboard's own business
    ]
    for importer, imported in imports:
        graph.add_module(importer)
        graph.add_module(imported)
        graph.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    contract = AppInterfacesContract(
        name="web kit",
        session_options={"root_packages": ["heads", "training", "dashboard", "modelhub"]},
        contract_options={"apps": ["dashboard"], "importers": ["heads", "training"], "public": ["kit"]},
    )
    check = contract.check(graph, verbose=False)
    assert not check.kept
    assert [(entry["importer"], entry["imported"]) for entry in check.metadata["invalid_imports"]] == [
        ("heads.views", "dashboard.shortcuts")
    ]
