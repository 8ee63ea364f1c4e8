"""modelhub/ml/__init__.py documents the API that really exists.

Every name its docstring lists under a module heading is imported from that module, and every
keyword it shows (``name=``) is a real parameter of that function or class.
"""

import importlib
import inspect
import re

import modelhub.ml

HEADING = re.compile(r"^``(modelhub\.ml(?:\.\w+)*)``")
ENTRY = re.compile(r"^    ([A-Za-z_]\w*)")


def _documented() -> list[tuple[str, str, str]]:
    """Return (module, name, the entry's text with its continuation lines), in order."""
    found: list[tuple[str, str, str]] = []
    module = None
    for line in modelhub.ml.__doc__.splitlines():
        heading = HEADING.match(line)
        if heading:
            module = heading.group(1)
            continue
        entry = ENTRY.match(line)
        if entry and module:
            found.append((module, entry.group(1), line))
        elif line.startswith("        ") and found and module:
            module_of, name, text = found[-1]
            found[-1] = (module_of, name, text + " " + line.strip())
    return found


def test_the_docstring_lists_modules_and_names():
    documented = _documented()
    modules = {module for module, _, _ in documented}
    assert len(documented) >= 60 and len(modules) >= 25, documented


def test_every_documented_name_exists_with_the_keywords_shown():
    problems = []
    for module_name, name, text in _documented():
        module = importlib.import_module(module_name)
        if not hasattr(module, name):
            problems.append(f"{module_name}.{name} does not exist")
            continue
        target = getattr(module, name)
        if not callable(target):
            continue
        signature_text = text.split("#", 1)[0]
        call = signature_text[signature_text.find("(") + 1 :] if "(" in signature_text else ""
        parameters = inspect.signature(target).parameters
        for keyword in re.findall(r"(\w+)=", call):
            if keyword not in parameters:
                problems.append(f"{module_name}.{name} has no parameter {keyword!r}")
    assert not problems, problems
