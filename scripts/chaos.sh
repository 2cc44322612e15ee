#!/usr/bin/env bash
# Long chaos runs on demand: a Jepsen-style workload against a local cluster
# of real raft-node processes while a nemesis kills (-9), pauses (SIGSTOP)
# and restarts nodes, and (as root, with iptables) cuts the links between
# them while clients keep reaching every node, then a checker verifies
# every invariant of guarantees §6 (linearizability included) and prints
# a summary table:
# operations, acknowledged, unknown, violations, and how long writes were
# unavailable after each fault.
#
#   scripts/chaos.sh [bazar-chaos run flags]
#
#   scripts/chaos.sh                                   60 s, every process fault in turn
#   scripts/chaos.sh --duration 300 --random           5 minutes, faults in random order
#   scripts/chaos.sh --faults kill-leader-catalog,kill-leader-orders --hold 3
#   sudo scripts/chaos.sh --partitions                 process faults and network partitions
#   sudo scripts/chaos.sh --faults partition-leader-orders,bridge,one-way-leader-orders,partition-restart
#   scripts/chaos.sh --node-args "--snapshot-logs 200" (restarted nodes catch up from snapshots)
#   scripts/chaos.sh --seed 42                         replay the same random choices
#   scripts/chaos.sh --frontend                        also send the workload through a frontend
#   sudo scripts/chaos.sh --power                      data directories on lazyfs, power losses added
#   sudo scripts/chaos.sh --power --faults power-loss-all,power-loss-node
#
# The cluster runs on free loopback ports in a temporary directory, kept
# (with logs) when a check fails. Histories go to target/chaos/ (override
# with --history FILE); re-check one with
#   target/release/bazar-chaos check target/chaos/<file>.jsonl
# Exit status: 0 all checks passed, 1 a violation, 2 the run failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
BIN="$ROOT/target/release"

die() { echo "chaos.sh: $*" >&2; exit 2; }

# Build what is missing (the first build takes about 10 minutes);
# BAZAR_REBUILD=1 rebuilds (quick when up to date).
packages=(-p bazar-node -p bazar-tests)
missing=0
[[ -x "$BIN/raft-node" && -x "$BIN/bazar-chaos" && -x "$BIN/bazar-lazyfs" ]] || missing=1
for a in "$@"; do
  if [[ "$a" == --frontend ]]; then
    packages+=(-p bazar-frontend)
    [[ -x "$BIN/frontend" ]] || missing=1
  fi
done
if (( missing )) || [[ -n "${BAZAR_REBUILD:-}" ]]; then
  ensure_cargo || exit 2
  ensure_libclang || exit 2
  echo "chaos.sh: building ${packages[*]} (release)" >&2
  (cd "$ROOT" && cargo build --release "${packages[@]}" --bins) || die "build failed"
fi

args=("$@")
has_history=0
for a in "${args[@]}"; do [[ "$a" == --history || "$a" == --history=* ]] && has_history=1; done
if (( ! has_history )); then
  mkdir -p "$ROOT/target/chaos"
  args+=(--history "$ROOT/target/chaos/history-$(date +%Y%m%d-%H%M%S).jsonl")
fi

exec "$BIN/bazar-chaos" run "${args[@]}"
