#!/usr/bin/env bash
# `make run`: infrastructure up, build, start all six services, wait until each is ready, print
# where everything is, then stay in the foreground until Ctrl-C (which stops the services cleanly).
# With --detach it returns after printing; `make stop` stops the services later.
#
# Each service runs under its own supervisor: a service that exits (a crash, `kill -9`, its
# database gone at start) is started again after 1 s, then 2, 4, ... up to 30 s between attempts
# (back to 1 s once a run has lasted 60 s), and the terminal (and `.run/supervisor.log`) says so.
# Only a service that exits before all six were first ready — a bad setting — stops the start.
#
# Settings: the services' own (`<SERVICE>_HTTP_ADDR`, ...: see README's configuration);
# SWITCHBOARD_BIN_DIR runs the binaries found there instead of building (e.g. `target/release`
# after `cargo build --release`); SWITCHBOARD_RUN_DIR (default `.run`) holds pids and logs.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICES=(gateway identity billing crm-sync support-router ai-assist)
declare -A HTTP=([gateway]=8080 [identity]=8081 [billing]=8082 [crm-sync]=8083 [support-router]=8084 [ai-assist]=8085)
declare -A GRPC=([gateway]=50050 [identity]=50051 [billing]=50052 [crm-sync]=50053 [support-router]=50054 [ai-assist]=50055)
RUN_DIR=${SWITCHBOARD_RUN_DIR:-.run}
BIN_DIR=${SWITCHBOARD_BIN_DIR:-}
SUPERVISOR_LOG="$RUN_DIR/supervisor.log"

env_name() { echo "${1^^}" | tr '-' '_'; }
http_of() { local v; v="$(env_name "$1")_HTTP_ADDR"; echo "${!v:-127.0.0.1:${HTTP[$1]}}"; }
grpc_of() { local v; v="$(env_name "$1")_GRPC_ADDR"; echo "${!v:-127.0.0.1:${GRPC[$1]}}"; }
is_ready() { curl -fsS -o /dev/null --max-time 2 "http://$(http_of "$1")/readyz" 2>/dev/null; }

# --- one service's supervisor (started by this script as `dev-up.sh --supervise <service>`) -----
# Writes the service's pid to $RUN_DIR/<service>.pid and its own to <service>.supervisor.pid;
# SIGTERM stops the service (it drains) and then the supervisor. In the foreground it also ends
# when the `make run` that started it is gone ($SB_PARENT), so nothing outlives a killed terminal.
supervise() {
    local s=$1 bin="$BIN_DIR/$1" log="$RUN_DIR/logs/$1.log" backoff=1 attempt=0 pid=0 started
    say() { local m; m="$(date +%T) $*"; echo "$m" >>"$SUPERVISOR_LOG"; [ "${SB_SUPERVISOR_TTY:-0}" = 1 ] && echo "$m" >&2; return 0; }
    # Every job of this shell is the service (or a sleep): stopping them all also catches a
    # service started a moment before its pid was noted.
    stop() {
        local jobs_left
        jobs_left=$(jobs -p)
        [ -n "$jobs_left" ] && kill -TERM $jobs_left 2>/dev/null
        wait 2>/dev/null
        rm -f "$RUN_DIR/$s.pid" "$RUN_DIR/$s.supervisor.pid"
        exit "${1:-0}"
    }
    trap stop TERM INT
    echo $$ >"$RUN_DIR/$s.supervisor.pid"
    while true; do
        started=$(date +%s)
        "$bin" >>"$log" 2>&1 &
        pid=$!
        echo "$pid" >"$RUN_DIR/$s.pid"
        # Until ready (said after a restart), then until it exits.
        local ready=0
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$ready" -eq 0 ] && is_ready "$s"; then
                ready=1
                [ "$attempt" -gt 0 ] && say "$s is ready again (pid $pid)"
            fi
            if [ -n "${SB_PARENT:-}" ] && ! kill -0 "$SB_PARENT" 2>/dev/null; then stop; fi
            sleep 0.5 & wait $! || true
        done
        local rc=0
        wait "$pid" || rc=$?
        pid=0
        rm -f "$RUN_DIR/$s.pid"
        local how="exit status $rc"
        [ "$rc" -gt 128 ] && how="killed by signal $((rc - 128))"
        if [ ! -e "$RUN_DIR/started" ]; then
            say "$s exited during start ($how); not restarting — see $log"
            stop 1
        fi
        [ $(($(date +%s) - started)) -ge 60 ] && backoff=1
        attempt=$((attempt + 1))
        say "$s exited ($how); restarting in ${backoff}s (restart $attempt) — log: $log"
        sleep "$backoff" & wait $! || true
        backoff=$((backoff * 2 > 30 ? 30 : backoff * 2))
    done
}

