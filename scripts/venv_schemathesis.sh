#!/usr/bin/env bash
# Create or update .venv-schemathesis (schemathesis has its own pins, so it never shares .venv).
# Skips work when the venv already matches requirements-schemathesis.txt (stamp = its sha256).
# Usage: scripts/venv_schemathesis.sh   (prints nothing when it is current)
set -euo pipefail
cd "$(dirname "$0")/.."
req=requirements-schemathesis.txt
venv=.venv-schemathesis

if [ ! -x "$venv/bin/python" ]; then
  py="$(scripts/find_python.sh)"
  echo "==> creating $venv with $py"
  "$py" -m venv "$venv"
fi
stamp="$venv/.installed-$(sha256sum "$req" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing $req into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
