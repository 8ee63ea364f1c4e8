"""Two import-linter contract types for ModelHub's architecture rules (see .importlinter).

import-linter's graph (grimp) holds EVERY import statement, those inside functions included.
Two of our rules need more than the stock contract types give:

- ``import_time_forbidden``: a ``forbidden`` contract over the imports that run when a module
  is imported (module level, class bodies, module-level ``if``/``try``), leaving out imports
  inside functions and under ``if TYPE_CHECKING:``. "The web process never imports TensorFlow"
  means exactly this: a view may import TensorFlow inside a function that only a worker calls.
- ``app_interfaces``: apps import each other only through a few public modules (services,
  selectors, models). A new private module is covered the day it is added, with no list to
  update. With ``importers``, the same rule for a package that others use (the dashboard web
  kit: apps import dashboard only through dashboard.kit).
"""

from __future__ import annotations

import ast
import copy
from functools import cache
from pathlib import Path

from grimp import ImportGraph
from importlinter.application import output
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

REPO_ROOT = Path(__file__).resolve().parent.parent
NOT_AT_IMPORT_TIME = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _module_file(module: str) -> Path | None:
    base = REPO_ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking_guard(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


@cache
def import_time_lines(module: str) -> frozenset[int] | None:
    """Return the line numbers of the import statements that run when ``module`` is imported.

    None when the module's source is not in this repository (an external package).
    """
    path = _module_file(module)
    if path is None:
        return None
    lines: set[int] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, NOT_AT_IMPORT_TIME) or _is_type_checking_guard(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                lines.add(child.lineno)
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return frozenset(lines)


def import_time_graph(graph: ImportGraph) -> ImportGraph:
    """Return a copy of ``graph`` without the imports that run only when a function is called."""
    trimmed = copy.deepcopy(graph)
    for importer in graph.modules:
        lines = import_time_lines(importer)
        if lines is None:
            continue
        for imported in graph.find_modules_directly_imported_by(importer):
            details = graph.get_import_details(importer=importer, imported=imported)
            if details and not any(detail["line_number"] in lines for detail in details):
                trimmed.remove_import(importer=importer, imported=imported)
    return trimmed


class ImportTimeForbiddenContract(ForbiddenContract):
    """A forbidden contract that counts only imports made when a module is imported.

    Same options as ``forbidden``. Chains are followed through import-time imports only, so
    ``views -> predicting -> tensorflow`` is allowed when ``predicting`` imports TensorFlow inside
    a function, and refused when it does so at module level.
    """

    type_name = "import_time_forbidden"

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        return super().check(import_time_graph(graph), verbose)


class AppInterfacesContract(Contract):
    """Apps import each other only through their public modules.

    Options:
        apps: the app packages (e.g. ``heads``, ``backbones``).
        public: submodule names every app offers to the others (e.g. ``services``).
        also_public: further modules that are part of an app's interface, each named in full.
        importers: optional; the packages whose imports into ``apps`` are checked (default: the
            apps themselves, each checked against the others).

    Every direct import (at any depth, inside functions too) from a module of one app (or of an
    importer) into a module of another app must land on that app's package, a public submodule,
    or something inside one.
    """

    type_name = "app_interfaces"

    apps = fields.ListField(subfield=fields.StringField())
    public = fields.ListField(subfield=fields.StringField())
    also_public = fields.ListField(subfield=fields.StringField(), required=False, default=[])
    importers = fields.ListField(subfield=fields.StringField(), required=False, default=[])

    def _app_of(self, module: str) -> str | None:
        matches = [app for app in self.apps if module == app or module.startswith(f"{app}.")]
        return max(matches, key=len) if matches else None

    def _is_public(self, module: str, app: str) -> bool:
        if module == app:
            return True
        first = module[len(app) + 1 :].split(".")[0]
        allowed = {f"{app}.{name}" for name in self.public} | set(self.also_public)
        return f"{app}.{first}" in allowed or any(module == m or module.startswith(f"{m}.") for m in allowed)

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        invalid = []
        for importer in sorted(graph.modules):
            importer_app = self._app_of(importer)
            if self.importers:
                if not any(importer == name or importer.startswith(f"{name}.") for name in self.importers):
                    continue
            elif importer_app is None:
                continue
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                imported_app = self._app_of(imported)
                if imported_app in (None, importer_app) or self._is_public(imported, imported_app):
                    continue
                details = graph.get_import_details(importer=importer, imported=imported)
                invalid.append(
                    {
                        "importer": importer,
                        "imported": imported,
                        "line_numbers": sorted(detail["line_number"] for detail in details),
                    }
                )
        return ContractCheck(kept=not invalid, metadata={"invalid_imports": invalid})

    def render_broken_contract(self, check: ContractCheck) -> None:
        public = ", ".join(self.public)
        for entry in check.metadata["invalid_imports"]:
            lines = ", ".join(f"l.{number}" for number in entry["line_numbers"])
            output.print_error(f"-   {entry['importer']} -> {entry['imported']} ({lines})", bold=False)
        output.new_line()
        also = f" (or {', '.join(self.also_public)})" if self.also_public else ""
        output.print(
            f"Import {', '.join(self.apps) if self.importers else 'another app'} only through its {public}{also}; "
            "move the function "
            "you need there, or into this app."
        )
