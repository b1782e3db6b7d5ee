#!/usr/bin/env bash
# `make test`: the whole suite. Brings up PostgreSQL and RabbitMQ, installs the deploy-check tools,
# builds the binaries the system tests start, runs every test in parallel, then the broker-chaos
# tests (they close every broker connection and restart the broker) and Lighthouse, one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-infra.sh
# Databases and queues of earlier aborted runs (test names only, older than 15 minutes) go first.
bash scripts/clean-test-leftovers.sh
bash scripts/install-check-tools.sh
# The gateway's contract test runs Schemathesis from here.
SB_SCHEMATHESIS="$(bash scripts/install-test-tools.sh)"
export SB_SCHEMATHESIS
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest (one time)"
    cargo install cargo-nextest --locked
fi

cargo build --workspace --bins --locked
cargo nextest run --workspace --locked --profile ci -E 'not binary(chaos) & not binary(lighthouse)'
# One at a time, on a machine the rest of the suite has left alone: the chaos tests restart the
# broker (and the whole-system one stops PostgreSQL for 30 s), and Lighthouse's performance score
# would suffer from other tests' load.
cargo nextest run --workspace --locked --profile ci --test-threads 1 -E 'binary(chaos) | binary(lighthouse)'