if [ "${1:-}" = "--supervise" ]; then
    supervise "$2"
    exit
fi

detach=0
[ "${1:-}" = "--detach" ] && detach=1

bash scripts/ensure-infra.sh
if [ -z "$BIN_DIR" ]; then
    echo "building (cargo build --workspace --bins) ..."
    cargo build --workspace --bins --locked -q
    BIN_DIR=target/debug
fi
export SWITCHBOARD_BIN_DIR=$BIN_DIR SWITCHBOARD_RUN_DIR=$RUN_DIR

mkdir -p "$RUN_DIR/logs"
bash scripts/dev-down.sh >/dev/null 2>&1 || true
: >"$SUPERVISOR_LOG"
rm -f "$RUN_DIR/started"

stop_all() { bash scripts/dev-down.sh; }

declare -A SUPERVISOR
for s in "${SERVICES[@]}"; do
    : >"$RUN_DIR/logs/$s.log"
    rm -f "$RUN_DIR/$s.pid" "$RUN_DIR/$s.supervisor.pid"
    # Own session: the supervisor and its service outlive the shell that started them (with
    # --detach) and do not take the terminal's Ctrl-C (this script's trap stops them in order).
    if [ "$detach" -eq 1 ]; then
        setsid nohup bash "$0" --supervise "$s" </dev/null >/dev/null 2>&1 &
    else
        SB_SUPERVISOR_TTY=1 SB_PARENT=$$ setsid bash "$0" --supervise "$s" </dev/null &
    fi
    SUPERVISOR[$s]=$!
done

for s in "${SERVICES[@]}"; do
    ready=0
    for _ in $(seq 1 240); do
        if ! kill -0 "${SUPERVISOR[$s]}" 2>/dev/null; then
            echo "$s exited during start; last log lines:" >&2
            tail -n 20 "$RUN_DIR/logs/$s.log" >&2
            stop_all; exit 1
        fi
        if is_ready "$s"; then ready=1; break; fi
        sleep 0.25
    done
    if [ "$ready" -ne 1 ]; then
        echo "$s did not become ready on http://$(http_of "$s")/readyz within 60 s; last log lines:" >&2
        tail -n 20 "$RUN_DIR/logs/$s.log" >&2
        stop_all; exit 1
    fi
done

# From here on a service that exits is restarted (before, it stopped the start). One that exited
# after its own check but before this line has no supervisor any more: that still stops the start.
touch "$RUN_DIR/started"
for s in "${SERVICES[@]}"; do
    if ! kill -0 "${SUPERVISOR[$s]}" 2>/dev/null; then
        echo "$s exited during start; last log lines:" >&2
        tail -n 20 "$RUN_DIR/logs/$s.log" >&2
        stop_all; exit 1
    fi
done
cat <<TXT

Switchboard is running — all six services answered /readyz.

  Customer portal (open in a browser)    http://$(http_of gateway)/app/
  Gateway (REST API docs, Stripe webhook) http://$(http_of gateway)/docs   webhook: /webhooks/stripe
  RabbitMQ dashboard                     http://127.0.0.1:15672   (guest / guest)
  Operator CLI                           $BIN_DIR/switchboard dlq list   (also: queues, catalog)

  service          HTTP (/healthz /readyz /metrics)   gRPC (health, reflection, Ops)
TXT
for s in "${SERVICES[@]}"; do printf '  %-16s http://%-28s %s\n' "$s" "$(http_of "$s")" "$(grpc_of "$s")"; done
echo
echo "  Logs: $RUN_DIR/logs/<service>.log; restarts: $SUPERVISOR_LOG"
echo "  A service that exits is started again (1 s, 2 s, 4 s ... 30 s apart)."
if [ "$detach" -eq 1 ]; then
    echo "  Stop: make stop"
    exit 0
fi
echo "  Ctrl-C stops everything."
trap 'echo; stop_all; exit 0' INT TERM
while true; do
    sleep 1 &
    wait $! || true
done
