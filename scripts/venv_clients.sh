#!/usr/bin/env bash
# Create or update .venv-clients: the unmodified third-party clients the protocol tests run
# (tritonclient, mlflow-skinny, prometheus-client, tensorflow-serving-api). Their own venv, as
# schemathesis has: their pins differ from TensorFlow's. Skips work when the venv matches
# requirements-clients.txt and NO_DEPS (stamp = their sha256).
# Usage: scripts/venv_clients.sh   (prints nothing when it is current)
set -euo pipefail
cd "$(dirname "$0")/.."
req=requirements-clients.txt
venv=.venv-clients
# Installed without dependencies: tensorflow-serving-api declares `tensorflow`; its config protos
# need only protobuf (from requirements-clients.txt).
NO_DEPS="tensorflow-serving-api==2.21.0"

if [ ! -x "$venv/bin/python" ]; then
  py="$(scripts/find_python.sh)"
  echo "==> creating $venv with $py"
  "$py" -m venv "$venv"
fi
stamp="$venv/.installed-$( (cat "$req"; echo "$NO_DEPS") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing $req into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps $NO_DEPS
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
