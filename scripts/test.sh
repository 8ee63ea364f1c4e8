#!/usr/bin/env bash
# `make test`: install what is missing, start a throwaway PostgreSQL and Redis on loopback on
# non-default ports, run pytest against them, stop them on exit, return pytest's status.
# Extra arguments go to pytest, in one run (make test PYTEST_ARGS="-k health"). Without any, the
# default set runs on MODELHUB_TEST_WORKERS (2) pytest-xdist workers, then the `serial` tests alone.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- Debian packages ------------------------------------------------------------------------
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
command -v docker-compose >/dev/null || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> apt-get install ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- Python ---------------------------------------------------------------------------------
scripts/venv.sh requirements-dev.txt
# schemathesis (tests/api/test_schemathesis.py) has pins of its own: its own venv, made once.
scripts/venv_schemathesis.sh
# The protocol tests (tests/protocols/) run unmodified third-party clients from their own venv.
scripts/venv_clients.sh

# --- Throwaway PostgreSQL + Redis -------------------------------------------------------------
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
RUN_DIR="$(mktemp -d /tmp/modelhub-test.XXXXXX)"
PG_PORT="${MODELHUB_TEST_PG_PORT:-55432}"
REDIS_PORT="${MODELHUB_TEST_REDIS_PORT:-56379}"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cleanup() {
  status=$?
  as_pg "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg/data" -m immediate stop >/dev/null 2>&1 || true
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
  exit $status
}
trap cleanup EXIT INT TERM

chmod 755 "$RUN_DIR"
mkdir -p "$RUN_DIR/pg" "$RUN_DIR/redis" "$RUN_DIR/home"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$RUN_DIR/pg"
as_pg "$PG_BIN/initdb" -D "$RUN_DIR/pg/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg/data" -l "$RUN_DIR/pg/pg.log" -w -t 30 \
  -o "-p $PG_PORT -k $RUN_DIR/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
  start >/dev/null
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --pidfile "$RUN_DIR/redis/redis.pid" \
  --logfile "$RUN_DIR/redis/redis.log" --dir "$RUN_DIR/redis" --save '' --appendonly no
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "==> PostgreSQL on 127.0.0.1:$PG_PORT, Redis on 127.0.0.1:$REDIS_PORT"

export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/modelhub"
export CELERY_BROKER_URL="redis://127.0.0.1:$REDIS_PORT/0"
export MODELHUB_HOME="$RUN_DIR/home"
export MODELHUB_TEST_REDIS_URL="$CELERY_BROKER_URL"
# For the fault-injection tests (scripts/test_services.sh stops and restarts these servers).
export MODELHUB_TEST_RUN_DIR="$RUN_DIR" MODELHUB_TEST_PG_BIN="$PG_BIN"
export MODELHUB_TEST_PG_PORT="$PG_PORT" MODELHUB_TEST_REDIS_PORT="$REDIS_PORT"
export TF_CPP_MIN_LOG_LEVEL=2
export DJANGO_ALLOW_ASYNC_UNSAFE=true
unset MODELHUB_S3_BUCKET

set +e
if [ $# -eq 0 ] && [ "${MODELHUB_TEST_WORKERS:-2}" -gt 1 ]; then
  # The default set on MODELHUB_TEST_WORKERS workers (tests/xdist_env.py gives each its own
  # databases and home), then the tests that stop the shared servers (marker serial), alone.
  .venv/bin/python -m pytest -p tests.xdist_env -n "${MODELHUB_TEST_WORKERS:-2}" -m "not slow and not serial"
  parallel=$?
  .venv/bin/python -m pytest -m "serial and not slow"
  serial=$?
  status=$(( parallel != 0 ? parallel : serial ))
else
  .venv/bin/python -m pytest "$@"
  status=$?
fi
set -e
exit $status
