#!/usr/bin/env bash
# Runs jsonkv side by side with its references on this machine, over loopback, and writes
# BENCHMARKS.md: the machine, the versions, the exact commands, the figures and the issue's
# targets checked against them.
#
#   bench/compare.sh            the full run (about 40 minutes after the build)
#   bench/compare.sh --smoke    every run for about a second, few watchers, leases and keys,
#                               report to a temp file; exits non-zero if any run fails or
#                               reports an error (CI)
#   --no-etcd                   skip etcd (and its install), and so jsonkv on etcd too
#   --out FILE                  write the report there instead
#   --only live                 only the live-query runs (about 9 minutes at full size, half a
#                               minute with --smoke); the report goes to --out, or to a temp file
#
# It starts everything itself on free loopback ports and stops it on exit: the echo server
# (the transport's limit), jsonkv-server in memory, jsonkv-server durable when its --help offers
# --data-dir, etcd (Debian's etcd-server, installed with apt-get if missing), and two
# jsonkv-servers on one etcd (--etcd). Every load run is the same harness,
# target/release/jsonkv-bench, at the same concurrency (but for the clients patching one key);
# each is bounded by `timeout`. The lease and lock runs use etcd's own lease API as their
# reference, each on a fresh etcd; the transaction runs, etcd's Txn; the HTTP API's runs, etcd's
# JSON gateway (on its client port); the live queries (filtered watches), etcd's own prefix
# watch with the filtering done by the client, as etcd cannot filter values. HTTP/1.1 carries one request at a time on a connection, so
# the HTTP gets and puts open a connection per request in flight: the headline's 64 in flight
# are 64 connections there, where gRPC multiplexes them on one. The HTTP watch fan-out opens a
# connection per watcher, in the harness and in the server: the open-file limit is raised to
# its hard limit for them.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
with_etcd=1
out=""
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --no-etcd) with_etcd=0 ;;
    --out) out="$2"; shift ;;
    --only)
      only="${2:-}"
      [ "$only" = live ] || { echo "--only takes: live" >&2; exit 2; }
      shift
      ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$smoke" = 1 ]; then
  duration=1; warmup=0.3; rounds=1; sweep="1"; fan_watchers=20; fan_rate=200; idle_watchers=200
  wait_budget=0
  run_timeout=60
  # Leases: kept alive, left idle, keys expiring on one lease (TTL: etcd's minimum is 2 s) and
  # fewer keys on one lease for etcd too (see below), keys expiring on a lease each (the TTL
  # outlasts granting them and writing the keys), hand-overs.
  keepalive_leases=100; idle_leases=1000; expiry_keys=1000; expiry_ttl=2; expiry_small=300
  expiry_many=200; expiry_many_ttl=3; handovers=20
  # Live queries: watchers of one filter and their inserts per second, watchers whose filter
  # never matches, documents a filtered List pages through.
  live_watchers=20; live_rate=200; live_cost_watchers=200; live_documents=5000; live_texts=10
  out=${out:-$(mktemp -t jsonkv-benchmarks.XXXXXX.md)}
else
  duration=5; warmup=1; rounds=2; sweep="1 16 256"; fan_watchers=1000; fan_rate=1000
  idle_watchers=10000; wait_budget=300
  run_timeout=180
  keepalive_leases=1000; idle_leases=100000; expiry_keys=100000; expiry_ttl=5; expiry_small=10000
  expiry_many=100000; expiry_many_ttl=45; handovers=200
  live_watchers=1000; live_rate=1000; live_cost_watchers=10000; live_documents=1000000
  live_texts=100
  if [ -n "$only" ]; then
    out=${out:-$(mktemp -t jsonkv-benchmarks.XXXXXX.md)}
  else
    out=${out:-BENCHMARKS.md}
  fi
fi
# --only live: the rounds of every other section run zero times.
main_rounds=$rounds
[ -z "$only" ] || main_rounds=0
# The headline: one connection, 64 requests in flight, for every target.
headline="--connections 1 --concurrency 64"
# Clients patching one key at once.
contenders=100

