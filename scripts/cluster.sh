#!/usr/bin/env bash
# A local Bazar cluster of real processes on loopback.
#
#   scripts/cluster.sh up            build what is missing, start 3 raft nodes (and the
#                                    frontend, when built), wait until both groups have a
#                                    leader and the catalog is loaded
#   scripts/cluster.sh down          stop everything (SIGTERM, then SIGKILL after 10 s)
#   scripts/cluster.sh status        processes, and the leaders each node sees
#   scripts/cluster.sh kill N        kill -9 raft node N
#   scripts/cluster.sh pause N       SIGSTOP raft node N
#   scripts/cluster.sh resume N      SIGCONT raft node N
#   scripts/cluster.sh restart N     stop node N (gracefully if it runs) and start it again
#
# Network partitions (root and iptables needed). Clients reach node i on
# 127.0.0.1:(BASE+i); its peers reach it on its own loopback address,
# 127.0.0.1<i>:(BASE+i) (127.0.0.11, .12, ...), which it also calls them from.
# Cuts drop the packets between two such addresses, so clients keep
# reaching both sides (a deposed leader still gets reads and writes):
#   scripts/cluster.sh partition N   cut node N off every other node, both ways
#   scripts/cluster.sh bridge A B    cut the link between A and B only, both ways
#   scripts/cluster.sh cut A B       drop what A sends B (one-way loss)
#   scripts/cluster.sh heal          remove every cut
# The rules live in an iptables chain of this cluster's own (BAZAR-CL-<hash
# of the data folder>, jumped to from OUTPUT); heal and down remove it, and
# status lists the cuts.
#
# Clock faults (libfaketime needed: apt-get install faketime). Start the
# nodes with BAZAR_CLOCKS=1 (up, restart) and each runs with libfaketime
# preloaded, its clocks (monotonic and wall) and timers following the
# control file <data>/node-<i>.faketime, which it reads on every call:
#   scripts/cluster.sh clock N x2    node N's clock runs twice as fast as true time from
#                                    now on, without a jump (x0.5: half; x1: true again)
#   scripts/cluster.sh clock N +3    node N's clock jumps 3 s forward (-3: back)
#   scripts/cluster.sh clock N       show node N's setting
# The lease of `lease` reads allows for clocks whose rates differ up to the
# nodes' --max-clock-rate-ratio (default 2); a leader's clock jumping back
# breaks it (see docs/architecture.md).
#
# Environment:
#   BAZAR_DATA            data folder (default ./data): node-i/, logs, pid files, tokens.env
#   BAZAR_ADMIN_TOKEN     admin token    } used when set; otherwise read from
#   BAZAR_CLUSTER_TOKEN   cluster token  } <data>/tokens.env, or generated into it
#   BAZAR_FRONTEND_TOKEN  frontend token } (the frontend opens the nodes' /mux with it)
#   BAZAR_NODES           number of raft nodes (default 3)
#   BAZAR_PORT_BASE       node i listens on 127.0.0.1:(BASE+i) (default 7100)
#   BAZAR_PEER_PREFIX     node i's peer address is <prefix><i>:(BASE+i) (default 127.0.0.1)
#   BAZAR_ADVERTISE_PREFIX  node i advertises <prefix><i>:(BASE+i) instead of its peer
#                         address, and peers and the frontend dial it there: for a relay
#                         in front of each node that forwards to its peer address
#                         (scripts/bench.sh's round trips). Unset: the peer address
#   BAZAR_FRONTEND_ADDR   frontend address (default 127.0.0.1:8080)
#   BAZAR_NODE_ARGS       extra flags for every raft node (e.g. --generate-books 1000000)
#   BAZAR_RESTORE         a backup file (`bazar backup FILE`): `up` checks it, then seeds
#                         every new node of the new cluster from it (raft-node --restore);
#                         ignored by nodes whose data folder already holds state
#   BAZAR_CLOCKS          1: start nodes under libfaketime, for the clock verb
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${BAZAR_DATA:-./data}"
NODES="${BAZAR_NODES:-3}"
PORT_BASE="${BAZAR_PORT_BASE:-7100}"
PEER_PREFIX="${BAZAR_PEER_PREFIX:-127.0.0.1}"
FRONTEND_ADDR="${BAZAR_FRONTEND_ADDR:-127.0.0.1:8080}"
BIN="$ROOT/target/release"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
UP_TIMEOUT="${BAZAR_UP_TIMEOUT:-120}"

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*"; }

