#!/usr/bin/env bash
# Runs every test of the workspace. Installs the pinned Node tools (the Codex
# CLI) into ./node_modules when missing, and — unless DATABASE_URL names a
# server — starts one private PostgreSQL cluster for the run (each test makes
# and drops its own database in it).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x node_modules/.bin/codex ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi

if [[ -z "${DATABASE_URL:-}" ]]; then
  cargo build -q -p local-postgres
  pgdir=$(mktemp -d)
  DATABASE_URL=$(target/debug/local-postgres start "$pgdir/data")
  export DATABASE_URL
  trap 'target/debug/local-postgres stop "$pgdir/data" || true; rm -rf "$pgdir"' EXIT
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
