#!/usr/bin/env bash
# The one command: starts repo-runner on this machine and prints the
# dashboard's URL. Without DATABASE_URL it creates and starts a private
# PostgreSQL under .data/postgres (TCP logins need the password kept there,
# which its URL carries); without CODEX_API_KEY/OPENAI_API_KEY it
# runs in demo mode, where the scripted model drives the real Codex CLI.
# Ctrl-C stops every process it started, the database included; a second
# start reuses the data in .data/.
#
# Sign-in (AUTH_MODE=token, the default): the first start adds an admin user
# named `admin` with a token kept in $DATA_DIR/admin-token (mode 600), and
# every start prints a fresh sign-in link: a one-time code that works for ten
# minutes (the dashboard asks before it signs in with it). AUTH_MODE=none
# starts without authentication (loopback only).
#
# Optional: PROXY_ADDR, BACKEND_ADDR, RUNNER_ADDR, PG_PORT (default ports
# 9100-9103), PREVIEW_ADDR (default 127.0.0.1:9104), DATA_DIR (default .data), PROFILE (release or debug),
# ALLOW_LOCAL_REPOS, and every variable of .env.example.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "repo-runner: $*" >&2; exit 1; }

export PROXY_ADDR=${PROXY_ADDR:-127.0.0.1:9100}
export PREVIEW_ADDR=${PREVIEW_ADDR:-127.0.0.1:9104}
export BACKEND_ADDR=${BACKEND_ADDR:-127.0.0.1:9101}
export RUNNER_ADDR=${RUNNER_ADDR:-127.0.0.1:9102}
pg_port=${PG_PORT:-9103}
profile=${PROFILE:-release}
# Absolute, whatever DATA_DIR says: the services start elsewhere.
data=$(realpath -m -- "${DATA_DIR:-.data}")

# --- prerequisites and ports: one line each, saying what to do -------------
command -v cargo >/dev/null || fail "Rust is missing: install it from https://rustup.rs"
command -v node >/dev/null && command -v npm >/dev/null || fail "Node.js and npm are missing: install Node 20 (they install the Codex CLI)"
command -v git >/dev/null || fail "git is missing: install git (apt-get install git)"
if [[ -z "${DATABASE_URL:-}" ]] && ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [[ -z "${PG_BIN:-}" ]]; then
  fail "the PostgreSQL server binaries are missing: apt-get install postgresql (or set DATABASE_URL to a server)"
fi
port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for pair in "PROXY_ADDR=$PROXY_ADDR" "PREVIEW_ADDR=$PREVIEW_ADDR" "BACKEND_ADDR=$BACKEND_ADDR" "RUNNER_ADDR=$RUNNER_ADDR"; do
  port_busy "${pair#*=}" && fail "${pair#*=} is already in use: stop what listens there or set ${pair%%=*} to another address"
done
if [[ -z "${DATABASE_URL:-}" && ! -f "$data/postgres/postmaster.pid" ]] && port_busy "127.0.0.1:$pg_port"; then
  fail "port $pg_port (PostgreSQL) is already in use: stop what listens there or set PG_PORT"
fi

# --- build ------------------------------------------------------------------------
mkdir -p "$data/workspaces"
if [[ ! -x node_modules/.bin/codex ]]; then
  echo "installing the Codex CLI (npm ci)…"
  npm ci --no-audit --no-fund --loglevel=error
fi
build_flags=()
[[ "$profile" == release ]] && build_flags+=(--release)
cargo build "${build_flags[@]}" -p runner -p backend -p frontend-proxy -p scripted-model -p local-postgres
bin="${CARGO_TARGET_DIR:-$PWD/target}/$profile"

# --- start ------------------------------------------------------------------------
pids=()
pg_started=""
cleanup() {
  trap - EXIT INT TERM
  echo "repo-runner: stopping…"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  if [[ -n "$pg_started" ]]; then "$bin/local-postgres" stop "$data/postgres" || true; fi
}
trap cleanup EXIT INT TERM

if [[ -z "${DATABASE_URL:-}" ]]; then
  DATABASE_URL=$("$bin/local-postgres" start "$data/postgres" "$pg_port" repo_runner)
  export DATABASE_URL
  pg_started=1
fi

