#!/usr/bin/env bash
# Runs the web console's browser suite: headless Chromium (driven by playwright-core) against the
# real jsonkv-server, with the `jsonkv` CLI as the other client. Starts one server for the suite;
# the tests that restart a server or need tokens start their own. Needs node_modules (`npm ci`)
# and Chromium ($CHROMIUM_BIN, default /usr/bin/chromium; Debian's `chromium` package).
# UPDATE_DOCS_SCREENSHOT=1 also refreshes docs/console.png.
# JSONKV_CONSOLE_DIR=DIR (such as ../../server/console) serves the console's files from DIR instead of
# the copy embedded in the server binary, to try console changes without rebuilding the server.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=../server.sh
source ../server.sh

export CHROMIUM_BIN=${CHROMIUM_BIN:-/usr/bin/chromium}
[[ -x $CHROMIUM_BIN ]] || { echo "browser/test.sh: no Chromium at $CHROMIUM_BIN (apt-get install chromium, or set CHROMIUM_BIN)" >&2; exit 1; }
[[ -d node_modules/playwright-core ]] || { echo "browser/test.sh: no node_modules; run npm ci" >&2; exit 1; }
export JSONKV_CLI_BIN=${JSONKV_CLI_BIN:-$(dirname "$JSONKV_SERVER_BIN")/jsonkv}
[[ -x $JSONKV_CLI_BIN ]] || { echo "browser/test.sh: no jsonkv CLI at $JSONKV_CLI_BIN; set JSONKV_CLI_BIN" >&2; exit 1; }
export JSONKV_SERVER_BIN

start_server
rc=0
node --test --test-timeout=120000 "${@:-test/console.test.js}" || rc=$?
stop_server || rc=1
exit "$rc"
