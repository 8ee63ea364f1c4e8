#!/usr/bin/env bash
# Fault-injection helpers for the test suite: stop/start the throwaway PostgreSQL and restart Redis
# that scripts/test.sh started. Reads MODELHUB_TEST_RUN_DIR, MODELHUB_TEST_PG_BIN,
# MODELHUB_TEST_PG_PORT and MODELHUB_TEST_REDIS_PORT (exported by scripts/test.sh).
# Usage: scripts/test_services.sh pg-stop | pg-start | redis-restart
set -euo pipefail
: "${MODELHUB_TEST_RUN_DIR:?run under make test}"
RUN_DIR="$MODELHUB_TEST_RUN_DIR"
PG_BIN="$MODELHUB_TEST_PG_BIN"
PG_PORT="$MODELHUB_TEST_PG_PORT"
REDIS_PORT="$MODELHUB_TEST_REDIS_PORT"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-}" in
  pg-stop)
    as_pg "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg/data" -m fast -w stop >/dev/null ;;
  pg-start)
    as_pg "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg/data" -l "$RUN_DIR/pg/pg.log" -w -t 30 \
      -o "-p $PG_PORT -k $RUN_DIR/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      start >/dev/null ;;
  redis-restart)
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || break; sleep 0.1; done
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --pidfile "$RUN_DIR/redis/redis.pid" \
      --logfile "$RUN_DIR/redis/redis.log" --dir "$RUN_DIR/redis" --save '' --appendonly no
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done ;;
  *) echo "usage: $0 pg-stop | pg-start | redis-restart" >&2; exit 2 ;;
esac
