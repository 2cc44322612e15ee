#!/usr/bin/env bash
# Bazar's benchmark matrix, side by side with etcd and an HTTP ceiling, on
# this machine, in one run; writes docs/benchmarks.md and docs/bench/*.svg.
#
#   scripts/bench.sh                 the full matrix (3 rounds; about 20 minutes)
#   scripts/bench.sh --quick         1 round, 1 and 64 clients, short runs; writes
#                                    to target/bench-quick/ unless --out is given
#
# Options:
#   --out DIR        where benchmarks.md and bench/ go (default: docs)
#   --no-etcd        skip the etcd baseline
#   --no-million     skip the 1,000,000-book cluster (memory and lookups)
#   --profile        also record perf profiles of buys and linearizable lookups
#                    on the leader (needs perf; flamegraphs need inferno)
#   --no-build       use the binaries in target/release as they are
#   --no-wrk         skip the wrk cross-check of the headline ratios
#   --no-rtt         skip the runs over links with a set round-trip time
#
# Environment (defaults in brackets):
#   BENCH_PORT_BASE [7600]  nodes on BASE+1..3, frontend BASE+80, no-cache frontend
#                           BASE+81, ceiling BASE+90, etcd clients BASE+201..203 and
#                           peers BASE+211..213, 1M-book cluster BASE+101..103 / BASE+180
#   BENCH_ROUNDS [3]  BENCH_CLIENTS [1,8,64,256]  BENCH_DURATION [3s]  BENCH_WARMUP [1s]
#   BENCH_RTTS [1ms,10ms; --quick: 1ms]  round-trip times of the RTT runs
#
# What it does: builds the release binaries; starts a 3-node Bazar cluster and
# its frontend (scripts/cluster.sh, in a temporary data folder), a no-cache
# frontend, the trivial `bench-ceiling` server and a 3-member etcd (installing
# Debian's etcd-server with apt when missing and root; otherwise etcd is
# skipped with a message); runs every scenario ROUNDS times, interleaved, with
# `bazar bench`; runs buys and etcd puts in an open loop at half their closed
# loops' rates, noting how busy the CPUs were;
# repeats the headline scenarios with `wrk` (installed with apt when missing
# and root) as a cross-check; runs buys and etcd puts again with a set
# round-trip time between the members (fresh clusters behind `bench-delay`
# relays); merges the rounds into medians; measures resident memory;
# writes the tables, ratios and plots between the markers of benchmarks.md
# (the prose around them is kept); and stops everything it started, by PID.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
BIN="$ROOT/target/release"
BAZAR="$BIN/bazar"

QUICK=0 ETCD=1 MILLION=1 PROFILE=0 BUILD=1 WRK=1 RTT=1 OUT=""
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-etcd) ETCD=0 ;;
    --no-million) MILLION=0 ;;
    --profile) PROFILE=1 ;;
    --no-build) BUILD=0 ;;
    --no-wrk) WRK=0 ;;
    --no-rtt) RTT=0 ;;
    --out) OUT="${2:?--out needs a folder}"; shift ;;
    -h | --help) print_usage "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PORT_BASE="${BENCH_PORT_BASE:-7600}"
if ((QUICK)); then
  ROUNDS="${BENCH_ROUNDS:-1}" CLIENTS="${BENCH_CLIENTS:-1,64}"
  DURATION="${BENCH_DURATION:-2s}" WARMUP="${BENCH_WARMUP:-1s}"
  RTTS="${BENCH_RTTS:-1ms}"
  OUT="${OUT:-$ROOT/target/bench-quick}"
else
  ROUNDS="${BENCH_ROUNDS:-3}" CLIENTS="${BENCH_CLIENTS:-1,8,64,256}"
  DURATION="${BENCH_DURATION:-3s}" WARMUP="${BENCH_WARMUP:-1s}"
  RTTS="${BENCH_RTTS:-1ms,10ms}"
  OUT="${OUT:-$ROOT/docs}"
fi
DOC="$OUT/benchmarks.md"
ASSETS="$OUT/bench"
RESULTS="$ASSETS/results"

