#!/usr/bin/env bash
# Create or update .venv with Python 3.12 and the pinned requirements.
# Skips work when the venv already matches the requirement files (stamp = their sha256).
# Usage: scripts/venv.sh [requirements file]   (default: requirements.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
  py="$(scripts/find_python.sh)"
  echo "==> creating .venv with $py"
  rm -rf .venv
  "$py" -m venv .venv
fi

stamp=".venv/.installed-$(cat "$req" requirements.txt requirements-keras-hub.txt | sha256sum | cut -c1-16)-$(basename "$req")"
if [ ! -f "$stamp" ]; then
  echo "==> installing $req into .venv (first run takes a few minutes: TensorFlow is ~600 MB)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  # keras-hub without its declared dependencies (see the file): never the full tensorflow package.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-keras-hub.txt
  touch "$stamp"
fi
