#!/usr/bin/env bash
# Print the path of a Python 3.12 interpreter, or fail with a clear message.
# Order: $MODELHUB_PYTHON, python3.12 on PATH, pyenv's 3.12.x installs.
set -euo pipefail

works() { "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; }

for candidate in "${MODELHUB_PYTHON:-}" python3.12 \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V -r); do
  [ -n "$candidate" ] || continue
  if works "$candidate"; then
    command -v "$candidate" 2>/dev/null || echo "$candidate"
    exit 0
  fi
done

cat >&2 <<'MSG'
ModelHub needs Python 3.12 (Django 6 does not support 3.11), and none was found.
Looked for: $MODELHUB_PYTHON, `python3.12` on PATH, and pyenv versions 3.12.x.
Fix: install Python 3.12 (e.g. `apt-get install python3.12` or `pyenv install 3.12`),
or point MODELHUB_PYTHON at a 3.12 interpreter.
MSG
exit 1
