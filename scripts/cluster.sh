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
# Environment:
#   BAZAR_DATA            data folder (default ./data): node-i/, logs, pid files, tokens.env
#   BAZAR_ADMIN_TOKEN     admin token    } used when set; otherwise read from
#   BAZAR_CLUSTER_TOKEN   cluster token  } <data>/tokens.env, or generated into it
#   BAZAR_FRONTEND_TOKEN  frontend token } (the frontend opens the nodes' /mux with it)
#   BAZAR_NODES           number of raft nodes (default 3)
#   BAZAR_PORT_BASE       node i listens on 127.0.0.1:(BASE+i) (default 7100)
#   BAZAR_FRONTEND_ADDR   frontend address (default 127.0.0.1:8080)
#   BAZAR_NODE_ARGS       extra flags for every raft node (e.g. --generate-books 1000000)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${BAZAR_DATA:-./data}"
NODES="${BAZAR_NODES:-3}"
PORT_BASE="${BAZAR_PORT_BASE:-7100}"
FRONTEND_ADDR="${BAZAR_FRONTEND_ADDR:-127.0.0.1:8080}"
BIN="$ROOT/target/release"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
UP_TIMEOUT="${BAZAR_UP_TIMEOUT:-120}"

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*"; }

node_addr() { echo "127.0.0.1:$((PORT_BASE + $1))"; }
pid_file() { echo "$DATA/node-$1.pid"; }
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
  for ((i = 1; i <= NODES; i++)); do members+=("$i=$(node_addr "$i")"); done
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
  local i="$1" addr; addr="$(node_addr "$i")"
  if pid="$(pid_of "$i")"; then
    say "node $i already running (pid $pid)"
    return
  fi
  mkdir -p "$DATA"
  listening "$addr" && die "$addr is already in use by another process: stop it, or pick other ports with BAZAR_PORT_BASE"
  # shellcheck disable=SC2086
  setsid "$BIN/raft-node" --id "$i" --listen "$addr" --data-dir "$DATA/node-$i" \
    --initial-cluster "$(initial_cluster)" ${BAZAR_NODE_ARGS:-} >>"$(log_file "$i")" 2>&1 < /dev/null &
  echo $! > "$(pid_file "$i")"
  say "started node $i on $addr (pid $!, log $(log_file "$i"))"
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
  for ((i = 1; i <= NODES; i++)); do nodes+=("$i=$(node_addr "$i")"); done
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
}

cmd="${1:-}"
case "$cmd" in
  up)
    command -v curl >/dev/null || die "curl is required"
    ensure_built
    ensure_tokens
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
  *)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    [[ -z "$cmd" ]] && exit 2
    die "unknown command '$cmd'"
    ;;
esac
