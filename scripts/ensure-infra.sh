#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432, user postgres) and RabbitMQ (127.0.0.1:5672, guest/guest,
# management dashboard on :15672) are running: starts them when installed, installs them from
# Debian's packages when missing (as root). (With a Docker engine, `docker compose up` runs the
# whole system instead; see docker-compose.yml.)
set -euo pipefail

log() { printf 'ensure-infra: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port name seconds
    for _ in $(seq 1 "$(( $3 * 4 ))"); do port_open "$1" && return 0; sleep 0.25; done
    die "$2 did not open port $1 within $3 s"
}

APT_UPDATED=0
apt_install() {
    [ "$(id -u)" -eq 0 ] || die "$* is not installed; run this as root to install it from Debian's packages"
    if [ "$APT_UPDATED" -eq 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq; APT_UPDATED=1; fi
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- PostgreSQL --------------------------------------------------------------------------------
if ! port_open 5432; then
    fresh=0
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then apt_install postgresql; fresh=1; fi
    version=$(ls /etc/postgresql | sort -V | tail -n1)
    if [ "$fresh" -eq 1 ]; then
        # Development default: local TCP connections as any user without a password.
        hba="/etc/postgresql/$version/main/pg_hba.conf"
        sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
    log "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_port 5432 PostgreSQL 60
fi
log "PostgreSQL is up on 127.0.0.1:5432"

# --- RabbitMQ ----------------------------------------------------------------------------------
if ! port_open 5672; then
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    log "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_port 5672 RabbitMQ 120
fi
if command -v rabbitmqctl >/dev/null; then
    rabbitmqctl -q await_startup >/dev/null 2>&1 || true
    if ! port_open 15672 && command -v rabbitmq-plugins >/dev/null; then
        log "enabling the RabbitMQ management dashboard"
        rabbitmq-plugins enable -q rabbitmq_management >/dev/null 2>&1 || log "could not enable rabbitmq_management (dashboard unavailable)"
    fi
fi
log "RabbitMQ is up on 127.0.0.1:5672"
