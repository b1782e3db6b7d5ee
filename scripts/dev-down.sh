#!/usr/bin/env bash
# Stops the services started by scripts/dev-up.sh: each supervisor first (so nothing is restarted),
# which stops its service with SIGTERM and waits for it to drain; then any service still running
# (SIGTERM, then SIGKILL after 30 s). SWITCHBOARD_RUN_DIR as for dev-up.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${SWITCHBOARD_RUN_DIR:-.run}

wait_gone() { for _ in $(seq 1 120); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.25; done; return 1; }

for f in "$RUN_DIR"/*.supervisor.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null && wait_gone "$pid"
    rm -f "$f"
done
for f in "$RUN_DIR"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait_gone "$pid" || kill -KILL "$pid"
    fi
    echo "stopped $(basename "$f" .pid)"
    rm -f "$f"
done
