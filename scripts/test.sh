#!/usr/bin/env bash
# Runs every test of the workspace. Installs the pinned Node tools (the Codex
# CLI) into ./node_modules first when they are missing or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x node_modules/.bin/codex ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
