#!/usr/bin/env bash
# Re-vendors the API docs UI that the gateway serves at /docs: Swagger UI from the npm package
# swagger-ui-dist, at the version pinned here, copied into services/gateway/web/vendor/swagger-ui/
# and checked against the SHA-256 sums below (the files are committed; the gateway compiles them
# in, so `make run` needs neither npm nor the internet). To move to another version: change
# VERSION, run with --update-sums, review the diff, commit.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=5.35.0
DEST=services/gateway/web/vendor/swagger-ui
FILES=(swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt)
SUMS="$DEST/SHA256SUMS"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "swagger-ui-dist@$VERSION" >/dev/null && tar xzf "swagger-ui-dist-$VERSION.tgz")
mkdir -p "$DEST"
for f in "${FILES[@]}"; do cp "$tmp/package/$f" "$DEST/$f"; done
if [[ "${1:-}" == "--update-sums" ]]; then
    (cd "$DEST" && sha256sum "${FILES[@]}" > SHA256SUMS)
    echo "vendor-docs-ui: swagger-ui-dist $VERSION copied; SHA256SUMS updated"
else
    (cd "$DEST" && sha256sum --check --quiet SHA256SUMS)
    echo "vendor-docs-ui: swagger-ui-dist $VERSION copied and matches SHA256SUMS"
fi