node_addr() { echo "127.0.0.1:$((PORT_BASE + $1))"; }
peer_ip() { echo "$PEER_PREFIX$1"; }
peer_addr() { echo "$(peer_ip "$1"):$((PORT_BASE + $1))"; }
# Where the rest of the cluster (peers, the frontend) reaches node i.
adv_addr() {
  if [[ -n "${BAZAR_ADVERTISE_PREFIX:-}" ]]; then echo "$BAZAR_ADVERTISE_PREFIX$1:$((PORT_BASE + $1))"; else peer_addr "$1"; fi
}
pid_file() { echo "$DATA/node-$1.pid"; }
clock_file() { echo "$DATA/node-$1.faketime"; }
# "<start (s since the epoch)> <offset (s)> <rate>" of node i's faked clock.
clock_state() { echo "$DATA/node-$1.clock"; }
log_file() { echo "$DATA/node-$1.log"; }

check_node_arg() {
  if ! [[ "${1:-}" =~ ^[0-9]+$ ]] || (( $1 < 1 || $1 > NODES )); then
    die "expected a node number from 1 to $NODES, got '${1:-}'"
  fi
}

pid_of() {
  local f; f="$(pid_file "$1")"
  [[ -f "$f" ]] || return 1
  local pid; pid="$(cat "$f")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

initial_cluster() {
  local members=() i
  for ((i = 1; i <= NODES; i++)); do members+=("$i=$(adv_addr "$i")"); done
  (IFS=,; echo "${members[*]}")
}

ensure_tokens() {
  ensure_tokens_file "$DATA" cluster.sh || exit 1
}

ensure_built() {
  local missing=0 b
  for b in raft-node bazar; do [[ -x "$BIN/$b" ]] || missing=1; done
  [[ -f "$ROOT/frontend/Cargo.toml" && ! -x "$BIN/frontend" ]] && missing=1
  (( missing )) || return 0
  ensure_cargo || exit 1
  ensure_libclang || exit 1
  say "building release binaries (the first build takes about 10 minutes)"
  (cd "$ROOT" && cargo build --release --bins) || die "the build failed"
}

health() { curl -fsS --max-time 1 "http://$1/health" 2>/dev/null; }

# Whether something listens on host:port.
listening() {
  local host="${1%:*}" port="${1##*:}"
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

start_node() {
  local i="$1" addr peer; addr="$(node_addr "$i")"; peer="$(peer_addr "$i")"
  if pid="$(pid_of "$i")"; then
    say "node $i already running (pid $pid)"
    return
  fi
  mkdir -p "$DATA"
  local a
  for a in "$addr" "$peer"; do
    listening "$a" && die "$a is already in use by another process: stop it, or pick other ports with BAZAR_PORT_BASE"
  done
  # Under clock control, the node's clocks follow its control file, from
  # the true time at its start.
  local faked=() lib
  if [[ "${BAZAR_CLOCKS:-}" == 1 ]]; then
    ensure_faketime || die "BAZAR_CLOCKS=1 needs libfaketime"
    lib="$(faketime_library)"
    printf '+0 x1\n' > "$(clock_file "$i")"
    faked=(env "LD_PRELOAD=$lib" "FAKETIME_TIMESTAMP_FILE=$(clock_file "$i")" FAKETIME_NO_CACHE=1)
  else
    rm -f "$(clock_file "$i")" "$(clock_state "$i")"
  fi
  # Clients on 127.0.0.1; peers on the node's own address, which it
  # advertises (unless a relay's is) and calls them from.
  # shellcheck disable=SC2086
  setsid "${faked[@]}" "$BIN/raft-node" --id "$i" --listen "$addr" --listen "$peer" --advertise "$(adv_addr "$i")" \
    --peer-source-ip "$(peer_ip "$i")" \
    --data-dir "$DATA/node-$i" --initial-cluster "$(initial_cluster)" ${BAZAR_NODE_ARGS:-} \
    >>"$(log_file "$i")" 2>&1 < /dev/null &
  echo $! > "$(pid_file "$i")"
  (( ${#faked[@]} )) && echo "$(date +%s.%N) 0 1" > "$(clock_state "$i")"
  say "started node $i on $addr, peers at $peer (pid $!, log $(log_file "$i"))${faked:+, clock under control}"
}

start_frontend() {
  [[ -x "$BIN/frontend" ]] || return 0
  local f="$DATA/frontend.pid"
  if [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null; then
    say "frontend already running (pid $(cat "$f"))"
    return
  fi
  listening "$FRONTEND_ADDR" && die "$FRONTEND_ADDR is already in use by another process: stop it, or set BAZAR_FRONTEND_ADDR"
  local nodes=() i
  for ((i = 1; i <= NODES; i++)); do
    if [[ -n "${BAZAR_ADVERTISE_PREFIX:-}" ]]; then nodes+=("$i=$(adv_addr "$i")"); else nodes+=("$i=$(node_addr "$i")"); fi
  done
  # shellcheck disable=SC2086
  setsid "$BIN/frontend" --listen "$FRONTEND_ADDR" --nodes "$(IFS=,; echo "${nodes[*]}")" \
    ${BAZAR_FRONTEND_ARGS:-} >>"$DATA/frontend.log" 2>&1 < /dev/null &
  echo $! > "$f"
  say "started frontend on $FRONTEND_ADDR (pid $!, log $DATA/frontend.log)"
}

# Waits until node i answers /health with both leaders known and the catalog loaded.
wait_ready() {
  local deadline=$((SECONDS + UP_TIMEOUT)) i h
  for ((i = 1; i <= NODES; i++)); do
    while :; do
      if ! pid_of "$i" >/dev/null; then
        echo "--- last lines of $(log_file "$i") ---" >&2
        tail -n 20 "$(log_file "$i")" >&2 || true
        die "node $i exited during startup"
      fi
      h="$(health "$(node_addr "$i")" || true)"
      leaders="$(leaders_of "$h")"
      if [[ "$h" == *"\"node_id\":$i,"* && "$h" == *'"catalog_seeded":true'* \
        && "$leaders" == *'"catalog":'[0-9]* && "$leaders" == *'"orders":'[0-9]* ]]; then
        break
      fi
      (( SECONDS < deadline )) || { echo "last /health of node $i: ${h:-no answer}" >&2; die "node $i not ready after ${UP_TIMEOUT}s (see $(log_file "$i"))"; }
      sleep 0.2
    done
  done
  if [[ -x "$BIN/frontend" ]]; then
    while ! curl -fsS --max-time 1 "http://$FRONTEND_ADDR/health" >/dev/null 2>&1; do
      (( SECONDS < deadline )) || die "frontend not ready after ${UP_TIMEOUT}s (see $DATA/frontend.log)"
      sleep 0.2
    done
  fi
}

stop_pid() {
  local pid="$1" what="$2"
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || return 0
  local t
  for ((t = 0; t < 100; t++)); do
    kill -0 "$pid" 2>/dev/null || { say "stopped $what"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  say "killed $what (did not stop within 10 s)"
}

stop_node() {
  local i="$1" pid
  if pid="$(pid_of "$i")"; then stop_pid "$pid" "node $i"; fi
  rm -f "$(pid_file "$i")"
}

field() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"; }
# The "leaders" object of a node's /health answer.
leaders_of() { sed -n 's/.*"leaders":{\([^}]*\)}.*/\1/p' <<<"$1"; }

# ---- network partitions ----

# This cluster's chain: named after its data folder, so that two clusters'
# cuts never mix.
chain() {
  local abs; abs="$(mkdir -p "$DATA" && cd "$DATA" && pwd)"
  echo "BAZAR-CL-$(printf '%s' "$abs" | cksum | cut -d' ' -f1)"
}

ipt() { iptables -w "$@"; }

need_iptables() {
  [[ "$(id -u)" == 0 ]] || die "network partitions need root (iptables): run as root, e.g. with sudo"
  command -v iptables >/dev/null || die "network partitions need iptables, which is not installed"
  ipt -S OUTPUT >/dev/null 2>&1 || die "iptables does not work here: $(ipt -S OUTPUT 2>&1 | head -n 1)"
}

chain_exists() { ipt -S "$(chain)" >/dev/null 2>&1; }

# Creates the chain and the jump to it, unless they exist.
ensure_chain() {
  local c; c="$(chain)"
  chain_exists || ipt -N "$c"
  ipt -C OUTPUT -j "$c" 2>/dev/null || ipt -I OUTPUT -j "$c"
}

# Removes the jump, the rules and the chain, whatever exists of them.
remove_chain() {
  local c; c="$(chain)"
  while ipt -D OUTPUT -j "$c" 2>/dev/null; do :; done
  if chain_exists; then ipt -F "$c" && ipt -X "$c"; fi
}

# Rules added by this command, removed again if it fails half way.
ADDED=()
rollback() {
  local status=$?
  if (( status != 0 && ${#ADDED[@]} > 0 )); then
    local r
    for r in "${ADDED[@]}"; do
      # shellcheck disable=SC2086
      ipt -D "$(chain)" $r 2>/dev/null || true
    done
    [[ -n "$(ipt -S "$(chain)" 2>/dev/null | grep -- '^-A')" ]] || remove_chain
    echo "cluster.sh: failed; removed the cuts this command had made" >&2
  fi
  exit "$status"
}

# Drops what node a sends node b (a no-op if already dropped).
cut_link() {
  local rule; rule="-s $(peer_ip "$1") -d $(peer_ip "$2") -j DROP"
  # shellcheck disable=SC2086
  ipt -C "$(chain)" $rule 2>/dev/null && return 0
  # shellcheck disable=SC2086
  ipt -A "$(chain)" $rule
  ADDED+=("$rule")
}

# The cuts, one line each: "node A -> node B".
cuts() {
  chain_exists || return 0
  local rule src dst i a b
  while read -r rule; do
    src="$(sed -n 's/.*-s \([0-9.]*\)\/32.*/\1/p' <<<"$rule")"
    dst="$(sed -n 's/.*-d \([0-9.]*\)\/32.*/\1/p' <<<"$rule")"
    a="$src"; b="$dst"
    for ((i = 1; i <= NODES; i++)); do
      [[ "$src" == "$(peer_ip "$i")" ]] && a="node $i"
      [[ "$dst" == "$(peer_ip "$i")" ]] && b="node $i"
    done
    echo "$a -> $b dropped"
  done < <(ipt -S "$(chain)" 2>/dev/null | grep -- '^-A')
}

status() {
  local i pid state h
  printf '%-9s %-8s %-8s %-16s %-8s %-9s %-8s\n' NODE PID STATE ADDR CATALOG ORDERS SEEDED
  for ((i = 1; i <= NODES; i++)); do
    if pid="$(pid_of "$i")"; then
      state="$(ps -o stat= -p "$pid" | cut -c1)"
      [[ "$state" == T ]] && state=paused || state=running
    else
      pid=-; state=down
    fi
    h="$(health "$(node_addr "$i")" || true)"
    local cat="-" ord="-" seeded="-"
    if [[ -n "$h" ]]; then
      local leaders; leaders="$(leaders_of "$h")"
      cat="leader=$(field "$leaders" catalog)"; ord="leader=$(field "$leaders" orders)"; seeded="$(field "$h" catalog_seeded)"
    fi
    printf '%-9s %-8s %-8s %-16s %-8s %-9s %-8s\n' "node-$i" "$pid" "$state" "$(node_addr "$i")" "$cat" "$ord" "$seeded"
  done
  if [[ -f "$DATA/frontend.pid" ]] && kill -0 "$(cat "$DATA/frontend.pid")" 2>/dev/null; then
    printf '%-9s %-8s %-8s %-16s\n' frontend "$(cat "$DATA/frontend.pid")" running "$FRONTEND_ADDR"
  fi
  # Cuts, when this user can see them.
  if [[ "$(id -u)" == 0 ]] && command -v iptables >/dev/null; then
    local list; list="$(cuts)"
    if [[ -n "$list" ]]; then
      echo "network cuts (peer traffic; clients still reach every node):"
      sed 's/^/  /' <<<"$list"
    else
      echo "network: no cuts"
    fi
  fi
}

cmd="${1:-}"
# Only `up` seeds new nodes from a backup; a node started by any other verb
# (a restart, a replacement) must not found a cluster of its own from one.
[[ "$cmd" == up ]] || unset BAZAR_RESTORE
case "$cmd" in
  up)
    command -v curl >/dev/null || die "curl is required"
    ensure_built
    ensure_tokens
    if [[ -n "${BAZAR_RESTORE:-}" ]]; then
      [[ -f "$BAZAR_RESTORE" ]] || die "BAZAR_RESTORE: no file $BAZAR_RESTORE"
      BAZAR_RESTORE="$(cd "$(dirname "$BAZAR_RESTORE")" && pwd)/$(basename "$BAZAR_RESTORE")"
      "$BIN/bazar" restore "$BAZAR_RESTORE" >&2 || die "BAZAR_RESTORE: $BAZAR_RESTORE cannot seed a cluster"
      export BAZAR_RESTORE
    fi
    for ((i = 1; i <= NODES; i++)); do start_node "$i"; done
    start_frontend
    wait_ready
    say "cluster is up; data in $DATA"
    status
    if [[ -x "$BIN/frontend" ]]; then
      say "frontend: http://$FRONTEND_ADDR"
      say "try: $BIN/bazar --frontend $FRONTEND_ADDR search 'distributed systems'"
    else
      say "try: $BIN/bazar --frontend $(node_addr 1) search 'distributed systems'"
    fi
    ;;
  down)
    if [[ -f "$DATA/frontend.pid" ]]; then
      stop_pid "$(cat "$DATA/frontend.pid")" frontend
      rm -f "$DATA/frontend.pid"
    fi
    for ((i = 1; i <= NODES; i++)); do stop_node "$i"; done
    if [[ "$(id -u)" == 0 ]] && command -v iptables >/dev/null && chain_exists; then
      remove_chain
      say "removed the network cuts"
    fi
    ;;
  partition)
    check_node_arg "${2:-}"
    need_iptables
    trap rollback EXIT
    ensure_chain
    for ((i = 1; i <= NODES; i++)); do
      (( i == $2 )) && continue
      cut_link "$2" "$i"
      cut_link "$i" "$2"
    done
    say "node $2 is cut off the other nodes (clients still reach it on $(node_addr "$2"))"
    ;;
  bridge)
    check_node_arg "${2:-}"
    check_node_arg "${3:-}"
    (( $2 != $3 )) || die "bridge needs two different nodes"
    need_iptables
    trap rollback EXIT
    ensure_chain
    cut_link "$2" "$3"
    cut_link "$3" "$2"
    say "the link between node $2 and node $3 is cut; every other link is up"
    ;;
  cut)
    check_node_arg "${2:-}"
    check_node_arg "${3:-}"
    (( $2 != $3 )) || die "cut needs two different nodes"
    need_iptables
    trap rollback EXIT
    ensure_chain
    cut_link "$2" "$3"
    say "what node $2 sends node $3 is dropped (the other way still works)"
    ;;
  heal)
    need_iptables
    remove_chain
    say "every cut removed"
    ;;
  status)
    status
    ;;
  kill)
    check_node_arg "${2:-}"
    pid="$(pid_of "$2")" || die "node $2 is not running"
    kill -KILL "$pid"
    rm -f "$(pid_file "$2")"
    say "killed node $2 (pid $pid)"
    ;;
  pause)
    check_node_arg "${2:-}"
    pid="$(pid_of "$2")" || die "node $2 is not running"
    kill -STOP "$pid"
    say "paused node $2 (pid $pid)"
    ;;
  resume)
    check_node_arg "${2:-}"
    pid="$(pid_of "$2")" || die "node $2 is not running"
    kill -CONT "$pid"
    say "resumed node $2 (pid $pid)"
    ;;
  restart)
    check_node_arg "${2:-}"
    ensure_built
    ensure_tokens
    stop_node "$2"
    start_node "$2"
    deadline=$((SECONDS + UP_TIMEOUT))
    until health "$(node_addr "$2")" >/dev/null; do
      pid_of "$2" >/dev/null || { tail -n 20 "$(log_file "$2")" >&2; die "node $2 exited during startup"; }
      (( SECONDS < deadline )) || die "node $2 did not answer /health after ${UP_TIMEOUT}s"
      sleep 0.2
    done
    say "node $2 is back"
    ;;
  clock)
    check_node_arg "${2:-}"
    pid_of "$2" >/dev/null || die "node $2 is not running"
    [[ -f "$(clock_state "$2")" ]] \
      || die "node $2 was not started under libfaketime: start it with BAZAR_CLOCKS=1 (up, or restart $2)"
    read -r started offset rate < "$(clock_state "$2")"
    spec="${3:-}"
    now="$(date +%s.%N)"
    # The node's clock reads start + (now - start) * rate + offset.
    if [[ -z "$spec" ]]; then
      say "node $2: clock at x$rate, $(awk -v s="$started" -v n="$now" -v o="$offset" -v r="$rate" \
        'BEGIN { printf "%+.3f", (n - s) * (r - 1) + o }') s from true time ($(cat "$(clock_file "$2")"))"
      exit 0
    elif [[ "$spec" =~ ^x([0-9]+(\.[0-9]+)?)$ ]]; then
      new="${BASH_REMATCH[1]}"
      awk -v r="$new" 'BEGIN { exit !(r > 0) }' || die "the rate must be above 0"
      # Carry what the clock gained or lost so far into the offset: no jump.
      offset="$(awk -v s="$started" -v n="$now" -v o="$offset" -v r="$rate" -v q="$new" \
        'BEGIN { printf "%.6f", o + (n - s) * (r - q) }')"
      rate="$new"
      what="runs at x$rate from now on"
    elif [[ "$spec" =~ ^[+-][0-9]+(\.[0-9]+)?$ ]]; then
      offset="$(awk -v o="$offset" -v j="$spec" 'BEGIN { printf "%.6f", o + j }')"
      what="jumped ${spec} s"
    else
      die "expected xRATE (x2, x0.5, x1) or +SECONDS / -SECONDS, got '$spec'"
    fi
    tmp="$(clock_file "$2").tmp"
    awk -v o="$offset" -v r="$rate" 'BEGIN { printf "%+.6f x%.6f\n", o, r }' > "$tmp"
    mv "$tmp" "$(clock_file "$2")"
    echo "$started $offset $rate" > "$(clock_state "$2")"
    say "node $2: clock $what ($(cat "$(clock_file "$2")"))"
    ;;
  *)
    print_usage "$0"
    [[ -z "$cmd" ]] && exit 2
    die "unknown command '$cmd'"
    ;;
esac
