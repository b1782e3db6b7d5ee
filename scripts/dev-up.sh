#!/usr/bin/env bash
# `make run`: infrastructure up, build, start all six services, wait until each is ready, print
# where everything is, then stay in the foreground until Ctrl-C (which stops the services cleanly).
# With --detach it returns after printing; `make stop` stops the services later.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICES=(gateway identity billing crm-sync support-router ai-assist)
declare -A HTTP=([gateway]=8080 [identity]=8081 [billing]=8082 [crm-sync]=8083 [support-router]=8084 [ai-assist]=8085)
declare -A GRPC=([gateway]=50050 [identity]=50051 [billing]=50052 [crm-sync]=50053 [support-router]=50054 [ai-assist]=50055)
RUN_DIR=.run
detach=0
[ "${1:-}" = "--detach" ] && detach=1

bash scripts/ensure-infra.sh
echo "building (cargo build --workspace --bins) ..."
cargo build --workspace --bins --locked -q

mkdir -p "$RUN_DIR/logs"
bash scripts/dev-down.sh >/dev/null 2>&1 || true

env_name() { echo "${1^^}" | tr '-' '_'; }
http_of() { local v; v="$(env_name "$1")_HTTP_ADDR"; echo "${!v:-127.0.0.1:${HTTP[$1]}}"; }
grpc_of() { local v; v="$(env_name "$1")_GRPC_ADDR"; echo "${!v:-127.0.0.1:${GRPC[$1]}}"; }

for s in "${SERVICES[@]}"; do
    # Own session: the services outlive the shell that started them (with --detach).
    setsid nohup "target/debug/$s" >"$RUN_DIR/logs/$s.log" 2>&1 &
    echo $! >"$RUN_DIR/$s.pid"
done

stop_all() { bash scripts/dev-down.sh; }

for s in "${SERVICES[@]}"; do
    addr=$(http_of "$s")
    ready=0
    for _ in $(seq 1 240); do
        if ! kill -0 "$(cat "$RUN_DIR/$s.pid")" 2>/dev/null; then
            echo "$s exited during start; last log lines:" >&2
            tail -n 20 "$RUN_DIR/logs/$s.log" >&2
            stop_all; exit 1
        fi
        if curl -fsS "http://$addr/readyz" >/dev/null 2>&1; then ready=1; break; fi
        sleep 0.25
    done
    if [ "$ready" -ne 1 ]; then
        echo "$s did not become ready on http://$addr/readyz within 60 s; last log lines:" >&2
        tail -n 20 "$RUN_DIR/logs/$s.log" >&2
        stop_all; exit 1
    fi
done

cat <<TXT

Switchboard is running — all six services answered /readyz.

  Customer portal (open in a browser)    http://$(http_of gateway)/app/
  Gateway (REST API docs, Stripe webhook) http://$(http_of gateway)/docs   webhook: /webhooks/stripe
  RabbitMQ dashboard                     http://127.0.0.1:15672   (guest / guest)
  Operator CLI                           target/debug/switchboard dlq list   (also: queues, catalog)

  service          HTTP (/healthz /readyz /metrics)   gRPC (health, reflection, Ops)
TXT
for s in "${SERVICES[@]}"; do printf '  %-16s http://%-28s %s\n' "$s" "$(http_of "$s")" "$(grpc_of "$s")"; done
echo
echo "  Logs: $RUN_DIR/logs/<service>.log"
if [ "$detach" -eq 1 ]; then
    echo "  Stop: make stop"
    exit 0
fi
echo "  Ctrl-C stops everything."
trap 'echo; stop_all; exit 0' INT TERM
while true; do
    for s in "${SERVICES[@]}"; do
        if ! kill -0 "$(cat "$RUN_DIR/$s.pid" 2>/dev/null)" 2>/dev/null; then
            echo "$s stopped unexpectedly; last log lines:" >&2
            tail -n 20 "$RUN_DIR/logs/$s.log" >&2
            stop_all; exit 1
        fi
    done
    sleep 2
done
