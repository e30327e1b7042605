# shellcheck shell=bash
# Starts and stops the real jsonkv-server for one client test suite. Source it from bash, then:
#   start_server   # sets JSONKV_ADDR (127.0.0.1:<free port>) and traps EXIT to stop the server
#   stop_server    # SIGTERM, then fails unless the server exits 0 within the time allowed
# The binary is $JSONKV_SERVER_BIN, or target/debug/jsonkv-server of this repository.

if [[ -z ${JSONKV_SERVER_BIN:-} ]]; then
  JSONKV_SERVER_BIN=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/debug/jsonkv-server
fi
JSONKV_START_TIMEOUT=${JSONKV_START_TIMEOUT:-30}
JSONKV_STOP_TIMEOUT=${JSONKV_STOP_TIMEOUT:-15}
JSONKV_SERVER_PID=
JSONKV_SERVER_LOG=

free_port() {
  python3 -c '
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])'
}

# The port from free_port may be taken again before the server binds it, so a server that exits
# during start-up is retried on another port, a few times.
start_server() {
  if [[ ! -x $JSONKV_SERVER_BIN ]]; then
    echo "server.sh: no server binary at $JSONKV_SERVER_BIN" >&2
    return 1
  fi
  JSONKV_SERVER_LOG=$(mktemp -t jsonkv-server.XXXXXX.log)
  # The suites run against the durable (default) mode, in a data dir of their own.
  JSONKV_DATA_DIR=$(mktemp -d -t jsonkv-data.XXXXXX)
  trap stop_server EXIT
  for _ in 1 2 3; do
    local port
    port=$(free_port)
    JSONKV_ADDR=127.0.0.1:$port
    "$JSONKV_SERVER_BIN" --listen "$JSONKV_ADDR" --data-dir "$JSONKV_DATA_DIR" >>"$JSONKV_SERVER_LOG" 2>&1 &
    JSONKV_SERVER_PID=$!
    if wait_listening "$port"; then
      export JSONKV_ADDR
      echo "server.sh: jsonkv-server (pid $JSONKV_SERVER_PID) listening on $JSONKV_ADDR"
      return 0
    fi
    stop_server >/dev/null 2>&1 || true
  done
  echo "server.sh: jsonkv-server did not start; its log:" >&2
  cat "$JSONKV_SERVER_LOG" >&2
  return 1
}

# Succeeds once the port accepts TCP connections; fails if the server exits or the time runs out.
wait_listening() {
  local deadline=$((SECONDS + JSONKV_START_TIMEOUT))
  while ((SECONDS < deadline)); do
    kill -0 "$JSONKV_SERVER_PID" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# The contract says the server exits 0 on SIGTERM, so anything else fails the suite.
stop_server() {
  local pid=$JSONKV_SERVER_PID
  [[ -n $pid ]] || return 0
  JSONKV_SERVER_PID=
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + JSONKV_STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "server.sh: jsonkv-server ignored SIGTERM for ${JSONKV_STOP_TIMEOUT}s and was killed" >&2
    return 1
  fi
  local rc=0
  wait "$pid" || rc=$?
  if ((rc != 0)); then
    echo "server.sh: jsonkv-server exited $rc after SIGTERM (want 0); its log:" >&2
    tail -n 40 "$JSONKV_SERVER_LOG" >&2
    return 1
  fi
  rm -f "$JSONKV_SERVER_LOG"
  rm -rf "$JSONKV_DATA_DIR"
}
