#!/usr/bin/env bash
# `make run`: everything needed to use ModelHub on this machine with no external servers.
# Embedded default: SQLite + filesystem artifacts + filesystem Celery broker under MODELHUB_HOME.
# Starts the web server on 127.0.0.1:${MODELHUB_PORT:-8000} and one Celery worker; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh requirements.txt

export MODELHUB_HOME="${MODELHUB_HOME:-$PWD/var}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
PORT="${MODELHUB_PORT:-8000}"
PY=.venv/bin/python

$PY manage.py check_services
$PY manage.py migrate --no-input -v0
$PY manage.py collectstatic --no-input -v0
$PY manage.py ensure_admin

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "==> stopping web and worker"
  for pid in "${pids[@]}"; do pkill -TERM -P "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

# The worker is supervised: if it ever exits, it is started again and the web server stays up.
# -B runs the beat timer inside it (the reaper that fails rows whose worker went silent).
(
  while true; do
    .venv/bin/celery -A modelhub worker -Q default,training,assembly --concurrency 1 \
      --hostname "worker@%h" --loglevel INFO -B --schedule "${MODELHUB_HOME:-var}/celerybeat-schedule" || true
    echo "==> the worker exited; starting it again in 2 s (Ctrl-C stops everything)"
    sleep 2
  done
) &
pids+=($!)
.venv/bin/gunicorn modelhub.wsgi --bind "127.0.0.1:$PORT" --workers 2 --threads 4 --timeout 600 --limit-request-line 8190 \
  --access-logfile - &
pids+=($!)
echo "==> ModelHub on http://127.0.0.1:$PORT/ (API docs: /api/docs/, health: /api/health/). Ctrl-C stops."
wait -n "${pids[@]}"
