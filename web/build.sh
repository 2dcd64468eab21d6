#!/usr/bin/env bash
# Build the web console: install the pinned npm packages, generate the TS client from proto/, type-check, bundle.
# Output: web/src/gen/ (generated client) and web/dist/{index.html,app.js}, all committed so a machine without
# node can still serve the console from Envoy. Usage: web/build.sh [--no-install]
set -euo pipefail
WEB_DIR="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$WEB_DIR")"
BUF="${BUF:-$(command -v buf || echo "$ROOT/.venv/bin/buf")}"

cd "$WEB_DIR"
if [[ "${1:-}" != "--no-install" ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
(cd "$ROOT" && "$BUF" generate --template buf.gen.ts.yaml)
node_modules/.bin/tsc --noEmit -p .
mkdir -p dist
node_modules/.bin/esbuild src/main.ts --bundle --format=esm --target=es2022 --minify --legal-comments=none \
  --log-level=warning --outfile=dist/app.js
cp src/index.html dist/index.html
echo "web console built: $WEB_DIR/dist ($(wc -c < dist/app.js) bytes of app.js)"
