#!/usr/bin/env bash
# The one entry point for the polyglot client suites: builds jsonkv-server and the jsonkv CLI
# (or takes $JSONKV_SERVER_BIN, and the CLI beside it or $JSONKV_CLI_BIN), installs what the
# clients need (the Python venv from requirements.txt, `npm ci`), then runs the Python, Node,
# grpcurl and browser (the web console in headless Chromium) suites, each against its own real
# server.
# The Python and Node suites build their package (wheel and sdist; npm tarball) and test it
# installed outside the repository. Nothing is skipped: a missing tool is an error. Exits
# non-zero if anything failed.
set -euo pipefail
CLIENTS=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$CLIENTS")
# Bounds each suite as a whole; the suites bound every call and stream themselves too.
SUITE_TIMEOUT=${SUITE_TIMEOUT:-600}

die() {
  echo "run-tests.sh: $*" >&2
  exit 1
}
need() {
  command -v "$1" >/dev/null || die "$1 is required but not installed"
}
need python3
need node
need npm
need timeout
[[ -x ${CHROMIUM_BIN:-/usr/bin/chromium} ]] || die "Chromium is required (apt-get install chromium, or set CHROMIUM_BIN)"

if [[ -z ${JSONKV_SERVER_BIN:-} ]]; then
  need cargo
  (cd "$ROOT" && cargo build -p jsonkv-server -p jsonkv-client --bin jsonkv-server --bin jsonkv)
  JSONKV_SERVER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/jsonkv-server
fi
[[ -x $JSONKV_SERVER_BIN ]] || die "no server binary at $JSONKV_SERVER_BIN"
export JSONKV_SERVER_BIN

echo "== installing: Python venv (clients/python/.venv), npm ci (clients/node, clients/browser)"
[[ -x $CLIENTS/python/.venv/bin/python ]] || python3 -m venv "$CLIENTS/python/.venv"
"$CLIENTS/python/.venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r "$CLIENTS/python/requirements.txt"
(cd "$CLIENTS/node" && npm ci --no-audit --no-fund)
(cd "$CLIENTS/browser" && npm ci --no-audit --no-fund)

failed=()
for suite in python node grpcurl browser; do
  echo "== $suite"
  timeout "$SUITE_TIMEOUT" "$CLIENTS/$suite/test.sh" || failed+=("$suite")
done

((${#failed[@]} == 0)) || die "FAILED: ${failed[*]}"
echo "run-tests.sh: all client suites passed"
