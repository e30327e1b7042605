#!/usr/bin/env bash
# Runs the Python client's suite against the real server: regenerates the stubs from the proto,
# starts jsonkv-server on a free port, runs pytest, stops the server. Needs .venv (see
# ../run-tests.sh, which creates it from requirements.txt).
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=../server.sh
source ../server.sh

[[ -x .venv/bin/python ]] || { echo "python/test.sh: no .venv; run ../run-tests.sh" >&2; exit 1; }
.venv/bin/python gen_stubs.py
start_server
rc=0
.venv/bin/python -m pytest "$@" || rc=$?
stop_server || rc=1
exit "$rc"
