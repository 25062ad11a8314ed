#!/usr/bin/env bash
# Starts repo-runner on this machine: a private PostgreSQL (unless
# DATABASE_URL is set), the runner, the backend, the dashboard, and — without an API key —
# the scripted model that drives the real Codex CLI in demo mode.
# Ctrl-C stops everything it started, the database included; a second start
# reuses the data in .data/.
set -euo pipefail
cd "$(dirname "$0")/.."

data=${DATA_DIR:-$PWD/.data}
mkdir -p "$data/workspaces"
if [[ ! -x node_modules/.bin/codex ]]; then
  npm ci --no-audit --no-fund
fi
cargo build --release -p runner -p backend -p frontend-proxy -p scripted-model -p local-postgres

pids=()
pg_started=""
cleanup() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  if [[ -n "$pg_started" ]]; then target/release/local-postgres stop "$data/postgres" || true; fi
}
trap cleanup EXIT INT TERM

if [[ -z "${DATABASE_URL:-}" ]]; then
  DATABASE_URL=$(target/release/local-postgres start "$data/postgres" "${PG_PORT:-9103}" repo_runner)
  export DATABASE_URL
  pg_started=1
fi

export WORKSPACES_ROOT=${WORKSPACES_ROOT:-$data/workspaces}
export CODEX_BIN=${CODEX_BIN:-$PWD/node_modules/.bin/codex}
if [[ -z "${CODEX_API_KEY:-}${OPENAI_API_KEY:-}" && -z "${RUNNER_CODEX_CONFIG:-}" ]]; then
  echo "demo mode: no CODEX_API_KEY/OPENAI_API_KEY, the scripted model (demo/script.json) drives Codex"
  rm -f "$data/codex-config.toml"
  target/release/scripted-model --script demo/script.json --write-config "$data/codex-config.toml" >/dev/null &
  pids+=($!)
  for _ in $(seq 100); do [[ -f "$data/codex-config.toml" ]] && break; sleep 0.1; done
  [[ -f "$data/codex-config.toml" ]] || { echo "the scripted model did not start" >&2; exit 1; }
  export RUNNER_CODEX_CONFIG=$data/codex-config.toml
fi
target/release/runner &
pids+=($!)
target/release/backend &
pids+=($!)
target/release/frontend-proxy &
pids+=($!)
echo "repo-runner: dashboard http://${PROXY_ADDR:-127.0.0.1:9100} (Ctrl-C to stop)"
wait -n