say() { echo "bench.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# ---- what we start, and how it all stops --------------------------------

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bazar-bench.XXXXXX")"
RAW="$WORK/raw"
mkdir -p "$RAW"
PIDS=()      # processes started here directly
CLUSTERS=()  # data folders of clusters started with cluster.sh

# Starts a background process in its own session; remembers its PID in $LAST_PID.
start_bg() {
  local log="$1"; shift
  setsid "$@" >"$log" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# Stops a process started here and forgets it (its PID may be reused later).
stop_started() {
  local pid="$1" p kept=()
  stop_pid "$pid"
  for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

stop_pid() {
  local pid="$1" t
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((t = 0; t < 50; t++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cluster() { # DATA PORT_BASE FRONTEND_ADDR cluster.sh-args...
  local data="$1" base="$2" fe="$3"; shift 3
  BAZAR_DATA="$data" BAZAR_PORT_BASE="$base" BAZAR_FRONTEND_ADDR="$fe" "$ROOT/scripts/cluster.sh" "$@"
}

cleanup() {
  local rc=$? pid c
  trap - EXIT INT TERM
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
  for c in "${CLUSTERS[@]+"${CLUSTERS[@]}"}"; do
    IFS='|' read -r data base fe <<<"$c"
    cluster "$data" "$base" "$fe" down >/dev/null 2>&1 || true
  done
  if [[ -n "${KEEP_WORK:-}" ]]; then
    say "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- prerequisites ------------------------------------------------------

apt_install() {
  [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; }
}

for tool in curl jq; do
  command -v "$tool" >/dev/null || apt_install "$tool" || die "$tool is required (Debian/Ubuntu: apt-get install $tool)"
done

# An optional tool: TOOL PACKAGE WHAT. Installs Debian's PACKAGE when TOOL is
# missing (root only); when that fails, prints why WHAT is skipped and fails.
need_tool() {
  command -v "$1" >/dev/null && return 0
  say "$1 is missing: installing Debian's $2"
  apt_install "$2" || true
  command -v "$1" >/dev/null && return 0
  echo "$3 was skipped: $1 is not installed and could not be installed (needs root and apt: \`apt-get install $2\`)."
  return 1
}

if ((BUILD)); then
  ensure_cargo || exit 1
  ensure_libclang || exit 1
  say "building release binaries"
  (cd "$ROOT" && cargo build --release --bins) || die "the build failed"
fi
for b in raft-node bazar bench-ceiling bench-delay; do
  [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing (run without --no-build)"
done
HAVE_FRONTEND=0
[[ -x "$BIN/frontend" ]] && HAVE_FRONTEND=1

# The code measured: read before this run writes its own results, which are
# not the code (and would always make the tree look changed).
GIT_REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
GIT_DIRTY=""
if [[ -n "$(cd "$ROOT" && git status --porcelain -- . ':!docs/bench' ':!docs/benchmarks.md' 2>/dev/null)" ]]; then
  GIT_DIRTY=", with uncommitted changes"
fi
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
NCPU="$(nproc)"
if awk -v l="${LOAD_BEFORE%% *}" -v n="$NCPU" 'BEGIN { exit !(l > n / 2) }'; then
  say "warning: load average is $LOAD_BEFORE on $NCPU CPUs: other work will distort the numbers"
fi

# ---- the Bazar cluster --------------------------------------------------

BZ_DATA="$WORK/bazar"
FE_ADDR="127.0.0.1:$((PORT_BASE + 80))"
FE_NC_ADDR="127.0.0.1:$((PORT_BASE + 81))"
NODE_ADDRS=("127.0.0.1:$((PORT_BASE + 1))" "127.0.0.1:$((PORT_BASE + 2))" "127.0.0.1:$((PORT_BASE + 3))")
NODES_CSV="$(IFS=,; echo "${NODE_ADDRS[*]}")"
NODES_ARG="1=${NODE_ADDRS[0]},2=${NODE_ADDRS[1]},3=${NODE_ADDRS[2]}"

say "starting a Bazar cluster in $BZ_DATA"
CLUSTERS+=("$BZ_DATA|$PORT_BASE|$FE_ADDR")
cluster "$BZ_DATA" "$PORT_BASE" "$FE_ADDR" up >"$WORK/cluster-up.log" 2>&1 \
  || { cat "$WORK/cluster-up.log" >&2; die "the Bazar cluster did not start"; }

node_pid() { cat "$BZ_DATA/node-$1.pid"; }
leader_id() { # NODE_ADDR GROUP -> the id of the node leading GROUP as NODE_ADDR sees it (1 when unknown)
  local id
  id="$(curl -fsS --max-time 2 "http://$1/health" 2>/dev/null | jq -r ".leaders.$2 // empty" 2>/dev/null || true)"
  [[ "$id" =~ ^[0-9]+$ ]] || id=1
  echo "$id"
}
leader_of() { # GROUP -> address of the node leading it as node 1 sees it (node 1 when unknown)
  echo "127.0.0.1:$((PORT_BASE + $(leader_id "${NODE_ADDRS[0]}" "$1")))"
}

if ((HAVE_FRONTEND)); then
  FE="$FE_ADDR"
  FE_NOTE="through the frontend ($FE_ADDR)"
else
  FE="$NODES_CSV"
  FE_NOTE="**no frontend built: straight to the three nodes** (\`cached\` reads a node's local replica)"
  say "no frontend binary: reads go straight to the nodes, and the no-cache scenarios are skipped"
fi

stop_frontend() {
  local f="$BZ_DATA/frontend.pid"
  [[ -f "$f" ]] || return 0
  stop_pid "$(cat "$f")"
  rm -f "$f"
}
start_frontend() { cluster "$BZ_DATA" "$PORT_BASE" "$FE_ADDR" up >>"$WORK/cluster-up.log" 2>&1 || die "the frontend did not restart"; }
NC_PID=""
start_nocache_frontend() {
  BAZAR_FRONTEND_TOKEN="$(sed -n 's/^BAZAR_FRONTEND_TOKEN=//p' "$BZ_DATA/tokens.env" | tail -n 1)" \
    start_bg "$WORK/frontend-nocache.log" "$BIN/frontend" --listen "$FE_NC_ADDR" --nodes "$NODES_ARG" --no-cache
  NC_PID="$LAST_PID"
  local t
  for ((t = 0; t < 100; t++)); do
    curl -fsS --max-time 1 "http://$FE_NC_ADDR/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "the no-cache frontend did not start (see $WORK/frontend-nocache.log)"
}
HAVE_NOCACHE=0
if ((HAVE_FRONTEND)) && "$BIN/frontend" --help 2>/dev/null | grep -c -- '--no-cache' >/dev/null; then
  HAVE_NOCACHE=1
fi

# ---- the HTTP ceiling ---------------------------------------------------

CEIL_ADDR="127.0.0.1:$((PORT_BASE + 90))"
start_bg "$WORK/ceiling.log" "$BIN/bench-ceiling" --listen "$CEIL_ADDR"
CEIL_PID="$LAST_PID"

# ---- etcd ---------------------------------------------------------------

# A 3-member etcd: NAME DIR CLIENT_BASE PEER_BASE [HOST_PREFIX]. Member i
# (named NAME<i>, data in DIR-<i>, log DIR-<i>.log) listens on
# 127.0.0.1:(CLIENT_BASE+i) for clients and :(PEER_BASE+i) for peers, and
# advertises both ports on HOST_PREFIX<i> (a relay's address) when given,
# else on 127.0.0.1. Sets STARTED_ETCD (PIDs) and STARTED_ETCD_URLS (the
# advertised client URLs).
start_etcd() {
  local name="$1" dir="$2" cb="$3" pb="$4" prefix="${5:-}" i members="" hosts=()
  for i in 1 2 3; do
    if [[ -n "$prefix" ]]; then hosts[i]="$prefix$i"; else hosts[i]=127.0.0.1; fi
    members+="${members:+,}$name$i=http://${hosts[i]}:$((pb + i))"
  done
  STARTED_ETCD=() STARTED_ETCD_URLS=()
  for i in 1 2 3; do
    STARTED_ETCD_URLS+=("http://${hosts[i]}:$((cb + i))")
    start_bg "$dir-$i.log" etcd --name "$name$i" --data-dir "$dir-$i" \
      --listen-client-urls "http://127.0.0.1:$((cb + i))" --advertise-client-urls "http://${hosts[i]}:$((cb + i))" \
      --listen-peer-urls "http://127.0.0.1:$((pb + i))" --initial-advertise-peer-urls "http://${hosts[i]}:$((pb + i))" \
      --initial-cluster "$members" --initial-cluster-state new --initial-cluster-token "bazar-bench-$name" \
      --logger zap --log-level warn
    STARTED_ETCD+=("$LAST_PID")
  done
}
# Prints which member (1-3) of the etcd at CLIENT_BASE leads, asking each on
# its own port, once one does; fails after 30 s without a leader.
etcd_leader() {
  local t i s
  for ((t = 0; t < 300; t++)); do
    for i in 1 2 3; do
      s="$(curl -fsS --max-time 1 -X POST "http://127.0.0.1:$(($1 + i))/v3/maintenance/status" -d '{}' 2>/dev/null || true)"
      if [[ -n "$s" ]] && jq -e '.leader != null and .leader != "0" and .header.member_id == .leader' <<<"$s" >/dev/null 2>&1; then
        echo "$i"
        return 0
      fi
    done
    sleep 0.1
  done
  return 1
}

ETCD_NOTE=""
ETCD_PIDS=()
ETCD_URLS=()
if ((!ETCD)); then
  ETCD_NOTE="etcd was skipped (--no-etcd)."
elif ! ETCD_NOTE="$(need_tool etcd etcd-server etcd)"; then
  ETCD=0
  say "$ETCD_NOTE"
fi
if ((ETCD)); then
  ETCD_VERSION="$(etcd --version 2>/dev/null | sed -n '1s/^etcd Version: //p')"
  start_etcd e "$WORK/etcd" $((PORT_BASE + 200)) $((PORT_BASE + 210))
  ETCD_PIDS=("${STARTED_ETCD[@]}") ETCD_URLS=("${STARTED_ETCD_URLS[@]}")
  ETCD_LEADER=""
  if i="$(etcd_leader $((PORT_BASE + 200)))"; then ETCD_LEADER="${ETCD_URLS[i - 1]}"; fi
  if [[ -z "$ETCD_LEADER" ]]; then
    ETCD=0
    ETCD_NOTE="etcd was skipped: the 3-member cluster elected no leader within 30 s (logs were in $WORK/etcd-*.log)."
    say "$ETCD_NOTE"
    for pid in "${ETCD_PIDS[@]}"; do stop_started "$pid"; done
  else
    ETCD_CSV="$(IFS=,; echo "${ETCD_URLS[*]}")"
    say "etcd $ETCD_VERSION is up; leader $ETCD_LEADER"
  fi
fi

# ---- memory, idle -------------------------------------------------------

rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "-"; }
MEM_ROWS=()
mem_row() { MEM_ROWS+=("| $1 | $2 | $3 |"); } # what, when, MB
for i in 1 2 3; do mem_row "raft-node $i (7 books)" "idle, after start" "$(rss_mb "$(node_pid "$i")")"; done
((HAVE_FRONTEND)) && mem_row "frontend" "idle, after start" "$(rss_mb "$(cat "$BZ_DATA/frontend.pid")")"

# ---- the matrix ---------------------------------------------------------

# Sets ARGS to the `bazar bench` arguments of a scenario.
scenario_args() {
  case "$1" in
    lookup-cached) ARGS=(--endpoints "$FE" --mix lookup=100 --consistency cached) ;;
    search-cached) ARGS=(--endpoints "$FE" --mix search=100 --consistency cached) ;;
    lookup-lease) ARGS=(--endpoints "$FE" --mix lookup=100 --consistency lease) ;;
    lookup-linearizable) ARGS=(--endpoints "$FE" --mix lookup=100 --consistency linearizable) ;;
    lookup-linearizable-nodes) ARGS=(--endpoints "$NODES_CSV" --mix lookup=100 --consistency linearizable) ;;
    buy) ARGS=(--endpoints "$FE" --mix buy=100) ;;
    buy-leader) ARGS=(--endpoints "$(leader_of orders)" --mix buy=100) ;;
    lookup-after-buy) ARGS=(--endpoints "$FE" --mix lookup_after_buy=100 --consistency cached) ;;
    lookup-nocache) ARGS=(--endpoints "$FE_NC_ADDR" --mix lookup=100 --consistency cached) ;;
    search-nocache) ARGS=(--endpoints "$FE_NC_ADDR" --mix search=100 --consistency cached) ;;
    buy-nocache) ARGS=(--endpoints "$FE_NC_ADDR" --mix buy=100) ;;
    ceiling) ARGS=(--target http-get --url "http://$CEIL_ADDR/books/{id}") ;;
    etcd-put) ARGS=(--target etcd-put --endpoints "$ETCD_LEADER") ;;
    etcd-range-linearizable) ARGS=(--target etcd-range-linearizable --endpoints "$ETCD_CSV") ;;
    etcd-range-serializable) ARGS=(--target etcd-range-serializable --endpoints "$ETCD_CSV") ;;
    *) die "unknown scenario $1" ;;
  esac
}

# With the caching frontend running (phase A), with only the no-cache
# frontend (phase B: no change streams at all), then the baselines.
PHASE_A=(lookup-cached search-cached lookup-lease lookup-linearizable lookup-linearizable-nodes buy buy-leader lookup-after-buy)
PHASE_B=()
((HAVE_NOCACHE)) && PHASE_B=(lookup-nocache search-nocache buy-nocache)
BASELINES=(ceiling)
((ETCD)) && BASELINES+=(etcd-range-serializable etcd-range-linearizable etcd-put)

FAILED=()
run_scenario() { # NAME ROUND
  local name="$1" round="$2"
  scenario_args "$name"
  say "round $round/$ROUNDS: $name"
  cpu_mark
  if ! "$BAZAR" --data "$BZ_DATA" --timeout 10 bench --clients "$CLIENTS" --duration "$DURATION" --warmup "$WARMUP" \
    --label "$name" --out "$RAW/$name.r$round.json" "${ARGS[@]}" >"$RAW/$name.r$round.txt" 2>&1; then
    say "warning: $name failed in round $round:"
    tail -n 5 "$RAW/$name.r$round.txt" >&2
    FAILED+=("$name (round $round)")
  fi
  BUSY["$name.r$round"]="$(cpu_busy)"
}

# The machine's CPU use while a command runs: `cpu_mark` before it, then
# `cpu_busy` prints the share of all CPUs that was busy since (from the
# first line of /proc/stat; idle and iowait count as idle), in percent.
CPU_MARK=""
cpu_mark() { CPU_MARK="$(awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t; exit }' /proc/stat)"; }
cpu_busy() {
  awk -v mark="$CPU_MARK" '/^cpu / {
    split(mark, m, " "); t = 0; for (i = 2; i <= NF; i++) t += $i
    dt = t - m[2]; di = $5 + $6 - m[1]
    if (dt > 0) printf "%.0f", 100 * (dt - di) / dt; else printf "-"
    exit }' /proc/stat
}
declare -A BUSY=()   # "NAME.rROUND" -> % of all CPUs busy during that closed-loop run