# Data directories live under target/, on the same disk for jsonkv and etcd (a tmpfs /tmp
# would make fsync free).
mkdir -p target
work=$(mktemp -d -p "$PWD/target" bench-compare.XXXXXX)
results="$work/results"
mkdir -p "$results"
: >"$results/runs"
: >"$work/servers"
# Every server running now, in start order; server_pid is the last one started.
server_pids=()
server_pid=""
failures=0

# Stops every running server, the newest first: jsonkv servers before the etcd they are on.
stop_servers() {
  local i pid
  for ((i = ${#server_pids[@]} - 1; i >= 0; i--)); do
    pid=${server_pids[i]}
    kill -TERM "$pid" 2>/dev/null || true
    # jsonkv and etcd exit promptly on SIGTERM; give them 15 s, then insist.
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  server_pids=()
  server_pid=""
}
cleanup() {
  stop_servers
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The HTTP watch fan-out holds a connection per watcher open, in the harness and the server
# (which inherit this limit); jsonkv-bench says so if the limit is still too low.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Starts one server in the background (its log in $work), noting its command for the report.
# The note gives paths relative to the repository (this script runs from its root): the report
# is committed, and this machine's directories mean nothing on another.
start_server() {
  local name=$1
  shift
  local command="$*"
  command=${command//"$release/"/target/release/}
  echo "${command//"$PWD/"/}" >>"$work/servers"
  "$@" >"$work/$name.log" 2>&1 &
  server_pid=$!
  server_pids+=("$server_pid")
}

# (etcd-client's build script finds its protoc through .cargo/config.toml.)
echo "== building (release)" >&2
cargo build --release -q -p jsonkv-server -p jsonkv-bench
# Where cargo put them: CARGO_TARGET_DIR if set (the report names them target/release/ all the
# same, see start_server).
release=${CARGO_TARGET_DIR:-target}/release
bench=$release/jsonkv-bench
server=$release/jsonkv-server

if [ "$with_etcd" = 1 ] && ! command -v etcd >/dev/null; then
  echo "== installing etcd-server (Debian)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi

# Durable mode exists once the server's --help offers --data-dir; then the in-memory runs ask
# for memory explicitly (--in-memory) and the durable ones fsync every acknowledged write.
server_help=$("$server" --help)
durable=0
memory_flags=()
durable_flags=()
if grep -q -- '--data-dir' <<<"$server_help"; then
  durable=1
  if grep -q -- '--in-memory' <<<"$server_help"; then memory_flags=(--in-memory); fi
  if grep -q -- '--sync' <<<"$server_help"; then durable_flags=(--sync always); fi
fi

# The HTTP API (on the gRPC port by default) is measured once the server's --help offers
# --http-listen: beside gRPC, and gRPC beside a server with it off.
http_api=0
if grep -q -- '--http-listen' <<<"$server_help"; then http_api=1; fi

# A server that caps watches in total (--max-watchers) is told to allow the idle-watchers run
# and the live-query watchers whose filter never matches.
watcher_flags=()
if grep -q -- '--max-watchers ' <<<"$server_help"; then
  most_watchers=$((idle_watchers > live_cost_watchers ? idle_watchers : live_cost_watchers))
  watcher_flags=(--max-watchers $((most_watchers + 1000)))
fi

port() { "$bench" free-port; }

# The first value of "FIELD":NUMBER in a JSON file. (awk reads to the end: under pipefail, a
# `head -1` could kill the writer with SIGPIPE and fail the script.)
first() { grep -o "\"$1\":[0-9.]*" "$2" | awk -F: 'NR == 1 {print $2}'; }

# Runs the harness with a label; its JSON report goes to $results/LABEL.json (LABEL~2.json for
# the label's second round, and so on). A run with reference=1 in its environment measures a
# reference that may fall behind at full size: its missed events are figures in the report, not
# a failure (a smoke run, small enough for any reference, still fails on them).
run() {
  local label=$1
  shift
  local file=$label
  local n=1
  while [ -e "$results/$file.json" ]; do
    n=$((n + 1))
    file="$label~$n"
  done
  local json="$results/$file.json"
  local status=0
  wait_quiet
  timeout --kill-after=10 "$run_timeout" "$bench" --json --quiet --label "$label" "$@" \
    >"$json" 2>"$results/$file.err" || status=$?
  if [ -s "$json" ]; then
    echo "$file" >>"$results/runs"
    local throughput p99 errors
    # The first occurrence of each is the run's own (later ones belong to nested figures).
    throughput=$(first throughput "$json")
    p99=$(first p99_us "$json")
    errors=$(first errors "$json")
    printf '   %-26s %10.0f ops/s  p99 %8.2f ms  %s error(s)\n' \
      "$file" "$throughput" "$(awk "BEGIN{print $p99/1000}")" "$errors" >&2
  else
    echo "$file failed" >>"$results/runs"
  fi
  if [ "$status" = 1 ] && [ -s "$json" ] && [ "${reference:-0}" = 1 ] && [ "$smoke" = 0 ]; then
    echo "   $file: the reference fell behind (its errors are in the report)" >&2
  elif [ "$status" != 0 ]; then
    failures=$((failures + 1))
    echo "   $file: exit status $status" >&2
    tail -n 5 "$results/$file.err" >&2 || true
  fi
}

times=(--duration "$duration" --warmup "$warmup")

# Waits until the CPUs were at least 90% idle for two seconds in a row: client and servers
# share this machine, and anything else running (a build, a test suite) would skew the figures.
# The waiting is bounded (2 minutes for one run, $wait_budget seconds in all); a run that starts
# on a busy machine anyway is counted, and BENCHMARKS.md says how many did. Smoke runs do not
# wait.
waited=0
busy_starts=0
wait_quiet() {
  [ "$smoke" = 0 ] || return 0
  local a b idle total quiet=0 said=0 start=$SECONDS
  while [ $((SECONDS - start)) -lt 120 ]; do
    a=($(awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat))
    sleep 1
    b=($(awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat))
    idle=$((b[0] - a[0]))
    total=$((b[1] - a[1]))
    if [ $((idle * 100)) -ge $((total * 90)) ]; then
      quiet=$((quiet + 1))
      [ "$quiet" -ge 2 ] && return 0
    else
      [ "$said" = 1 ] ||
        echo "   waiting for the machine to be idle (it is $((100 - idle * 100 / total))% busy)" >&2
      said=1
      quiet=0
      [ "$waited" -lt "$wait_budget" ] || break
      waited=$((waited + 1))
    fi
  done
  busy_starts=$((busy_starts + 1))
  echo "   the machine stayed busy; measuring anyway" >&2
}

# Each jsonkv run gets a fresh server (and data directory), so none inherits another's state.
jsonkv_server() {
  local mode=$1
  shift
  p=$(port)
  if [ "$mode" = durable ]; then
    local dir
    dir=$(mktemp -d -p "$work" data.XXXXXX)
    start_server jsonkv "$server" --listen "127.0.0.1:$p" --data-dir "$dir" \
      "${durable_flags[@]}" "$@"
  else
    start_server jsonkv "$server" --listen "127.0.0.1:$p" "${memory_flags[@]}" "$@"
  fi
}

etcd_server() {
  p=$(port)
  local peer
  peer=$(port)
  rm -rf "$work/etcd"
  start_server etcd etcd --name bench --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$p" --advertise-client-urls "http://127.0.0.1:$p" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" --log-level error --logger zap
  # Ready once a put succeeds (the single member must first elect itself).
  for _ in $(seq 100); do
    "$bench" --target etcd --addr "http://127.0.0.1:$p" --workload insert --count 1 --warmup 0 \
      --key-prefix ready/ --quiet >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "   etcd did not accept a put within 20 s (its log: $work/etcd.log)" >&2
}

# jsonkv on etcd: a fresh single-member etcd and two jsonkv servers on it, A and B (their ports
# in $cluster_a and $cluster_b). Ready once each has acknowledged an insert: a jsonkv server on
# etcd acknowledges one only when etcd has it and the server's own view has applied it.
cluster_servers() {
  etcd_server
  local etcd_url="http://127.0.0.1:$p" name
  cluster_a=$(port)
  start_server jsonkv-a "$server" --listen "127.0.0.1:$cluster_a" --etcd "$etcd_url"
  cluster_b=$(port)
  start_server jsonkv-b "$server" --listen "127.0.0.1:$cluster_b" --etcd "$etcd_url"
  for name in a b; do
    local at=cluster_$name
    timeout 30 "$bench" --target jsonkv --addr "http://127.0.0.1:${!at}" --workload insert \
      --count 1 --warmup 0 --key-prefix ready/ --quiet >/dev/null 2>&1 ||
      echo "   jsonkv server $name on etcd did not accept an insert within 30 s (its log: $work/jsonkv-$name.log)" >&2
  done
}

modes=(memory)
[ "$durable" = 1 ] && modes+=(durable)
# The headline runs, in interleaved rounds (the best round of each counts, see BENCHMARKS.md).
for round in $(seq "$main_rounds"); do
  echo "== round $round of $rounds: echo (the empty RPC)" >&2
  p=$(port)
  start_server echo "$bench" echo-server --listen "127.0.0.1:$p"
  run echo --target echo --addr "http://127.0.0.1:$p" --workload get $headline "${times[@]}"
  stop_servers
  for mode in "${modes[@]}"; do
    echo "== round $round of $rounds: jsonkv, $mode" >&2
    # txn and patch beside insert: their targets compare them with etcd-txn and with insert.
    for workload in get insert mixed txn patch; do
      jsonkv_server "$mode"
      run "$mode-$workload" --target jsonkv --addr "http://127.0.0.1:$p" --workload "$workload" \
        $headline "${times[@]}"
      stop_servers
      # The same gRPC run on a server with the HTTP API off, right after it on the default
      # server (the API on the gRPC port): what serving the API costs gRPC, if anything. (With the
      # API off the port is HTTP/2 and gRPC alone, as before there was an API.)
      if [ "$http_api" = 1 ] && [ "$mode" = memory ] && [[ $workload == get || $workload == insert ]]; then
        jsonkv_server memory --http-listen off
        run "memory-$workload-http-off" --target jsonkv --addr "http://127.0.0.1:$p" \
          --workload "$workload" $headline "${times[@]}"
        stop_servers
      fi
    done
  done
  if [ "$http_api" = 1 ]; then
    echo "== round $round of $rounds: jsonkv's HTTP API (in memory)" >&2
    # The headline's requests in flight, each on its own HTTP/1.1 connection (its
    # --connections does not apply).
    for workload in get put; do
      jsonkv_server memory
      run "memory-http-$workload" --target jsonkv --addr "http://127.0.0.1:$p" \
        --workload "http-$workload" $headline "${times[@]}"
      stop_servers
    done
  fi
  if [ "$with_etcd" = 1 ]; then
    echo "== round $round of $rounds: etcd" >&2
    etcd_server
    for workload in get insert mixed txn; do
      label=etcd-$workload
      [ "$workload" = get ] && label=etcd-range
      [ "$workload" = insert ] && label=etcd-put
      run "$label" --target etcd --addr "http://127.0.0.1:$p" --workload "$workload" \
        $headline "${times[@]}"
    done
    # etcd's JSON gateway, the peer of jsonkv's HTTP API.
    for workload in get put; do
      label=etcd-gateway-$workload
      [ "$workload" = get ] && label=etcd-gateway-range
      run "$label" --target etcd --addr "http://127.0.0.1:$p" --workload "http-$workload" \
        $headline "${times[@]}"
    done
    stop_servers
    echo "== round $round of $rounds: jsonkv on etcd (two servers; requests to A)" >&2
    cluster_servers
    for workload in get insert; do
      run "cluster-$workload" --target jsonkv --addr "http://127.0.0.1:$cluster_a" \
        --workload "$workload" $headline "${times[@]}"
    done
    stop_servers
  fi
done

# The other runs, also in rounds.
for round in $(seq "$main_rounds"); do
  if [ "$durable" = 1 ]; then
    echo "== round $round of $rounds: writers in flight, jsonkv durable and etcd" >&2
    for c in $sweep; do
      jsonkv_server durable
      run "sweep-durable-insert-c$c" --target jsonkv --addr "http://127.0.0.1:$p" \
        --workload insert --connections 1 --concurrency "$c" "${times[@]}"
      stop_servers
    done
    if [ "$with_etcd" = 1 ]; then
      etcd_server
      for c in $sweep; do
        run "sweep-etcd-put-c$c" --target etcd --addr "http://127.0.0.1:$p" --workload insert \
          --connections 1 --concurrency "$c" "${times[@]}"
      done
      stop_servers
    fi
  fi

  echo "== round $round of $rounds: clients patching one key, jsonkv" >&2
  for mode in "${modes[@]}"; do
    jsonkv_server "$mode"
    run "$mode-patch-contend" --target jsonkv --addr "http://127.0.0.1:$p" \
      --workload patch-contend --connections 1 --concurrency "$contenders" "${times[@]}"
    stop_servers
  done

  echo "== round $round of $rounds: jsonkv watches (in memory)" >&2
  fanout=(--workload watch-fanout --watchers "$fan_watchers" --rate "$fan_rate" "${times[@]}")
  jsonkv_server memory
  run fanout --target jsonkv --addr "http://127.0.0.1:$p" "${fanout[@]}"
  stop_servers
  jsonkv_server memory
  run fanout-slow --target jsonkv --addr "http://127.0.0.1:$p" "${fanout[@]}" --slow-watchers 1
  stop_servers
  jsonkv_server memory "${watcher_flags[@]}"
  run idle-keys --target jsonkv --addr "http://127.0.0.1:$p" --workload watch-keys \
    --watchers "$idle_watchers" --server-pid "$server_pid" $headline "${times[@]}"
  stop_servers
  # The same fan-out over HTTP: a connection and a stream per watcher (jsonkv: server-sent
  # events; etcd: its gateway's watch), the inserts over gRPC.
  http_fanout=(--workload sse-fanout --watchers "$fan_watchers" --rate "$fan_rate" "${times[@]}")
  if [ "$http_api" = 1 ]; then
    jsonkv_server memory
    run sse-fanout --target jsonkv --addr "http://127.0.0.1:$p" "${http_fanout[@]}"
    stop_servers
  fi
  if [ "$with_etcd" = 1 ]; then
    # etcd's gateway falls behind a thousand watchers long before a thousand changes a second.
    etcd_server
    reference=1 run etcd-gateway-fanout --target etcd --addr "http://127.0.0.1:$p" \
      "${http_fanout[@]}"
    stop_servers
  fi
  if [ "$with_etcd" = 1 ]; then
    echo "== round $round of $rounds: jsonkv on etcd, watchers on B, inserts to A" >&2
    cluster_servers
    run cluster-watch-fanout --target jsonkv --addr "http://127.0.0.1:$cluster_b" \
      --write-addr "http://127.0.0.1:$cluster_a" "${fanout[@]}"
    stop_servers
  fi
done

# Live queries, in rounds too, every run on a fresh server (in memory): one filter's fan-out
# (the same filter text for every watcher: the stage they share on the server), the same
# watchers unfiltered with the filtering done by the client (as with etcd, which cannot filter
# values: also against etcd's own watch), and watchers whose filter never matches beside no
# watcher and one unfiltered watcher (with one filter text, then with several).
live_fanout=(--workload live-fanout --watchers "$live_watchers" --rate "$live_rate" "${times[@]}")
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds: live queries, jsonkv (in memory)" >&2
  jsonkv_server memory
  run live-fanout --target jsonkv --addr "http://127.0.0.1:$p" "${live_fanout[@]}"
  stop_servers
  jsonkv_server memory
  run live-fanout-client --target jsonkv --addr "http://127.0.0.1:$p" "${live_fanout[@]}" \
    --client-filter
  stop_servers
  jsonkv_server memory "${watcher_flags[@]}"
  run live-insert-cost --target jsonkv --addr "http://127.0.0.1:$p" --workload live-insert-cost \
    --watchers "$live_cost_watchers" --server-pid "$server_pid" $headline "${times[@]}"
  stop_servers
  # The same watchers with distinct filter texts (each text a stage of its own, evaluated for
  # every insert): what the shared stage saves.
  jsonkv_server memory "${watcher_flags[@]}"
  run live-insert-cost-texts --target jsonkv --addr "http://127.0.0.1:$p" \
    --workload live-insert-cost --watchers "$live_cost_watchers" --filters "$live_texts" \
    --server-pid "$server_pid" $headline "${times[@]}"
  stop_servers
  if [ "$with_etcd" = 1 ]; then
    echo "== round $round of $rounds: live queries, etcd (filtered by the client)" >&2
    etcd_server
    reference=1 run etcd-live-fanout-client --target etcd --addr "http://127.0.0.1:$p" \
      "${live_fanout[@]}" --client-filter
    stop_servers
  fi
done
# A filtered List through many documents (and the unfiltered one beside it), once: loading a
# million documents takes a while.
echo "== a filtered List through $live_documents documents" >&2
short_timeout=$run_timeout
run_timeout=$((run_timeout + 240))
jsonkv_server memory
run live-list --target jsonkv --addr "http://127.0.0.1:$p" --workload live-list \
  --keys "$live_documents" $headline "${times[@]}"
stop_servers
run_timeout=$short_timeout

# Leases and locks, in rounds too. Every run gets a fresh server: leases granted by one run
# would otherwise expire (or be kept) during the next.
for round in $(seq "$main_rounds"); do
  echo "== round $round of $rounds: leases and locks, jsonkv" >&2
  for mode in "${modes[@]}"; do
    jsonkv_server "$mode"
    run "$mode-lease-grant" --target jsonkv --addr "http://127.0.0.1:$p" --workload lease-grant \
      $headline "${times[@]}"
    stop_servers
  done
  jsonkv_server memory
  run memory-lease-keepalive --target jsonkv --addr "http://127.0.0.1:$p" \
    --workload lease-keepalive --leases "$keepalive_leases" $headline "${times[@]}"
  stop_servers
  # Two servers hold the leases in turn (see jsonkv-bench --help, --other-addr), measured for
  # twice as long as the other runs: the cost sought is smaller than the machine's noise.
  jsonkv_server memory
  holder=$p
  holder_pid=$server_pid
  jsonkv_server memory
  run lease-idle --target jsonkv --addr "http://127.0.0.1:$holder" \
    --other-addr "http://127.0.0.1:$p" --workload lease-idle --leases "$idle_leases" \
    --server-pid "$holder_pid" $headline --duration $((duration * 2)) --warmup "$warmup"
  stop_servers
  jsonkv_server memory
  run memory-lease-expiry --target jsonkv --addr "http://127.0.0.1:$p" --workload lease-expiry \
    --keys "$expiry_keys" --lease-ttl "$expiry_ttl" $headline
  stop_servers
  jsonkv_server memory
  run memory-lease-expiry-small --target jsonkv --addr "http://127.0.0.1:$p" \
    --workload lease-expiry --keys "$expiry_small" --lease-ttl "$expiry_ttl" $headline
  stop_servers
  for mode in "${modes[@]}"; do
    jsonkv_server "$mode"
    run "$mode-lock-handover" --target jsonkv --addr "http://127.0.0.1:$p" \
      --workload lock-handover --count "$handovers"
    stop_servers
  done
  if [ "$with_etcd" = 1 ]; then
    echo "== round $round of $rounds: leases and locks, etcd" >&2
    etcd_server
    run etcd-lease-grant --target etcd --addr "http://127.0.0.1:$p" --workload lease-grant \
      $headline "${times[@]}"
    stop_servers
    etcd_server
    run etcd-lease-keepalive --target etcd --addr "http://127.0.0.1:$p" \
      --workload lease-keepalive --leases "$keepalive_leases" $headline "${times[@]}"
    stop_servers
    # etcd 3.4 applies a put with a lease in time that grows with the keys already on it
    # (etcd issue 15993): the full count of keys on one lease would take it many minutes.
    etcd_server
    run etcd-lease-expiry-small --target etcd --addr "http://127.0.0.1:$p" \
      --workload lease-expiry --keys "$expiry_small" --lease-ttl "$expiry_ttl" $headline
    stop_servers
    etcd_server
    run etcd-lock-handover --target etcd --addr "http://127.0.0.1:$p" \
      --workload lock-handover --count "$handovers"
    stop_servers
  fi
done

# The same expiry with a lease per key, once: etcd ends expired leases a thousand a second, so
# its run takes minutes at full size (jsonkv-bench waits for them, a millisecond a lease).
if [ -z "$only" ]; then
  echo "== keys expiring on a lease each" >&2
  many=(--workload lease-expiry --keys "$expiry_many" --leases "$expiry_many" --lease-ttl "$expiry_many_ttl" $headline)
  short_timeout=$run_timeout
  run_timeout=$((run_timeout + 240))
  jsonkv_server memory
  run memory-lease-expiry-many --target jsonkv --addr "http://127.0.0.1:$p" "${many[@]}"
  stop_servers
  if [ "$with_etcd" = 1 ]; then
    etcd_server
    run etcd-lease-expiry-many --target etcd --addr "http://127.0.0.1:$p" "${many[@]}"
    stop_servers
  fi
  run_timeout=$short_timeout
fi

echo "== writing $out" >&2
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(GIT_OPTIONAL_LOCKS=0 git status --porcelain 2>/dev/null)" ]; then
  rev="$rev (with uncommitted changes)"
fi
versions=(
  --version-line "rustc: $(rustc --version)"
  --version-line "jsonkv: git $rev; $("$server" --version)"
  --version-line "tonic: $(awk -F'"' '/^name = "tonic"$/ {getline; print $2; exit}' Cargo.lock)"
  --version-line "hyper (the HTTP load's client): $(awk -F'"' '/^name = "hyper"$/ {getline; print $2; exit}' Cargo.lock)"
  --version-line "data directories on: $(df -T "$work" | awk 'NR==2 {print $2}') ($(df "$work" | awk 'NR==2 {print $1}'))"
)
if [ "$with_etcd" = 1 ]; then
  versions+=(--version-line "etcd: $(etcd --version | awk 'NR == 1 {print $3}') (Debian etcd-server)")
fi
runs=$(grep -c . "$results/runs" || true)
if [ "$smoke" = 0 ]; then
  versions+=(--version-line "other load: $busy_starts of $runs runs started while something else kept the CPUs over 10% busy (after waiting ${waited} s in all)")
fi
if [ "$durable" = 0 ]; then
  versions+=(--version-line "durable mode: not measured (this jsonkv-server has no --data-dir)")
fi
note=""
if [ "$smoke" = 1 ]; then
  note="**Smoke run**: every figure below comes from about a second of load and few watchers; it only shows that the benchmarks still run."
fi
if [ -n "$only" ]; then
  note="${note:+$note }**Only the $only runs** (\`bench/compare.sh --only $only\`): every other figure and target is not measured here."
fi
"$bench" markdown --results "$results" --out "$out" --servers "$work/servers" --note "$note" \
  "${versions[@]}"
# Each run's command is the harness's own, as it was started: under a CARGO_TARGET_DIR elsewhere
# that names this machine's directories. The report names it target/release/, as the servers.
if [ "$release" != target/release ]; then
  sed -i "s#${release}/#target/release/#g" "$out"
fi
echo "wrote $out" >&2

if [ "$failures" != 0 ]; then
  echo "error: $failures run(s) failed or reported errors" >&2
  exit 1
fi
