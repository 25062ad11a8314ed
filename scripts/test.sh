#!/usr/bin/env bash
# Runs every test: the Rust workspace's tests, then the dashboard's browser
# tests (headless Chromium driven by Playwright). Installs the pinned Node
# tools (Codex CLI, playwright-core) into ./node_modules when missing, and —
# unless DATABASE_URL names a server — starts one private PostgreSQL cluster
# for the Rust tests (each test makes and drops its own database in it).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x node_modules/.bin/codex ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi

if [[ -z "${DATABASE_URL:-}" ]]; then
  cargo build -q -p local-postgres
  # Wherever cargo puts its builds (CARGO_TARGET_DIR), not ./target.
  local_postgres="${CARGO_TARGET_DIR:-$PWD/target}/debug/local-postgres"
  pgdir=$(mktemp -d)
  DATABASE_URL=$("$local_postgres" start "$pgdir/data")
  export DATABASE_URL
  trap '"$local_postgres" stop "$pgdir/data" || true; rm -rf "$pgdir"' EXIT
fi

status=0
# No import circles between the modules of any crate (scripts/import-graph.py
# prints each circle with its lines).
python3 scripts/import-graph.py || status=$?
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
  cargo test --workspace --no-fail-fast "$@" || status=$?
fi

chromium=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x "$chromium" ]]; then
  echo "browser tests need Chromium at $chromium (Debian: apt-get install chromium, or set CHROMIUM)" >&2
  exit 1
fi
cargo build -q --workspace --bins
CHROMIUM=$chromium npm run --silent e2e || status=$?
exit "$status"
