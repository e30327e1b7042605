#!/usr/bin/env bash
# Runs the Node client's suite against the real server: starts jsonkv-server on a free port, runs
# `node --test`, stops the server. Needs node_modules (`npm ci`, which ../run-tests.sh runs).
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=../server.sh
source ../server.sh

[[ -d node_modules ]] || { echo "node/test.sh: no node_modules; run npm ci" >&2; exit 1; }
start_server
rc=0
node --test --test-timeout=60000 "${@:-test/}" || rc=$?
stop_server || rc=1
exit "$rc"
