#!/usr/bin/env bash
# Removes the PostgreSQL databases and RabbitMQ queues and exchanges that earlier test and bench
# runs left behind when they were aborted, so that they cannot skew the next run's figures.
#
# Only names made by `sb_testkit::unique` are touched: `t`, the Unix time it was made (8 hex
# digits), 4 random hex digits, `_` and a tag (`t692a1f3c8e41_billing`). And only those made more
# than SB_LEFTOVER_MINUTES (default 15) ago: no test lives that long, so a run going on beside this
# one keeps its own. An operator's deployment (any other name) is never touched.
# Uses SB_TEST_DATABASE_URL and the management API on SB_TEST_RABBITMQ_API (default
# http://guest:guest@127.0.0.1:15672/api, vhost /) like the tests; what it cannot reach it skips.
set -uo pipefail

db_url=${SB_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
api=${SB_TEST_RABBITMQ_API:-http://guest:guest@127.0.0.1:15672/api}
max_age=$(( ${SB_LEFTOVER_MINUTES:-15} * 60 ))
now=$(date +%s)
pattern='^t[0-9a-f]{12}_[a-z0-9_.-]*$'

log() { printf 'clean-test-leftovers: %s\n' "$*" >&2; }

# 0 when `name` was made by a test more than max_age ago. A name whose time is not a plausible
# one (older test names were all random digits) counts as old.
stale() {
    local made=$(( 16#${1:1:8} ))
    (( made < now - max_age || made > now + 300 ))
}

dbs=0
if command -v psql >/dev/null; then
    while read -r name; do
        [ -n "$name" ] && stale "$name" || continue
        psql "$db_url" -qAtc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null && dbs=$((dbs + 1))
    done < <(psql "$db_url" -qAtc "SELECT datname FROM pg_database WHERE datname ~ '^t[0-9a-f]{12}_'" 2>/dev/null)
else
    log "psql not found: databases not checked"
fi

queues=0 exchanges=0
if command -v curl >/dev/null && curl -sf "$api/overview" >/dev/null 2>&1; then
    for kind in queues exchanges; do
        while read -r name; do
            [[ "$name" =~ $pattern ]] && stale "$name" || continue
            if curl -sf -X DELETE "$api/$kind/%2F/$name" >/dev/null; then
                if [ "$kind" = queues ]; then queues=$((queues + 1)); else exchanges=$((exchanges + 1)); fi
            fi
        done < <(curl -sf "$api/$kind/%2F?columns=name" | grep -o '"name":"[^"]*"' | cut -d'"' -f4)
    done
else
    log "RabbitMQ's management API is not reachable at ${api#*@}: queues not checked"
fi
log "removed $dbs database(s), $queues queue(s) and $exchanges exchange(s) left by earlier test runs"
