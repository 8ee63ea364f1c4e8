#!/usr/bin/env bash
# `make run`: everything needed to use ModelHub on this machine with no external servers.
# Embedded default: SQLite + filesystem artifacts + filesystem Celery broker under MODELHUB_HOME.
# Starts the web server on 127.0.0.1:${MODELHUB_PORT:-8000} and one Celery worker; Ctrl-C or SIGTERM stops
# both and everything they started.
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

# Supervision. The web server and the worker each run in a session (and process group) of their own,
# so that a signal meant for `make run` reaches this script only, never a Celery pool child directly:
# a pool child that dies of a group-wide SIGTERM while the worker's main process shuts down leaves that
# process blocked on the pool's lock for ever. Ctrl-C or SIGTERM here sends TERM to each main process
# (Celery's warm shutdown, gunicorn's graceful one), waits at most STOP_GRACE seconds, then KILLs
# whatever is left of both process groups (a task still running is cut short), so that
# nothing outlives `make run` and a later one never shares the filesystem broker with an orphan.
STOP_GRACE=10
worker_pid="" web_pid="" stopping=0

start_worker() {
  # -B runs the beat timer inside it (the reaper that fails rows whose worker went silent).
  setsid .venv/bin/celery -A modelhub worker -Q default,training,assembly --concurrency 1 \
    --hostname "worker@%h" --loglevel INFO -B --schedule "$MODELHUB_HOME/celerybeat-schedule" &
  worker_pid=$!
}

start_web() {
  setsid .venv/bin/gunicorn modelhub.wsgi --bind "127.0.0.1:$PORT" --workers 2 --threads 4 --timeout 600 \
    --limit-request-line 8190 --access-logfile - &
  web_pid=$!
}

kill_groups() {  # kill_groups SIGNAL: every process left in the web's and the worker's groups
  local pid
  for pid in $worker_pid $web_pid; do kill "-$1" -- "-$pid" 2>/dev/null || true; done
}

stop() {  # stop EXIT_STATUS
  trap 'kill_groups KILL' INT TERM  # a second Ctrl-C does not wait for the grace period
  trap - EXIT
  stopping=1
  echo; echo "==> stopping web and worker (at most ${STOP_GRACE} s)"
  for pid in $worker_pid $web_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + STOP_GRACE))
  while kill -0 $worker_pid 2>/dev/null || kill -0 $web_pid 2>/dev/null; do
    [ "$SECONDS" -ge "$deadline" ] && kill_groups KILL
    sleep 0.2
  done
  kill_groups KILL  # pool children, the beat process, gunicorn workers: nothing stays behind
  exit "$1"
}
trap 'stop 0' INT TERM
trap 'stop 1' EXIT

start_worker
start_web
echo "==> ModelHub on http://127.0.0.1:$PORT/ (API docs: /api/docs/, health: /api/health/). Ctrl-C stops."
# The worker is supervised: if it ever exits, it is started again and the web server stays up.
# If the web server exits, everything stops.
while true; do
  wait -n $worker_pid $web_pid || true
  [ "$stopping" = 1 ] && continue
  if ! kill -0 "$web_pid" 2>/dev/null; then
    echo "==> the web server exited; stopping"
    stop 1
  fi
  if ! kill -0 "$worker_pid" 2>/dev/null; then
    kill -KILL -- "-$worker_pid" 2>/dev/null || true
    echo "==> the worker exited; starting it again in 2 s (Ctrl-C stops everything)"
    sleep 2
    start_worker
  fi
done
