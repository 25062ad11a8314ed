#!/bin/sh
# Without an API key the runner starts in demo mode: the scripted model
# (the offline stand-in for a hosted model) drives the real Codex CLI.
set -eu
if [ -z "${CODEX_API_KEY:-}${OPENAI_API_KEY:-}" ] && [ -z "${RUNNER_CODEX_CONFIG:-}" ]; then
  echo "runner: DEMO MODE: no CODEX_API_KEY/OPENAI_API_KEY, a scripted model drives the Codex CLI" >&2
  rm -f /tmp/codex-config.toml
  scripted-model --script /opt/repo-runner/demo/script.json --write-config /tmp/codex-config.toml >/dev/null &
  while [ ! -f /tmp/codex-config.toml ]; do sleep 0.1; done
  export RUNNER_CODEX_CONFIG=/tmp/codex-config.toml
fi
exec runner