# Open loop: 64 clients at half the rate the round's closed loop reached at
# 64 clients, latency from when each request was due. Bazar's buys through
# the frontend, and etcd's puts to its leader the same way, so that the
# goal's ratio can be read against what etcd does on the same machine.
OPEN_CLIENTS=64
OPEN_ROWS=()   # system|round|closed req/s|closed p50 us|closed p99 us|closed busy %|rate|p50 us|p90 us|p99 us|open busy %|note
# Median over the rounds of SYSTEM's open-loop p99 ÷ p50 (empty if none).
open_ratio() {
  printf '%s\n' "${OPEN_ROWS[@]}" | awk -F'|' -v s="$1" '$1 == s && $8 > 0 { printf "%.2f\n", $10 / $8 }' | median
}
open_loop_round() { # ROUND NAME (buy or etcd-put)
  local round="$1" name="$2" closed="$RAW/$2.r$1.json" out="$RAW/$2-open.r$1.json" rate system
  [[ -f "$closed" ]] || return 0
  case "$name" in buy) system=Bazar ;; *) system=etcd ;; esac
  rate="$(jq -r --argjson c "$OPEN_CLIENTS" '[.levels[] | select(.clients == $c)][0].throughput // empty' "$closed")"
  if [[ -z "$rate" ]]; then
    say "open loop of $name skipped in round $round: the closed loop did not run $OPEN_CLIENTS clients"
    return 0
  fi
  rate="$(awk -v r="$rate" 'BEGIN { printf "%d", r / 2 }')"
  ((rate > 0)) || return 0
  scenario_args "$name"
  say "round $round/$ROUNDS: $name, open loop at $rate/s ($OPEN_CLIENTS clients)"
  cpu_mark
  if ! "$BAZAR" --data "$BZ_DATA" --timeout 10 bench --clients "$OPEN_CLIENTS" --rate "$rate" --duration "$DURATION" \
    --warmup "$WARMUP" --label "$name-open" --out "$out" "${ARGS[@]}" >"$RAW/$name-open.r$round.txt" 2>&1; then
    say "warning: the open loop of $name failed in round $round:"
    tail -n 5 "$RAW/$name-open.r$round.txt" >&2
    FAILED+=("$name, open loop (round $round)")
    return 0
  fi
  local busy note=""
  busy="$(cpu_busy)"
  grep -q 'behind the --rate schedule' "$RAW/$name-open.r$round.txt" && note="fell behind the schedule"
  # At half the load, the median should not exceed the closed loop's: if it
  # does, the window caught a stall, and p99 ÷ p50 understates it.
  if jq -e --slurpfile c "$closed" --argjson n "$OPEN_CLIENTS" \
    '.levels[0].latency.p50_us > ([$c[0].levels[] | select(.clients == $n)][0].latency.p50_us)' "$out" >/dev/null 2>&1; then
    note="${note:+$note; }p50 above the closed loop's: a stall"
  fi
  OPEN_ROWS+=("$system|$round|$(jq -r --argjson c "$OPEN_CLIENTS" '[.levels[] | select(.clients == $c)][0] | "\(.throughput)|\(.latency.p50_us)|\(.latency.p99_us)"' "$closed")|${BUSY[$name.r$round]:--}|$rate|$(jq -r '.levels[0] | "\(.latency.p50_us)|\(.latency.p90_us)|\(.latency.p99_us)"' "$out")|$busy|$note")
}