export WORKSPACES_ROOT=${WORKSPACES_ROOT:-$data/workspaces}
export RUNNER_CODEX_HOMES=${RUNNER_CODEX_HOMES:-$data/codex-homes}
export CODEX_BIN=${CODEX_BIN:-$PWD/node_modules/.bin/codex}
# The data folder (the database's files, the sign-in tokens) is hidden from
# every agent's commands, but for the session's own folder and home.
export RUNNER_HIDDEN_PATHS=${RUNNER_HIDDEN_PATHS:-$data}
# Nor may a local clone (ALLOW_LOCAL_REPOS=true) read the data folder or the
# homes; the workspaces are always refused.
export BACKEND_FORBIDDEN_CLONE_PATHS=${BACKEND_FORBIDDEN_CLONE_PATHS:-$data,$RUNNER_CODEX_HOMES}
# A stack for one person on their own machine: what they approve runs as
# they would run it themselves (the CLI carries an approved action out
# outside its sandbox, as the user this script runs as). A runner shared by
# several people leaves this off, and approvals are then declined (see
# docs/SECURITY.md); RUNNER_ALLOW_UNSANDBOXED_APPROVALS=false does that here.
export RUNNER_ALLOW_UNSANDBOXED_APPROVALS=${RUNNER_ALLOW_UNSANDBOXED_APPROVALS:-true}
# Kept tokens (sessions created with keep_token, for pushes and pull
# requests) are sealed with this key; it is kept in the data folder, so they
# still open after a restart.
if [[ -z "${BACKEND_SECRET_KEY:-}" ]]; then
  if [[ ! -s "$data/secret-key" ]]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$data/secret-key")
  fi
  BACKEND_SECRET_KEY=$(cat "$data/secret-key")
  export BACKEND_SECRET_KEY
fi
export RUNNER_URL=${RUNNER_URL:-http://$RUNNER_ADDR}
# The runner answers only the backend: a fresh token for each start unless
# one is given.
export RUNNER_TOKEN=${RUNNER_TOKEN:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}
export BACKEND_URL=${BACKEND_URL:-http://$BACKEND_ADDR}
export DEMO_MODE=false
if [[ -z "${CODEX_API_KEY:-}${OPENAI_API_KEY:-}" && -z "${RUNNER_CODEX_CONFIG:-}" ]]; then
  echo "repo-runner: DEMO MODE — no CODEX_API_KEY/OPENAI_API_KEY: a scripted model (demo/script.json) drives the real Codex CLI"
  export DEMO_MODE=true
  rm -f "$data/codex-config.toml"
  # DEMO_PACE scales the script's pauses (0: none, for tests; 1: like an agent).
  "$bin/scripted-model" --script "$PWD/demo/script.json" --pace "${DEMO_PACE:-1}" \
    --write-config "$data/codex-config.toml" >/dev/null &
  pids+=($!)
  for _ in $(seq 100); do [[ -f "$data/codex-config.toml" ]] && break; sleep 0.1; done
  [[ -f "$data/codex-config.toml" ]] || fail "the scripted model did not start"
  export RUNNER_CODEX_CONFIG=$data/codex-config.toml
fi
export AUTH_MODE=${AUTH_MODE:-token}
signin_link=""
if [[ "$AUTH_MODE" == token ]]; then
  admin() { RUST_LOG=warn "$bin/backend" admin "$@"; }
  # A kept token is used only while it still signs someone in (a fresh
  # database knows no token).
  live_token() { [[ -s "$1" ]] && admin token check <"$1" >/dev/null 2>&1; }
  new_token() { (umask 077 && admin token create "$2" >"$1"); }
  first_admin() { admin user list | awk 'NR > 1 && $3 == "admin" { print $2; exit }'; }
  if ! live_token "$data/admin-token"; then
    [[ -n "$(first_admin)" ]] || admin user add admin --admin >/dev/null
    new_token "$data/admin-token" "$(first_admin)"
  fi
  signed_in_as=$(admin token check <"$data/admin-token")
  # Previews read each session with a grant the dashboard asks for. The
  # token an older start kept for them goes: with its one copy gone nobody
  # can use it (the database holds its hash alone).
  rm -f "$data/preview-token"
  # The link carries a one-time code (10 minutes), never the token: the
  # token stays in $data/admin-token, to paste on the sign-in page.
  signin_link=$(admin signin-link "$signed_in_as" --url "http://$PROXY_ADDR/")
fi
# Only the backend gets the database's URL (it carries the password) and the
# secret key.
env -u DATABASE_URL -u BACKEND_SECRET_KEY "$bin/runner" &
pids+=($!)
"$bin/backend" &
pids+=($!)
env -u DATABASE_URL -u BACKEND_SECRET_KEY "$bin/frontend-proxy" &
pids+=($!)
for _ in $(seq 300); do port_busy "$PROXY_ADDR" && port_busy "$BACKEND_ADDR" && break; sleep 0.1; done
echo "repo-runner: dashboard at http://$PROXY_ADDR (Ctrl-C to stop)"
if [[ -n "$signin_link" ]]; then
  echo "repo-runner: sign in as $signed_in_as (keep this link to yourself; it works once, for 10 minutes): $signin_link"
  if [[ -n "$pg_started" ]]; then
    # The database's URL carries its password: the command finds it anew
    # rather than have it printed.
    db="DATABASE_URL=\$('$bin/local-postgres' start '$data/postgres' $pg_port repo_runner)"
  else
    db="DATABASE_URL=…"
  fi
  echo "repo-runner: another link (while this runs): $db '$bin/backend' admin signin-link $signed_in_as --url http://$PROXY_ADDR/"
  echo "repo-runner: or paste the token kept in $data/admin-token on the sign-in page"
  echo "repo-runner: more users and tokens: $bin/backend admin --help"
fi
echo "repo-runner: previews of the workspaces at http://$PREVIEW_ADDR (the dashboard's Preview tab)"
wait -n "${pids[@]}"
