#!/usr/bin/env bash
# Stops the services started by scripts/dev-up.sh: SIGTERM, then waits for them to drain.
set -uo pipefail
cd "$(dirname "$0")/.."
for f in .run/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        echo "stopped $(basename "$f" .pid)"
    fi
    rm -f "$f"
done