STARTED=$SECONDS
for ((round = 1; round <= ROUNDS; round++)); do
  start_frontend
  for s in "${PHASE_A[@]}"; do run_scenario "$s" "$round"; done
  open_loop_round "$round" buy
  if ((${#PHASE_B[@]})); then
    stop_frontend
    start_nocache_frontend
    for s in "${PHASE_B[@]}"; do run_scenario "$s" "$round"; done
    stop_started "$NC_PID"
  fi
  for s in "${BASELINES[@]}"; do run_scenario "$s" "$round"; done
  if ((ETCD)); then open_loop_round "$round" etcd-put; fi
done
start_frontend
MATRIX_SECS=$((SECONDS - STARTED))

mkdir -p "$RESULTS"
rm -f "$RESULTS"/*.json
# Merges the rounds of scenario NAME ($RAW/NAME.r*.json), if any ran, into
# their medians, $RESULTS/NAME.json.
merge_rounds() {
  local files=("$RAW/$1".r*.json)
  [[ -f "${files[0]}" ]] || return 0
  "$BAZAR" bench merge --out "$RESULTS/$1.json" "${files[@]}" >/dev/null
}
ALL=("${PHASE_A[@]}" "${PHASE_B[@]}" "${BASELINES[@]}")
for s in "${ALL[@]}"; do merge_rounds "$s"; done
have() { [[ -f "$RESULTS/$1.json" ]]; }

# ---- wrk: a second load tool for the headline ratios -------------------

# The same scenarios as the targets, driven by `wrk` (another tool's client,
# parser and timing), 64 connections on 2 threads and one connection on
# one thread, ROUNDS interleaved rounds, medians.
WRK_NOTE=""
if ((!WRK)); then
  WRK_NOTE="The wrk cross-check was skipped (--no-wrk)."
elif ! WRK_NOTE="$(need_tool wrk wrk "The wrk cross-check")"; then
  WRK=0
  say "$WRK_NOTE"
fi
WRK_DIR="$WORK/wrk"
if ((WRK)); then
  mkdir -p "$WRK_DIR"
  # A buy per request: book ids 1..7 in turn, a fresh idempotency key each.
  cat >"$WRK_DIR/buy.lua" <<'LUA'
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) prefix = args[1] .. "-" .. tid; n = 0 end
function request()
  n = n + 1
  return wrk.format("POST", "/books/" .. (n % 7 + 1) .. "/buy",
    { ["Content-Type"] = "application/json", ["Idempotency-Key"] = prefix .. "-" .. n }, '{"quantity":1}')
end
LUA
  # GET /books/{id}<suffix> over ids 1..7.
  cat >"$WRK_DIR/get.lua" <<'LUA'
function init(args) suffix = args[1] or ""; n = 0 end
function request() n = n + 1; return wrk.format("GET", "/books/" .. (n % 7 + 1) .. suffix) end
LUA
  # An etcd gateway call with a fixed JSON body (args: path, body).
  cat >"$WRK_DIR/etcd.lua" <<'LUA'
function init(args) path = args[1]; body = args[2] end
function request() return wrk.format("POST", path, { ["Content-Type"] = "application/json" }, body) end
LUA
  if ((ETCD)); then
    # A book-sized value under a key of its own, put once so that ranges find it.
    WRK_KEY="$(printf 'wrk/book-1' | base64 -w0)"
    WRK_VALUE="$(curl -fsS --max-time 5 "http://$FE/books/1" | base64 -w0)"
    WRK_PUT="{\"key\":\"$WRK_KEY\",\"value\":\"$WRK_VALUE\"}"
    WRK_RANGE="{\"key\":\"$WRK_KEY\"}"
    curl -fsS --max-time 5 -X POST "$ETCD_LEADER/v3/kv/put" -d "$WRK_PUT" >/dev/null || say "warning: could not put etcd's wrk key"
  fi
fi

# Milliseconds from a wrk duration (`812.00us`, `3.21ms`, `1.02s`).
wrk_ms() { awk -v d="$1" 'BEGIN { v = d + 0; if (d ~ /us$/) v /= 1000; else if (d ~ /ms$/) v += 0; else if (d ~ /m$/) v *= 60000; else if (d ~ /s$/) v *= 1000; printf "%.3f", v }'; }

# One wrk run: THREADS CONNS URL SCRIPT ARGS... -> "req/s p50-ms errors"
# on stdout ("- - -" when wrk did not report).
wrk_run() {
  local threads="$1" conns="$2" url="$3" script="$4" out; shift 4
  out="$(wrk -t"$threads" -c"$conns" -d"$DURATION" --latency --timeout 10s -s "$script" "$url" -- "$@" 2>&1)" || true
  local rps p50 non2xx sock
  rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
  p50="$(awk '$1 == "50%" { print $2; exit }' <<<"$out")"
  non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")"
  sock="$(awk -F'[ ,]+' '/Socket errors:/ { print $4 + $6 + $8 + $10 }' <<<"$out")"
  [[ -n "$rps" && -n "$p50" ]] || { echo "- - -"; return 0; }
  echo "$rps $(wrk_ms "$p50") $((${non2xx:-0} + ${sock:-0}))"
}

# A wrk scenario at one connection count, one round: NAME CONNS ROUND;
# appends its "req/s p50-ms errors" to $WRK_DIR/NAME.cCONNS.
wrk_scenario() {
  local name="$1" conns="$2" round="$3" r t=2
  ((conns < 2)) && t=1
  case "$name" in
    buy)
      # Restock what is low first (bazar bench does it before any run that buys).
      "$BAZAR" --data "$BZ_DATA" bench --clients 1 --requests 1 --warmup 0s --mix buy=100 --endpoints "$FE" \
        --out "$WRK_DIR/stock.json" >/dev/null 2>&1 || true
      r="$(wrk_run "$t" "$conns" "http://$FE" "$WRK_DIR/buy.lua" "wrk-$$-r$round-c$conns")" ;;
    lookup-linearizable) r="$(wrk_run "$t" "$conns" "http://$FE" "$WRK_DIR/get.lua" "?consistency=linearizable")" ;;
    lookup-cached) r="$(wrk_run "$t" "$conns" "http://$FE" "$WRK_DIR/get.lua" "?consistency=cached")" ;;
    ceiling) r="$(wrk_run "$t" "$conns" "http://$CEIL_ADDR" "$WRK_DIR/get.lua")" ;;
    etcd-put) r="$(wrk_run "$t" "$conns" "$ETCD_LEADER" "$WRK_DIR/etcd.lua" /v3/kv/put "$WRK_PUT")" ;;
    etcd-range-linearizable)
      # Spread over the three members, as bazar bench does: three wrks at once.
      local i n parts=() per=$((conns / 3)) tput=0 p50s=() errs=0
      if ((conns < 3)); then
        r="$(wrk_run "$t" "$conns" "$ETCD_LEADER" "$WRK_DIR/etcd.lua" /v3/kv/range "$WRK_RANGE")"
      else
        for i in 0 1 2; do
          n=$per
          ((i == 0)) && n=$((conns - 2 * per))
          wrk_run 1 "$n" "${ETCD_URLS[$i]}" "$WRK_DIR/etcd.lua" /v3/kv/range "$WRK_RANGE" >"$WRK_DIR/range.$i" &
          parts+=($!)
        done
        wait "${parts[@]}"
        for i in 0 1 2; do
          read -r a b c <"$WRK_DIR/range.$i"
          [[ "$a" == "-" ]] && { tput="-"; break; }
          tput="$(awk -v x="$tput" -v y="$a" 'BEGIN { printf "%.2f", x + y }')"
          p50s+=("$b"); errs=$((errs + c))
        done
        # The middle member's p50 stands for the three (they are close).
        r="$tput $(printf '%s\n' "${p50s[@]}" | sort -g | sed -n 2p) $errs"
        [[ "$tput" == "-" ]] && r="- - -"
      fi ;;
    *) die "unknown wrk scenario $name" ;;
  esac
  echo "$r" >>"$WRK_DIR/$name.c$conns"
}

# The median of numbers on stdin (empty when there are none).
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else if (NR) printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# wrk_stat NAME CONNS FIELD(1 req/s, 2 p50 ms, 3 errors): the median over
# the rounds (errors: the sum), or empty.
wrk_stat() {
  local f="$WRK_DIR/$1.c$2"
  [[ -f "$f" ]] || return 0
  if (($3 == 3)); then
    awk '$3 != "-" { s += $3 } END { print s + 0 }' "$f"
  else
    awk -v k="$3" '$k != "-" { print $k }' "$f" | median
  fi
}

if ((WRK)); then
  WRK_SCEN=(buy lookup-linearizable lookup-cached ceiling)
  ((ETCD)) && WRK_SCEN+=(etcd-put etcd-range-linearizable)
  for ((round = 1; round <= ROUNDS; round++)); do
    for s in "${WRK_SCEN[@]}"; do
      for conns in 64 1; do
        ((conns == 1)) && [[ "$s" != buy && "$s" != etcd-put ]] && continue
        say "wrk, round $round/$ROUNDS: $s, $conns connection(s)"
        wrk_scenario "$s" "$conns" "$round"
      done
    done
  done
  WRK_VERSION="$( (wrk -v 2>&1 || true) | sed -n '1s/ \[.*//p')"
fi

# ---- round trips: the members behind links with a set RTT --------------

# The kernel here has no `netem`, so round trips come from `bench-delay`: a
# relay in front of each member (each Bazar node; each etcd member's client
# and peer ports) holds every byte for half the RTT, each way. Members dial
# each other's relays (Bazar's nodes advertise them: BAZAR_ADVERTISE_PREFIX
# of cluster.sh; etcd's members advertise them as their URLs), Bazar's
# frontend dials the nodes' relays, and the load generator dials etcd's
# client relays (or, for buys straight to the leader, the node's): every
# request and answer between members, or between a client and a member,
# takes one RTT. The load generator's hop to Bazar's frontend is not
# delayed: the frontend stands beside the clients, as etcd's gateway stands
# inside its member. Each RTT gets a fresh cluster of each, started for it.
RTT_NOTE=""
RTT_LIST=()
if ((RTT)); then
  if [[ ! -x "$BIN/bench-delay" ]]; then
    RTT=0
    RTT_NOTE="The RTT runs were skipped: $BIN/bench-delay is missing (run without --no-build)."
    say "$RTT_NOTE"
  else
    IFS=, read -r -a RTT_LIST <<<"$RTTS"
  fi
else
  RTT_NOTE="The RTT runs were skipped (--no-rtt)."
fi

RTT_BASE=$((PORT_BASE + 300))
RTT_FE="127.0.0.1:$((RTT_BASE + 80))"
rtt_node() { echo "127.0.3.$1:$((RTT_BASE + $1))"; }            # node i's relay
rtt_etcd_client() { echo "127.0.4.$1:$((RTT_BASE + 20 + $1))"; } # etcd member i's client relay
rtt_etcd_peer() { echo "127.0.4.$1:$((RTT_BASE + 30 + $1))"; }   # and its peer relay

# Time of one tiny HTTP exchange (GET /health) with ADDR on one kept-alive
# connection, from the request sent to the first byte back: the median of
# 20, the first (which opens the connection) left out, in ms.
http_probe() {
  local urls=() i
  for ((i = 0; i < 21; i++)); do urls+=(-o /dev/null "http://$1/health"); done
  curl -s --max-time 10 -w '%{time_starttransfer} %{time_pretransfer}\n' "${urls[@]}" 2>/dev/null \
    | awk 'NR > 1 { printf "%.3f\n", ($1 - $2) * 1000 }' | median
}

RTT_SCEN=(buy buy-leader)
((ETCD)) && RTT_SCEN+=(etcd-put)
RTT_MEASURED=() # RTT|ms through node 1's relay|ms straight to node 1
for rtt in "${RTT_LIST[@]+"${RTT_LIST[@]}"}"; do
  half="$(awk -v r="$rtt" 'BEGIN { v = r + 0; if (r ~ /us$/) v /= 1000; else if (r ~ /[^m]s$/) v *= 1000; printf "%.3fms", v / 2 }')"
  routes=()
  for i in 1 2 3; do
    routes+=("$(rtt_node "$i")=127.0.0.1$i:$((RTT_BASE + i))")
    routes+=("$(rtt_etcd_client "$i")=127.0.0.1:$((RTT_BASE + 20 + i))" "$(rtt_etcd_peer "$i")=127.0.0.1:$((RTT_BASE + 30 + i))")
  done
  start_bg "$WORK/delay-$rtt.log" "$BIN/bench-delay" --delay "$half" "${routes[@]}"
  DELAY_PID="$LAST_PID"
  RDATA="$WORK/rtt-$rtt"
  CLUSTERS+=("$RDATA|$RTT_BASE|$RTT_FE")
  say "rtt $rtt: starting a Bazar cluster and an etcd behind relays that hold each byte $half each way"
  if ! BAZAR_ADVERTISE_PREFIX=127.0.3. cluster "$RDATA" "$RTT_BASE" "$RTT_FE" up >"$WORK/rtt-$rtt-up.log" 2>&1; then
    tail -n 20 "$WORK/rtt-$rtt-up.log" >&2
    FAILED+=("the Bazar cluster at RTT $rtt did not start")
    stop_started "$DELAY_PID"
    continue
  fi
  RTT_ETCD_PIDS=() RTT_ETCD_LEADER=""
  if ((ETCD)); then
    start_etcd r "$RDATA/etcd" $((RTT_BASE + 20)) $((RTT_BASE + 30)) 127.0.4.
    RTT_ETCD_PIDS=("${STARTED_ETCD[@]}")
    if i="$(etcd_leader $((RTT_BASE + 20)))"; then
      RTT_ETCD_LEADER="${STARTED_ETCD_URLS[i - 1]}"
    else
      FAILED+=("etcd at RTT $rtt elected no leader")
    fi
  fi
  RTT_MEASURED+=("$rtt|$(http_probe "$(rtt_node 1)")|$(http_probe "127.0.0.1:$((RTT_BASE + 1))")")
  for ((round = 1; round <= ROUNDS; round++)); do
    for s in "${RTT_SCEN[@]}"; do
      case "$s" in
        buy) ARGS=(--endpoints "$RTT_FE" --mix buy=100) ;;
        buy-leader) ARGS=(--endpoints "$(rtt_node "$(leader_id "127.0.0.1:$((RTT_BASE + 1))" orders)")" --mix buy=100) ;;
        etcd-put)
          [[ -n "$RTT_ETCD_LEADER" ]] || continue
          ARGS=(--target etcd-put --endpoints "$RTT_ETCD_LEADER") ;;
      esac
      say "rtt $rtt, round $round/$ROUNDS: $s"
      if ! "$BAZAR" --data "$RDATA" --timeout 30 bench --clients 1,64 --duration "$DURATION" --warmup "$WARMUP" \
        --label "$s-rtt-$rtt" --out "$RAW/$s-rtt-$rtt.r$round.json" "${ARGS[@]}" >"$RAW/$s-rtt-$rtt.r$round.txt" 2>&1; then
        say "warning: $s at RTT $rtt failed in round $round:"
        tail -n 5 "$RAW/$s-rtt-$rtt.r$round.txt" >&2
        FAILED+=("$s at RTT $rtt (round $round)")
      fi
    done
  done
  for pid in "${RTT_ETCD_PIDS[@]+"${RTT_ETCD_PIDS[@]}"}"; do stop_started "$pid"; done
  cluster "$RDATA" "$RTT_BASE" "$RTT_FE" down >/dev/null 2>&1 || true
  stop_started "$DELAY_PID"
  for s in "${RTT_SCEN[@]}"; do merge_rounds "$s-rtt-$rtt"; done
done

# ---- CPU cost per request ----------------------------------------------

