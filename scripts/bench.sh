#!/usr/bin/env bash
# Runs the benchmark suite at full size (docs/BENCHMARKS.md): builds the
# runner, the backend and the bench crate in release mode, then starts a
# private PostgreSQL, the runner (with the fake Codex CLI) and the backend,
# and runs every scenario against the runner alone and the whole stack.
# Arguments go to `bench all` (e.g. `--out results.md`, `--small`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p runner -p backend -p bench
# S3 holds thousands of connections: the client and the servers (which
# inherit this limit) need a descriptor for each.
ulimit -n "$(ulimit -Hn)"
exec "${CARGO_TARGET_DIR:-$PWD/target}/release/bench" all "$@"
