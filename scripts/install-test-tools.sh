#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust, each only when missing or out of date:
#
#   * Schemathesis (PyPI), for the gateway's contract test, in its own virtualenv, at exactly the
#     versions in services/gateway/tests/contract/requirements.txt. The virtualenv lives in
#     /opt/switchboard-schemathesis when this runs as root (kept across clones), else in
#     .run/tools/schemathesis of this checkout.
#   * For the browser tests: Debian's chromium (never a browser downloaded by a tool) and the npm
#     packages pinned in tests/browser/package-lock.json (`npm ci`, only when the lockfile changed).
#
# Prints the schemathesis executable's path on stdout (for scripts/test.sh). Idempotent and fast
# when everything is there already (no pip call at all then).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'install-test-tools: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

REQUIREMENTS=services/gateway/tests/contract/requirements.txt
if [ "$(id -u)" -eq 0 ]; then default=/opt/switchboard-schemathesis; else default="$PWD/.run/tools/schemathesis"; fi
VENV="${SWITCHBOARD_SCHEMATHESIS_VENV:-$default}"
STAMP="$VENV/.requirements.sha256"
want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"

if [ -x "$VENV/bin/schemathesis" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
    log "ok: $("$VENV/bin/schemathesis" --version 2>/dev/null) ($VENV)"
else
    py=$(command -v python3 || true)
    if [ -z "$py" ] || ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        [ "$(id -u)" -eq 0 ] || die "python3 with venv is missing; install python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
        py=$(command -v python3)
    fi
    log "creating $VENV from $REQUIREMENTS"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
    if [ -z "${PIP_CERT:-}" ] && [ -s /etc/ssl/certs/ca-certificates.crt ]; then export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$REQUIREMENTS"
    "$VENV/bin/schemathesis" --version >/dev/null 2>&1 || die "schemathesis was installed into $VENV but does not run"
    echo "$want" > "$STAMP"
    log "installed: $("$VENV/bin/schemathesis" --version) ($VENV)"
fi

# Browser tests: Debian's Chromium and the pinned npm packages.
if [ ! -x /usr/bin/chromium ]; then
    [ "$(id -u)" -eq 0 ] || die "Debian's chromium is missing; install it (apt-get install chromium)"
    log "installing Debian's chromium (browser tests)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
log "ok: $(/usr/bin/chromium --version 2>/dev/null | head -1)"
if ! command -v npm >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "npm is missing (Node.js 18 or later with npm is needed for the browser tests)"
    log "installing Debian's nodejs and npm (browser tests)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
LOCK=tests/browser/package-lock.json
BSTAMP=tests/browser/node_modules/.lock.sha256
bwant="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [ "$(cat "$BSTAMP" 2>/dev/null)" != "$bwant" ]; then
    log "installing the browser tests' npm packages from $LOCK"
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$bwant" > "$BSTAMP"
fi
log "ok: playwright-core $(node -p 'require("./tests/browser/node_modules/playwright-core/package.json").version')"

echo "$VENV/bin/schemathesis"