# CPU seconds (user + system) a process has used so far.
TICK="$(getconf CLK_TCK 2>/dev/null || echo 100)"
cpu_s() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk -v t="$TICK" '{ printf "%.3f", ($12 + $13) / t }' || echo 0; }
# CPU seconds used by this shell's finished children (the load generator),
# into CHILDREN_CPU. `times` must run in this shell, not in a $(subshell).
children_cpu() {
  times >"$WORK/times.txt"
  CHILDREN_CPU="$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); s += p[1] * 60 + p[2] } printf "%.3f", s }' "$WORK/times.txt")"
}
COST=()
cost_run() { # LABEL REQUESTS bench-args...: CPU per request of every process we run
  local label="$1" n="$2"; shift 2
  local procs=() names=() i p
  for i in 1 2 3; do procs+=("$(node_pid "$i")"); names+=("node$i"); done
  if [[ -f "$BZ_DATA/frontend.pid" ]]; then procs+=("$(cat "$BZ_DATA/frontend.pid")"); names+=(frontend); fi
  for p in "${ETCD_PIDS[@]+"${ETCD_PIDS[@]}"}"; do procs+=("$p"); names+=(etcd); done
  procs+=("$CEIL_PID"); names+=(ceiling)
  local before=() lg0 lg1
  for p in "${procs[@]}"; do before+=("$(cpu_s "$p")"); done
  children_cpu
  lg0="$CHILDREN_CPU"
  "$BAZAR" --data "$BZ_DATA" --timeout 10 bench --clients 64 --requests "$n" --warmup 0s "$@" \
    --out "$WORK/cost.json" >/dev/null 2>&1 || { FAILED+=("cost of $label"); return 0; }
  children_cpu
  lg1="$CHILDREN_CPU"
  local -A use=([node1]=0 [node2]=0 [node3]=0 [frontend]=0 [etcd]=0 [ceiling]=0)
  for i in "${!procs[@]}"; do
    use[${names[$i]}]="$(awk -v a="${use[${names[$i]}]}" -v x="$(cpu_s "${procs[$i]}")" -v y="${before[$i]}" 'BEGIN { printf "%.3f", a + x - y }')"
  done
  use[loadgen]="$(awk -v a="$lg1" -v b="$lg0" 'BEGIN { printf "%.3f", a - b }')"
  local total=0 k row
  for k in node1 node2 node3 frontend etcd ceiling loadgen; do total="$(awk -v a="$total" -v b="${use[$k]}" 'BEGIN { printf "%.3f", a + b }')"; done
  row="| $label | $(jq -r '.levels[0].throughput | round' "$WORK/cost.json") |"
  for k in node1 node2 node3 frontend etcd ceiling loadgen; do row+=" $(awk -v s="${use[$k]}" -v n="$n" 'BEGIN { printf "%.0f", s / n * 1e6 }') |"; done
  row+=" $(awk -v s="$total" -v n="$n" 'BEGIN { printf "%.0f", s / n * 1e6 }') | $(awk -v t="$total" -v n="$n" -v c="$NCPU" 'BEGIN { printf "%.0f", (t > 0) ? c * n / t : 0 }') |"
  COST+=("$row")
}
say "CPU cost per request, 64 clients"
N_W=$((QUICK ? 1000 : 10000)) N_R=$((QUICK ? 5000 : 30000))
cost_run "buy (frontend)" "$N_W" --endpoints "$FE" --mix buy=100
cost_run "buy (orders leader)" "$N_W" --endpoints "$(leader_of orders)" --mix buy=100
cost_run "linearizable lookup (frontend)" "$N_R" --endpoints "$FE" --mix lookup=100 --consistency linearizable
cost_run "linearizable lookup (nodes)" "$N_R" --endpoints "$NODES_CSV" --mix lookup=100 --consistency linearizable
cost_run "cached lookup (frontend)" "$N_R" --endpoints "$FE" --mix lookup=100 --consistency cached
if ((ETCD)); then
  cost_run "etcd put" "$N_W" --target etcd-put --endpoints "$ETCD_LEADER"
  cost_run "etcd linearizable range" "$N_R" --target etcd-range-linearizable --endpoints "$ETCD_CSV"
  cost_run "etcd serializable range" "$N_R" --target etcd-range-serializable --endpoints "$ETCD_CSV"
fi
cost_run "trivial handler" "$N_R" --target http-get --url "http://$CEIL_ADDR/books/{id}"

# ---- anatomy of one write: counters per request ------------------------

