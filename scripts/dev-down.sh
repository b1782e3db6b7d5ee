#!/usr/bin/env bash
# Stops the services started by scripts/dev-up.sh: each supervisor first (so nothing is restarted),
# which stops its service with SIGTERM and waits for it to drain; then any service still running
# (SIGTERM, then SIGKILL after 30 s). A pid file whose process is not what it names (left by a
# crash, its number reused since) is only removed. SWITCHBOARD_RUN_DIR as for dev-up.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${SWITCHBOARD_RUN_DIR:-.run}

wait_gone() { for _ in $(seq 1 120); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.25; done; return 1; }
# Whether process $1's command line contains $2.
runs() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "$2"; }

for f in "$RUN_DIR"/*.supervisor.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    name=$(basename "$f" .supervisor.pid)
    if runs "$pid" "--supervise $name"; then
        kill -TERM "$pid" 2>/dev/null && wait_gone "$pid" && echo "stopped $name"
    fi
    rm -f "$f"
done
for f in "$RUN_DIR"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    name=$(basename "$f" .pid)
    if runs "$pid" "$name"; then
        kill -TERM "$pid"
        wait_gone "$pid" || kill -KILL "$pid"
        echo "stopped $name"
    fi
    rm -f "$f"
done
rm -f "$RUN_DIR/started"