# Sum of a Prometheus metric (every label set) at one server (a base URL).
metric_at() { curl -fsS --max-time 2 "$1/metrics" 2>/dev/null | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.6f", s }'; }
metric_sum() { # METRIC URL... : the sum over servers
  local name="$1" sum=0 u; shift
  for u in "$@"; do sum="$(awk -v a="$sum" -v b="$(metric_at "$u" "$name")" 'BEGIN { printf "%.6f", a + b }')"; done
  echo "$sum"
}
raft_rpcs() { # Raft RPCs received by all nodes
  local sum=0 a v
  for a in "${NODE_ADDRS[@]}"; do
    v="$(curl -fsS --max-time 2 "http://$a/metrics" 2>/dev/null | awk '/^bazar_http_requests_total\{/ && /route="\/raft\// { s += $2 } END { print s + 0 }')"
    sum=$((sum + v))
  done
  echo "$sum"
}
per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.2f", (a - b) / n }'; }
ANATOMY=()
ANATOMY_N=300
LEADER="$(leader_of orders)"
NODE_URLS=("http://${NODE_ADDRS[0]}" "http://${NODE_ADDRS[1]}" "http://${NODE_ADDRS[2]}")
if [[ "$(metric_at "http://$LEADER" bazar_wal_syncs_total)" != "0.000000" ]]; then
  say "anatomy: $ANATOMY_N single-client buys on the orders leader, counting log entries, fsyncs and Raft RPCs"
  snap() {
    echo "$(metric_at "http://$LEADER" bazar_raft_last_log_index) $(metric_at "http://$LEADER" bazar_wal_syncs_total)" \
      "$(metric_at "http://$LEADER" bazar_wal_sync_seconds_total) $(metric_sum bazar_wal_syncs_total "${NODE_URLS[@]}") $(raft_rpcs)"
  }
  read -r e0 s0 t0 all0 r0 <<<"$(snap)"
  "$BAZAR" --data "$BZ_DATA" bench --clients 1 --requests "$ANATOMY_N" --warmup 0s --mix buy=100 --endpoints "$LEADER" \
    --label anatomy-buy --out "$WORK/anatomy-buy.json" >/dev/null 2>&1 || true
  read -r e1 s1 t1 all1 r1 <<<"$(snap)"
  if [[ -f "$WORK/anatomy-buy.json" ]]; then
    p50="$(jq -r '.levels[0].latency.p50_us / 1000' "$WORK/anatomy-buy.json")"
    fsync_ms="$(awk -v s="$s1" -v s0="$s0" -v t="$t1" -v t0="$t0" 'BEGIN { printf "%.2f", (s > s0) ? (t - t0) / (s - s0) * 1000 : 0 }')"
    ANATOMY+=("| Bazar buy, to the orders leader | $(printf '%.2f' "$p50") ms | $(per "$e1" "$e0" "$ANATOMY_N") | $(per "$s1" "$s0" "$ANATOMY_N") | $(per "$all1" "$all0" "$ANATOMY_N") | $fsync_ms ms | $(per "$r1" "$r0" "$ANATOMY_N") |")
  fi
fi
if ((ETCD)); then
  say "anatomy: $ANATOMY_N single-client etcd puts on the leader"
  snap() {
    echo "$(metric_at "$ETCD_LEADER" etcd_disk_wal_fsync_duration_seconds_count) $(metric_at "$ETCD_LEADER" etcd_disk_wal_fsync_duration_seconds_sum)" \
      "$(metric_sum etcd_disk_wal_fsync_duration_seconds_count "${ETCD_URLS[@]}")"
  }
  read -r c0 d0 all0 <<<"$(snap)"
  "$BAZAR" bench --target etcd-put --clients 1 --requests "$ANATOMY_N" --warmup 0s --endpoints "$ETCD_LEADER" \
    --out "$WORK/anatomy-put.json" >/dev/null 2>&1 || true
  read -r c1 d1 all1 <<<"$(snap)"
  if [[ -f "$WORK/anatomy-put.json" ]]; then
    p50="$(jq -r '.levels[0].latency.p50_us / 1000' "$WORK/anatomy-put.json")"
    fsync_ms="$(awk -v c="$c1" -v c0="$c0" -v d="$d1" -v d0="$d0" 'BEGIN { printf "%.2f", (c > c0) ? (d - d0) / (c - c0) * 1000 : 0 }')"
    ANATOMY+=("| etcd put, to the leader | $(printf '%.2f' "$p50") ms | 1 | $(per "$c1" "$c0" "$ANATOMY_N") | $(per "$all1" "$all0" "$ANATOMY_N") | $fsync_ms ms | (gRPC streams, not counted) |")
  fi
fi

# ---- profiles (--profile) -----------------------------------------------

PROFILES=()
if ((PROFILE)); then
  if ! command -v perf >/dev/null; then
    apt_install linux-perf || true
  fi
  command -v inferno-flamegraph >/dev/null || say "no inferno: profiles without flamegraphs (cargo install inferno)"
  # Folded stacks -> self time by the leaf frame's crate, or kernel/RocksDB/allocator.
  # shellcheck disable=SC2016 # awk code, not shell
  LEAF_AWK='{ c = $NF; s = substr($0, 1, length($0) - length($NF) - 1); tot += c
    n = split(s, f, ";"); leaf = f[n]
    if (leaf ~ /_\[k\]$/) cat = "kernel"
    else if (leaf ~ /rocksdb::|^rocksdb_/) cat = "RocksDB (C++)"
    else if (leaf ~ /^_?mi_|malloc|_int_free|cfree|realloc|unlink_chunk|consolidate|tcache/) cat = "allocator (mimalloc, glibc)"
    else if (leaf ~ /memmove|memcpy|memcmp|memset|strlen/) cat = "memcpy/memcmp (glibc)"
    else { cat = leaf; sub(/^</, "", cat); sub(/::.*/, "", cat); sub(/<.*/, "", cat); cat = cat " (Rust)" }
    t[cat] += c }
    END { for (k in t) printf "%5.1f%%  %s\n", 100 * t[k] / tot, k }'
  # shellcheck disable=SC2016 # awk code, not shell
  INCL_AWK='BEGIN { np = split(P, spec, "@@"); for (i = 1; i <= np; i++) { k = index(spec[i], "="); label[i] = substr(spec[i], 1, k - 1); pat[i] = substr(spec[i], k + 1) } }
    { c = $NF; s = substr($0, 1, length($0) - length($NF) - 1); tot += c
      for (i = 1; i <= np; i++) if (s ~ pat[i]) hit[i] += c }
    END { for (i = 1; i <= np; i++) printf "%5.1f%%  %s\n", 100 * hit[i] / tot, label[i] }'
  INCL_PATTERNS='HTTP server tasks (hyper connections, multiplexed requests, the handlers they poll)=dispatch::Server<|bazar_net::mux::(serve|accept)::'
  INCL_PATTERNS+='@@outgoing calls (bazar-net multiplexed connections: Raft RPCs, relayed requests)=dispatch::Client<|bazar_net::mux::(open|write_frames|Mux::call)'
  INCL_PATTERNS+='@@HTTP/1 header parsing and encoding=httparse|parse_headers|encode_headers|role::Server>::parse|role::Client>::parse'
  INCL_PATTERNS+='@@openraft core tasks=openraft::core::raft_core::RaftCore[^;]*::(do_main|runtime_loop)@@openraft replication tasks=openraft::replication::[^;]*main'
  INCL_PATTERNS+='@@openraft state-machine worker=openraft::core::sm::worker@@WAL sync thread (fdatasync)=wal::sync_loop'
  INCL_PATTERNS+='@@fdatasync/fsync syscalls=fdatasync|fsync_@@RocksDB writes=rocksdb::DBImpl::WriteImpl'
  INCL_PATTERNS+='@@RocksDB reads (get, iterators)=rocksdb::DBImpl::Get|rocksdb::DBIter|rocksdb::MemTableIterator|rocksdb::DBImpl::NewIterator'
  INCL_PATTERNS+='@@serde_json=serde_json::@@postcard=postcard::@@socket writes (writev/sendmsg)=writev|sendmsg|sendto'
  INCL_PATTERNS+='@@socket reads=recvfrom|recvmsg|tcp_recvmsg|sock_read_iter@@epoll_wait=epoll_wait@@futex=futex_@@moka cache=moka::'
  if command -v perf >/dev/null; then
    for what in buy lookup-linearizable lookup-cached; do
      case "$what" in
        buy) target="$(leader_of orders)" args=(--mix buy=100 --endpoints "$target") ;;
        lookup-linearizable) target="$(leader_of catalog)" args=(--mix lookup=100 --consistency linearizable --endpoints "$NODES_CSV") ;;
        lookup-cached) target="" args=(--mix lookup=100 --consistency cached --endpoints "$FE") ;;
      esac
      rm -f "$ASSETS/profile-$what"*.txt "$ASSETS/flame-$what.svg"
      if [[ -n "$target" ]]; then
        id=$(( ${target##*:} - PORT_BASE ))
        pid="$(node_pid "$id")" proc="raft-node $id"
      elif ((HAVE_FRONTEND)); then
        pid="$(cat "$BZ_DATA/frontend.pid")" proc="the frontend"
      else
        continue
      fi
      say "profiling $what: $proc (pid $pid)"
      "$BAZAR" --data "$BZ_DATA" bench --clients 64 --duration 8s --warmup 1s "${args[@]}" --out "$WORK/profile-$what.json" >/dev/null 2>&1 &
      load=$!
      sleep 2
      # The binary may have been rebuilt since it started: cache it by build id.
      perf buildid-cache -a "/proc/$pid/exe" >/dev/null 2>&1 || true
      perf record -F 499 --call-graph dwarf,16384 -p "$pid" -o "$WORK/perf-$what.data" -- sleep 5 >/dev/null 2>&1 || true
      wait "$load" || true
      perf script -i "$WORK/perf-$what.data" 2>/dev/null >"$WORK/perf-$what.script" || true
      folded="$WORK/perf-$what.folded"
      if command -v inferno-collapse-perf >/dev/null; then
        inferno-collapse-perf --all <"$WORK/perf-$what.script" >"$folded" 2>/dev/null || true
      fi
      {
        echo "# $proc during $what, 64 clients: on-CPU samples (cpu-clock, 499 Hz, 5 s, DWARF stacks)"
        echo
        echo "## Self time by thread"
        perf report -i "$WORK/perf-$what.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | sed '/^$/d; s/[[:space:]]*$//' || true
        if [[ -s "$folded" ]]; then
          echo
          echo "## Self time by what the sampled (leaf) frame belongs to"
          awk "$LEAF_AWK" "$folded" | sort -rn | head -n 15 || true
          echo
          echo "## Share of samples with these frames on the stack (inclusive; rows overlap)"
          awk -v P="$INCL_PATTERNS" "$INCL_AWK" "$folded"
        fi
        echo
        echo "## Top symbols by self time"
        perf report -i "$WORK/perf-$what.data" --no-children --sort dso,sym --stdio -g none --percent-limit 0.5 2>/dev/null \
          | grep -v '^#' | sed '/^$/d; s/[[:space:]]*$//' | head -n 40 || true
      } >"$ASSETS/profile-$what.txt"
      if [[ -s "$folded" ]] && command -v inferno-flamegraph >/dev/null; then
        inferno-flamegraph --minwidth 0.5 --title "$proc during $what (64 clients)" <"$folded" >"$ASSETS/flame-$what.svg" 2>/dev/null || true
      fi
      PROFILES+=("$what|$proc")
    done
  else
    say "perf is not available: no profiles"
  fi
fi

# ---- memory, after load, and with a million books -----------------------

for i in 1 2 3; do mem_row "raft-node $i (7 books)" "after the matrix" "$(rss_mb "$(node_pid "$i")")"; done
((HAVE_FRONTEND)) && mem_row "frontend" "after the matrix" "$(rss_mb "$(cat "$BZ_DATA/frontend.pid")")"
mem_row "bench-ceiling" "after the matrix" "$(rss_mb "$CEIL_PID")"
if ((ETCD)); then
  for i in 1 2 3; do mem_row "etcd member $i (7 keys)" "after the matrix" "$(rss_mb "${ETCD_PIDS[$((i - 1))]}")"; done
fi

MILLION_NOTE=""
if ((MILLION && !QUICK)) || ((MILLION && ${BENCH_MILLION:-0})); then
  # Free the machine for the big cluster.
  cluster "$BZ_DATA" "$PORT_BASE" "$FE_ADDR" down >/dev/null 2>&1 || true
  BIG="$WORK/million"
  BIG_BASE=$((PORT_BASE + 100))
  BIG_FE="127.0.0.1:$((PORT_BASE + 180))"
  CLUSTERS+=("$BIG|$BIG_BASE|$BIG_FE")
  say "starting a cluster with 1,000,000 generated books"
  t0=$SECONDS
  if BAZAR_NODE_ARGS="--generate-books 1000000" BAZAR_UP_TIMEOUT=900 cluster "$BIG" "$BIG_BASE" "$BIG_FE" up >"$WORK/million-up.log" 2>&1; then
    SEED_SECS=$((SECONDS - t0))
    for i in 1 2 3; do mem_row "raft-node $i (1,000,000 books)" "after seeding" "$(rss_mb "$(cat "$BIG/node-$i.pid")")"; done
    [[ -f "$BIG/frontend.pid" ]] && mem_row "frontend (1,000,000 books)" "after seeding" "$(rss_mb "$(cat "$BIG/frontend.pid")")"
    BIG_DISK="$(du -sm "$BIG/node-1" | cut -f1)"
    big_fe="$BIG_FE"
    [[ -f "$BIG/frontend.pid" ]] || big_fe="127.0.0.1:$((BIG_BASE + 1)),127.0.0.1:$((BIG_BASE + 2)),127.0.0.1:$((BIG_BASE + 3))"
    for level in cached linearizable; do
      say "million: lookups ($level) over all 1,000,000 ids"
      "$BAZAR" --data "$BIG" bench --clients 64 --duration "$DURATION" --warmup "$WARMUP" --books 1..1000000 --mix lookup=100 \
        --consistency "$level" --endpoints "$big_fe" --label "million-lookup-$level" --out "$RESULTS/million-lookup-$level.json" \
        >"$RAW/million-$level.txt" 2>&1 || FAILED+=("million-lookup-$level")
    done
    for i in 1 2 3; do mem_row "raft-node $i (1,000,000 books)" "after random lookups" "$(rss_mb "$(cat "$BIG/node-$i.pid")")"; done
    MILLION_NOTE="Seeding 1,000,000 books took ${SEED_SECS} s (cluster start to every node ready); node 1's data folder holds ${BIG_DISK} MB."
  else
    MILLION_NOTE="The 1,000,000-book cluster did not become ready; see the log of cluster.sh up."
    tail -n 20 "$WORK/million-up.log" >&2
  fi
  cluster "$BIG" "$BIG_BASE" "$BIG_FE" down >/dev/null 2>&1 || true
fi
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- plots --------------------------------------------------------------

plot() { # FILE TITLE LABEL=NAME[:OP]...
  local file="$1" title="$2"; shift 2
  local series=() x label rest name op
  for x in "$@"; do
    label="${x%%=*}" rest="${x#*=}" name="${x#*=}" op=""
    name="${name%%:*}"
    [[ "$rest" == *:* ]] && op=":${rest#*:}"
    have "$name" && series+=("$label=$RESULTS/$name.json$op")
  done
  ((${#series[@]})) || return 0
  "$BAZAR" bench plot --out "$ASSETS/$file" --title "$title" "${series[@]}" >/dev/null
}
rm -f "$ASSETS"/{reads,cache,buys,after-buy,baselines}.svg
plot reads.svg "Lookups at each consistency level" \
  "cached=lookup-cached" "lease=lookup-lease" "linearizable=lookup-linearizable" \
  "linearizable, nodes=lookup-linearizable-nodes"
plot cache.svg "Lookups and searches with and without the frontend cache" \
  "lookup cached=lookup-cached" "lookup no cache=lookup-nocache" "search cached=search-cached" "search no cache=search-nocache"
plot buys.svg "Buys: cache invalidation on and off, and etcd puts" \
  "buy (invalidation on)=buy" "buy (no cache)=buy-nocache" "buy to leader=buy-leader" "etcd put=etcd-put"
plot after-buy.svg "First lookup after a buy vs a cached lookup" \
  "lookup after buy=lookup-after-buy:lookup_after_buy" "cached lookup=lookup-cached"
plot baselines.svg "Bazar against etcd and the HTTP ceiling" \
  "bazar cached lookup=lookup-cached" "bazar linearizable lookup=lookup-linearizable" \
  "etcd serializable range=etcd-range-serializable" "etcd linearizable range=etcd-range-linearizable" "ceiling=ceiling"

# ---- the report ---------------------------------------------------------

# jq helpers over a merged result: ms(us), and a level's figures.
# shellcheck disable=SC2016 # jq code, not shell
JQ_DEFS='def ms(x): ((x / 10) | round) / 100;
def pick($c; $op): (.levels[] | select(.clients == $c)) as $l | if $op == "" then $l else $l.ops[$op] end;'

rows() { # NAME LABEL [OP]: one table row per level
  have "$1" || return 0
  jq -r --arg name "$2" --arg op "${3:-}" "$JQ_DEFS"'
    .levels[] | . as $l | (if $op == "" then $l else $l.ops[$op] end) as $r | select($r != null) |
    "| \($name) | \($l.clients) | \($r.throughput | round) | \(ms($r.latency.p50_us)) | \(ms($r.latency.p90_us)) | \(ms($r.latency.p99_us)) | \(ms($r.latency.p999_us)) | \(ms($r.latency.max_us)) | \($r.errors)\(if ($r.error_kinds // {}) != {} then " (" + ([$r.error_kinds | to_entries[] | "\(.value) \(.key)"] | join(", ")) + ")" else "" end) | \(if ($r.cache // {}) != {} then ([$r.cache | to_entries[] | "\(.key) \(.value)"] | join(", ")) else "" end) |"' \
    "$RESULTS/$1.json"
}
table() { # TITLE then LABEL=NAME[:OP]...
  echo
  echo "| scenario | clients | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | cache states |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
  local s
  for s in "$@"; do
    local label="${s%%=*}" rest="${s#*=}" op=""
    [[ "$rest" == *:* ]] && op="${rest#*:}"
    rows "${rest%%:*}" "$label" "$op"
  done
  echo
}
metric() { # NAME CLIENTS FIELD [OP] -> value or empty
  have "$1" || return 0
  jq -r --argjson c "$2" --arg op "${4:-}" "$JQ_DEFS"' [pick($c; $op)] | first | if . == null then empty else '"$3"' end' "$RESULTS/$1.json"
}
ratio() { # A B -> A/B with 2 decimals, or n/a
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'
}
verdict() { # VALUE OP TARGET
  awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { if (v == "n/a") print "not measured"; else if ((op == ">=" && v + 0 >= t) || (op == "<=" && v + 0 <= t)) print "**met**"; else print "not met" }'
}
ratio_rows() { # LABEL A B FIELD [OPA]: ratio A/B at every level
  local label="$1" a="$2" b="$3" field="$4" opa="${5:-}" c cells=""
  for c in ${CLIENTS//,/ }; do
    cells+=" $(ratio "$(metric "$a" "$c" "$field" "$opa")" "$(metric "$b" "$c" "$field")") |"
  done
  echo "| $label |$cells"
}

CPU_MODEL="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
GEN="$WORK/generated.md"
{
  echo "<!-- bench:begin: generated by scripts/bench.sh; edit outside these markers -->"
  echo
  echo "## Results"
  echo
  if ((QUICK)); then echo "> **Quick run** (\`--quick\`): one round, short runs. Not for quoting."; echo; fi
  echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC') on commit \`$GIT_REV\`$GIT_DIRTY; $NCPU CPUs ($CPU_MODEL), Linux $(uname -r)."
  echo "Load average before: $LOAD_BEFORE; after: $LOAD_AFTER (this machine is shared: see *Caveats*)."
  echo "Each scenario ran $ROUNDS round(s), interleaved with the others; every figure is the **median over the rounds** (each field separately)."
  echo "Per level: $WARMUP warm-up, then $DURATION measured. Clients: $CLIENTS. Bazar requests went $FE_NOTE unless the scenario says otherwise."
  ((ETCD)) && echo "etcd $ETCD_VERSION, 3 members on loopback, through its HTTP/JSON gateway (puts to the leader, ranges spread over all members)."
  [[ -n "$ETCD_NOTE" ]] && echo "$ETCD_NOTE"
  echo "The matrix took $((MATRIX_SECS / 60)) min $((MATRIX_SECS % 60)) s."
  if ((${#FAILED[@]})); then echo; echo "**Failed runs** (missing from the medians): ${FAILED[*]}."; fi
  echo
  echo "### Targets (ratios measured side by side)"
  echo
  echo "Each ratio from \`bazar bench\` (medians over the rounds of the matrix) and, as a cross-check, from \`wrk\` (medians over its own interleaved rounds; see *wrk* below)."
  echo
  echo "| target | bazar bench | wrk | goal | verdict |"
  echo "|---|---:|---:|---:|---|"
  target_row() { # LABEL BENCH-RATIO WRK-RATIO OP GOAL
    local v
    v="$(verdict "$2" "$4" "$5")"
    [[ "$3" != "n/a" ]] && v+=", wrk: $(verdict "$3" "$4" "$5")"
    echo "| $1 | $2 | $3 | $4 $5 | $v |"
  }
  target_row "buys/s ÷ etcd puts/s, 64 clients" \
    "$(ratio "$(metric buy 64 .throughput)" "$(metric etcd-put 64 .throughput)")" \
    "$(ratio "$(wrk_stat buy 64 1)" "$(wrk_stat etcd-put 64 1)")" ">=" 2
  target_row "linearizable lookups/s ÷ etcd linearizable ranges/s, 64 clients" \
    "$(ratio "$(metric lookup-linearizable 64 .throughput)" "$(metric etcd-range-linearizable 64 .throughput)")" \
    "$(ratio "$(wrk_stat lookup-linearizable 64 1)" "$(wrk_stat etcd-range-linearizable 64 1)")" ">=" 3
  target_row "cached lookups/s ÷ trivial handler req/s, 64 clients" \
    "$(ratio "$(metric lookup-cached 64 .throughput)" "$(metric ceiling 64 .throughput)")" \
    "$(ratio "$(wrk_stat lookup-cached 64 1)" "$(wrk_stat ceiling 64 1)")" ">=" 1
  target_row "single-client buy p50 ÷ single-client etcd put p50" \
    "$(ratio "$(metric buy 1 .latency.p50_us)" "$(metric etcd-put 1 .latency.p50_us)")" \
    "$(ratio "$(wrk_stat buy 1 2)" "$(wrk_stat etcd-put 1 2)")" "<=" 1
  for rtt in "${RTT_LIST[@]+"${RTT_LIST[@]}"}"; do
    [[ "$rtt" == 1ms ]] || continue
    target_row "single-client buy p50 ÷ etcd put p50, $rtt RTT between members" \
      "$(ratio "$(metric "buy-rtt-$rtt" 1 .latency.p50_us)" "$(metric "etcd-put-rtt-$rtt" 1 .latency.p50_us)")" "n/a" "<=" 1.5
  done
  if ((${#OPEN_ROWS[@]})); then
    r="$(open_ratio Bazar)"
    target_row "open loop at half the closed loop's buys/s: buy p99 ÷ p50 (median of rounds)" "${r:-n/a}" "n/a" "<=" 5
    stalled="$(printf '%s\n' "${OPEN_ROWS[@]}" | grep '^Bazar|' | grep -c 'a stall' || true)"
    echo
    r="$(open_ratio etcd)"
    [[ -n "$r" ]] && echo "The same open loop against etcd (puts at half its own closed-loop rate, same rounds): p99 ÷ p50 = $r (median of rounds; see *Open loop* for both and how busy the CPUs were)."
    if ((stalled)); then
      echo
      echo "In $stalled Bazar open-loop round(s) the median itself was above the closed loop's: those windows caught a stall, which the ratio hides (see *Open loop*)."
    fi
  fi
  echo
  echo "Ratios at every level (throughput unless stated; > 1 means Bazar does more):"
  echo
  hdr="| ratio |"; sep="|---|"
  for c in ${CLIENTS//,/ }; do
    if ((c == 1)); then hdr+=" 1 client |"; else hdr+=" $c clients |"; fi
    sep+="---:|"
  done
  echo "$hdr"; echo "$sep"
  ratio_rows "buy ÷ etcd put" buy etcd-put .throughput
  ratio_rows "buy to the leader ÷ etcd put" buy-leader etcd-put .throughput
  ratio_rows "buy p50 latency ÷ etcd put p50" buy etcd-put .latency.p50_us
  ratio_rows "linearizable lookup ÷ etcd linearizable range" lookup-linearizable etcd-range-linearizable .throughput
  ratio_rows "linearizable lookup at the nodes ÷ etcd linearizable range" lookup-linearizable-nodes etcd-range-linearizable .throughput
  ratio_rows "cached lookup ÷ etcd serializable range" lookup-cached etcd-range-serializable .throughput
  ratio_rows "cached lookup ÷ trivial handler" lookup-cached ceiling .throughput
  ratio_rows "etcd serializable range ÷ trivial handler" etcd-range-serializable ceiling .throughput
  echo
  echo "![Bazar against etcd and the HTTP ceiling](bench/baselines.svg)"
  echo
  echo "### Lookups and searches, with and without the cache"
  if ((!HAVE_NOCACHE)); then echo; echo "Not measured: no frontend with \`--no-cache\` was built."; fi
  table "lookup, cache=lookup-cached" "lookup, no cache=lookup-nocache" "search, cache=search-cached" "search, no cache=search-nocache"
  have lookup-nocache && echo "![cache on and off](bench/cache.svg)" && echo
  echo "### Each consistency level"
  echo
  echo "\`cached\` is served by the frontend's cache; \`lease\` and \`linearizable\` go through the frontend to a replica (ReadIndex), and \"at the nodes\" skips the frontend."
  table "cached=lookup-cached" "lease=lookup-lease" "linearizable=lookup-linearizable" "linearizable, at the nodes=lookup-linearizable-nodes"
  echo "![consistency levels](bench/reads.svg)"
  echo
  echo "### Buys: the cost of cache consistency"
  echo
  echo "\"invalidation on\": through the caching frontend, which follows both groups' change streams; \"no cache\": through a frontend started with \`--no-cache\` (no change streams at all) while the caching one is stopped; \"to the leader\": straight to the orders leader, no frontend hop."
  table "buy, invalidation on=buy" "buy, no cache=buy-nocache" "buy, to the leader=buy-leader" "etcd put=etcd-put"
  if have buy-nocache; then
    echo "$hdr"; echo "$sep"
    ratio_rows "buys/s with invalidation ÷ without" buy buy-nocache .throughput
    ratio_rows "buy p50 with invalidation ÷ without" buy buy-nocache .latency.p50_us
    echo
  fi
  echo "![buys](bench/buys.svg)"
  echo
  echo "### The first lookup after a buy"
  echo
  echo "Each client buys a copy of a book, then looks the book up at \`cached\` consistency: the buy invalidated the book in the cache, so this lookup is the first read of the new version (the cache states column shows how often it missed)."
  table "lookup after buy=lookup-after-buy:lookup_after_buy" "(the buy before it)=lookup-after-buy:buy" "cached lookup, steady state=lookup-cached"
  echo "![first lookup after a buy](bench/after-buy.svg)"
  echo
  echo "### Baselines"
  table "trivial handler (ceiling)=ceiling" "etcd serializable range=etcd-range-serializable" "etcd linearizable range=etcd-range-linearizable" "etcd put=etcd-put"
  echo "### Open loop: buys and etcd puts at half the closed loop's rate"
  echo
  if ((${#OPEN_ROWS[@]})); then
    echo "In each round, right after its closed loop, $OPEN_CLIENTS clients bought through the frontend (Bazar), or put to etcd's leader (etcd), in an open loop (\`--rate\`) at half the requests/s that closed loop had just reached with $OPEN_CLIENTS clients; latency counts from when each request was due, so queueing behind a slow answer shows. *CPU busy* is the share of all $NCPU CPUs in use during each run (warm-up included; \`/proc/stat\`, everything on the machine: the servers and the load generator)."
    echo
    echo "| system | round | closed loop: req/s | p50 ms | p99 ms | CPU busy | open loop at | p50 ms | p90 ms | p99 ms | CPU busy | open p99 ÷ p50 | note |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${OPEN_ROWS[@]}" | awk -F'|' '{ printf "| %s | %d | %.0f | %.2f | %.2f | %s%% | %d/s | %.2f | %.2f | %.2f | %s%% | %.1f | %s |\n", $1, $2, $3, $4 / 1000, $5 / 1000, $6, $7, $8 / 1000, $9 / 1000, $10 / 1000, $11, ($8 > 0) ? $10 / $8 : 0, $12 }'
  else
    echo "Not measured (no closed-loop run at $OPEN_CLIENTS clients, or it failed)."
  fi
  echo
  echo "### wrk: the headline scenarios with another load tool"
  echo
  if ((WRK)); then
    echo "$WRK_VERSION, $ROUNDS interleaved round(s) after the matrix, $DURATION each, no warm-up of its own (the matrix ran just before); 64 connections on 2 threads, or 1 on 1 thread; medians over the rounds. A Lua script sends each request: buys with a fresh \`Idempotency-Key\` and \`{\"quantity\":1}\`, books 1–7 in turn; etcd puts and linearizable ranges of one book-sized key (puts to the leader; ranges spread over the three members by three wrks of 22/21/21 connections, whose throughputs add up and whose middle p50 is shown). wrk counts non-2xx answers and socket errors, shown as errors."
    echo
    echo "| scenario | connections | req/s | p50 ms | errors |"
    echo "|---|---:|---:|---:|---:|"
    for s in buy lookup-linearizable lookup-cached ceiling etcd-put etcd-range-linearizable; do
      for conns in 64 1; do
        [[ -f "$WRK_DIR/$s.c$conns" ]] || continue
        echo "| $s | $conns | $(wrk_stat "$s" "$conns" 1 | awk '{ printf "%.0f", $1 }') | $(wrk_stat "$s" "$conns" 2) | $(wrk_stat "$s" "$conns" 3) |"
      done
    done
  else
    echo "$WRK_NOTE"
  fi
  echo
  echo "### Round trips: members behind links with a set RTT"
  echo
  if ((${#RTT_MEASURED[@]})); then
    echo "A fresh Bazar cluster and a fresh etcd per RTT, each member behind a \`bench-delay\` relay that holds every byte for half the RTT, each way (this kernel has no \`netem\`): Bazar's nodes advertise their relays, so Raft, forwarded requests and the frontend's calls all cross them; etcd's members advertise theirs as peer and client URLs. So every request and answer between members, from the frontend to a node, or from the load generator to an etcd member or straight to a node, takes one RTT. The load generator's hop to Bazar's frontend is not delayed: the frontend stands beside the clients, as etcd's gateway stands inside its member. A \`GET /health\` of node 1 on a kept-alive connection (curl's time from sending to the first byte back, median of 20) took $(printf '%s\n' "${RTT_MEASURED[@]}" | awk -F'|' '{ printf "%s%s ms through its relay at %s (%s ms straight to it)", (NR > 1 ? "; " : ""), $2, $1, $3 }'): what the relay adds beyond the set RTT (its threads' wake-ups and the kernel's sleep precision) is in every crossing, for both systems. $ROUNDS round(s), clients 1 and 64, $DURATION each after $WARMUP of warm-up."
    for rtt in "${RTT_LIST[@]}"; do
      echo
      echo "**RTT $rtt**"
      table "buy, through the frontend=buy-rtt-$rtt" "buy, to the orders leader=buy-leader-rtt-$rtt" "etcd put, to the leader=etcd-put-rtt-$rtt"
      echo "| ratio | 1 client | 64 clients |"
      echo "|---|---:|---:|"
      echo "| buy p50 ÷ etcd put p50 | $(ratio "$(metric "buy-rtt-$rtt" 1 .latency.p50_us)" "$(metric "etcd-put-rtt-$rtt" 1 .latency.p50_us)") | $(ratio "$(metric "buy-rtt-$rtt" 64 .latency.p50_us)" "$(metric "etcd-put-rtt-$rtt" 64 .latency.p50_us)") |"
      echo "| buys/s ÷ etcd puts/s | $(ratio "$(metric "buy-rtt-$rtt" 1 .throughput)" "$(metric "etcd-put-rtt-$rtt" 1 .throughput)") | $(ratio "$(metric "buy-rtt-$rtt" 64 .throughput)" "$(metric "etcd-put-rtt-$rtt" 64 .throughput)") |"
      echo
    done
  else
    echo "$RTT_NOTE"
    echo
  fi
  if ((${#COST[@]})); then
    echo "### CPU cost per request"
    echo
    echo "64 clients, a fixed number of requests, CPU time (user + system, from \`/proc/<pid>/stat\`) of every process divided by the requests; \"load generator\" is \`bazar bench\` itself. On this $NCPU-CPU machine, $NCPU CPU-seconds per second is all there is, so \"CPU-bound ceiling\" = $NCPU ÷ total CPU per request: no amount of concurrency gets past it."
    echo
    echo "| requests | req/s | node 1 µs | node 2 µs | node 3 µs | frontend µs | etcd (3 members) µs | ceiling µs | load generator µs | total µs | CPU-bound ceiling req/s |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${COST[@]}"
    echo
  fi
  if ((${#ANATOMY[@]})); then
    echo "### Anatomy of one write"
    echo
    echo "$ANATOMY_N sequential writes by one client; counters read from \`/metrics\` before and after (Bazar: \`bazar_wal_*\`, Raft RPCs received by all nodes; etcd: \`etcd_disk_wal_fsync_duration_seconds\`)."
    echo
    echo "| write | p50 | log entries per write (leader, both groups) | fsyncs per write (leader) | fsyncs per write (all nodes) | mean fsync (leader) | Raft RPCs per write |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ANATOMY[@]}"
    echo
  fi
  if ((${#PROFILES[@]})); then
    echo "### Profiles"
    echo
    for x in "${PROFILES[@]}"; do
      p="${x%%|*}"
      flame=""
      if [[ -f "$ASSETS/flame-$p.svg" ]]; then flame=", [flamegraph](bench/flame-$p.svg)"; fi
      echo "- $p, 64 clients, ${x#*|} sampled for 5 s at 499 Hz: [breakdown](bench/profile-$p.txt)$flame"
    done
    echo
  fi
  echo "### Memory (resident set size, VmRSS)"
  echo
  echo "| process | when | RSS MB |"
  echo "|---|---|---:|"
  printf '%s\n' "${MEM_ROWS[@]}"
  echo
  [[ -n "$MILLION_NOTE" ]] && echo "$MILLION_NOTE" && echo
  if have million-lookup-cached || have million-lookup-linearizable; then
    echo "Random lookups over the 1,000,000 books (64 clients, one round):"
    table "cached=million-lookup-cached" "linearizable=million-lookup-linearizable"
  fi
  echo "Raw results (JSON, medians with every round's samples): \`$(basename "$OUT")/bench/results/\`."
  echo
  echo "<!-- bench:end -->"
} >"$GEN"

mkdir -p "$ASSETS"
if [[ -f "$DOC" ]] && grep -q '<!-- bench:begin' "$DOC" && grep -q '<!-- bench:end -->' "$DOC"; then
  awk -v gen="$GEN" '
    /<!-- bench:begin/ { while ((getline line < gen) > 0) print line; skip = 1; next }
    /<!-- bench:end -->/ { skip = 0; next }
    !skip { print }' "$DOC" >"$WORK/doc.md"
  cp "$WORK/doc.md" "$DOC"
else
  { echo "# Benchmarks"; echo; echo "Regenerate with \`scripts/bench.sh\`."; echo; cat "$GEN"; } >"$DOC"
fi
say "wrote $DOC and $ASSETS/ (matrix: ${MATRIX_SECS}s)"
