#!/usr/bin/env bash
# Bazar at scale: a catalog of N generated books (default 1,000,000) on a
# local 3-node cluster, and what an operator pays for it. Measures, and
# prints as a Markdown table:
#
#   - bootstrap: from starting the nodes to every node ready with all books;
#   - resident memory of every node, and the size of its data folder;
#   - a catalog snapshot built on every member: size and build time;
#   - a fourth node added with `bazar cluster add-node`: the time until it is
#     a caught-up voter of both groups, the snapshot it installed, and its
#     peak resident memory;
#   - `bazar backup` of both groups (time, size) and `bazar restore`'s check;
#   - searches by topic, paged (`limit` 100): the first page, and a page
#     deep in the results reached through `next_cursor`.
#
#   scripts/scale.sh [--books N] [--no-build]
#
# Environment: SCALE_PORT_BASE [7700] (nodes on BASE+1..4, frontend BASE+80).
# Everything runs in a temporary folder and is stopped by PID at the end,
# whether the script succeeds or not.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
BIN="$ROOT/target/release"
BOOKS=1000000 BUILD=1
while (($#)); do
  case "$1" in
    --books) BOOKS="${2:?--books needs a number}"; shift ;;
    --no-build) BUILD=0 ;;
    -h | --help) print_usage "$0"; exit 0 ;;
    *) echo "scale.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "==> $*" >&2; }
measure_cluster_env scale "${SCALE_PORT_BASE:-7700}" "$BUILD"
NEW_PID=""
cleanup() {
  [[ -n "$NEW_PID" ]] && kill "$NEW_PID" 2>/dev/null && wait "$NEW_PID" 2>/dev/null
  "$ROOT/scripts/cluster.sh" down >/dev/null 2>&1 || true
  say "data and logs kept in $WORK"
}
trap cleanup EXIT

node() { echo "127.0.0.1:$((BASE + $1))"; }
rss_mb() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
peak_mb() { awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
metric() { # NODE NAME{labels}: a sample's value from the node's /metrics
  curl -fsS -o "$WORK/metrics.txt" "http://$(node "$1")/metrics"
  awk -v m="$2" '$1 == m { print $2; exit }' "$WORK/metrics.txt"
}
secs() { python3 -c "import sys; print(f'{float(sys.argv[1]):.2f}')" "$1"; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
bazar() { "$BIN/bazar" --data "$WORK" --frontend "$(node 1)" "$@"; }

say "starting 3 nodes with $BOOKS generated books in $WORK"
t0="$(now)"
# Few log entries are kept behind a snapshot, so that the added node must
# catch up from one.
BAZAR_NODE_ARGS="--generate-books $BOOKS --snapshot-keep-logs 100" BAZAR_UP_TIMEOUT=1800 \
  "$ROOT/scripts/cluster.sh" up >"$WORK/up.log" 2>&1 || { tail -20 "$WORK/up.log" >&2; exit 1; }
BOOT="$(elapsed "$t0")"
source "$WORK/tokens.env"
export BAZAR_ADMIN_TOKEN BAZAR_CLUSTER_TOKEN BAZAR_FRONTEND_TOKEN
say "ready after $BOOT s"

declare -A RSS DISK
for i in 1 2 3; do
  RSS[$i]="$(rss_mb "$(cat "$WORK/node-$i.pid")")"
done

say "building a catalog snapshot on every member"
t0="$(now)"
# A large catalog takes longer to write than a request may wait: the call
# then answers "not built yet; it goes on", and the metrics say when it is.
bazar cluster snapshot catalog >"$WORK/snapshot.txt" 2>&1 || grep -q "it goes on" "$WORK/snapshot.txt" \
  || { cat "$WORK/snapshot.txt" >&2; exit 1; }
for i in 1 2 3; do
  deadline=$((SECONDS + 1200))
  until [[ "$(metric "$i" 'bazar_snapshot_built_total{group="catalog"}')" -ge 1 ]]; do
    ((SECONDS < deadline)) || { echo "scale.sh: node $i built no catalog snapshot in 20 minutes" >&2; exit 1; }
    sleep 1
  done
done
SNAP_WALL="$(elapsed "$t0")"
declare -A SNAP_BYTES SNAP_SECS
for i in 1 2 3; do
  SNAP_BYTES[$i]="$(metric "$i" 'bazar_snapshot_last_built_bytes{group="catalog"}')"
  SNAP_SECS[$i]="$(metric "$i" 'bazar_snapshot_last_build_seconds{group="catalog"}')"
  DISK[$i]="$(du -sm "$WORK/node-$i" | cut -f1)"
done

say "adding node 4"
initial="1=$(node 1),2=$(node 2),3=$(node 3),4=$(node 4)"
setsid "$BIN/raft-node" --id 4 --listen "$(node 4)" --data-dir "$WORK/node-4" --initial-cluster "$initial" \
  >>"$WORK/node-4.log" 2>&1 </dev/null &
NEW_PID=$!
t0="$(now)"
bazar cluster add-node 4 "$(node 4)" >"$WORK/add-node.txt" 2>&1 || { cat "$WORK/add-node.txt" >&2; exit 1; }
ADD="$(elapsed "$t0")"
INST_BYTES="$(metric 4 'bazar_snapshot_last_installed_bytes{group="catalog"}')"
INST_SECS="$(metric 4 'bazar_snapshot_last_install_seconds{group="catalog"}')"
INSTALLED="$(metric 4 'bazar_snapshot_installed_total{group="catalog"}')"
RSS[4]="$(rss_mb "$NEW_PID")"
PEAK4="$(peak_mb "$NEW_PID")"
DISK[4]="$(du -sm "$WORK/node-4" | cut -f1)"

say "a backup of both groups"
t0="$(now)"
bazar backup "$WORK/backup.bzb" >"$WORK/backup.txt" 2>&1 || { cat "$WORK/backup.txt" >&2; exit 1; }
BACKUP_SECS="$(elapsed "$t0")"
BACKUP_MB="$(du -m "$WORK/backup.bzb" | cut -f1)"
t0="$(now)"
"$BIN/bazar" restore "$WORK/backup.bzb" >"$WORK/restore-check.txt" 2>&1 || { cat "$WORK/restore-check.txt" >&2; exit 1; }
CHECK_SECS="$(elapsed "$t0")"

say "paged searches by topic"
topic="databases"
page() { # URL: prints "seconds next_cursor count"
  curl -fsS -o "$WORK/page.json" -w '%{time_total}' "$1" >"$WORK/page.time"
  python3 - "$WORK/page.json" "$(cat "$WORK/page.time")" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
print(sys.argv[2], doc.get("next_cursor") or "", len(doc["books"]))
EOF
}
url="http://$(node 2)/books?topic=$topic&limit=100&consistency=linearizable"
read -r FIRST cursor _ < <(page "$url")
pages=1
while [[ -n "$cursor" && $pages -lt 200 ]]; do
  read -r DEEP cursor _ < <(page "$url&cursor=$cursor")
  pages=$((pages + 1))
done

mb() { python3 -c "import sys; print(f'{int(float(sys.argv[1])) / 1e6:.1f}')" "${1:-0}"; }
cat <<EOF

## Scale: $(printf "%'d" "$BOOKS") books ($(date -u +%Y-%m-%d), $(nproc) cores)

| measure | value |
|---|---|
| bootstrap (start to every node ready with every book) | $BOOT s |
| resident memory after bootstrap, nodes 1 / 2 / 3 | ${RSS[1]} / ${RSS[2]} / ${RSS[3]} MB |
| catalog snapshot, size (node 1) | $(mb "${SNAP_BYTES[1]}") MB |
| catalog snapshot, build time, nodes 1 / 2 / 3 | $(secs "${SNAP_SECS[1]:-0}") / $(secs "${SNAP_SECS[2]:-0}") / $(secs "${SNAP_SECS[3]:-0}") s ($SNAP_WALL s for \`bazar cluster snapshot catalog\`) |
| data folder after the snapshot, nodes 1 / 2 / 3 | ${DISK[1]} / ${DISK[2]} / ${DISK[3]} MB |
| \`bazar cluster add-node 4\`: until a caught-up voter of both groups | $ADD s |
| node 4: catalog snapshots installed / size / install time | ${INSTALLED:-0} / $(mb "$INST_BYTES") MB / $(secs "${INST_SECS:-0}") s |
| node 4: resident memory / data folder after joining | ${RSS[4]} MB / ${DISK[4]} MB |
| node 4: peak resident memory (VmHWM, from its start through the install) | ${PEAK4} MB |
| \`bazar backup\` of both groups: time / size | $BACKUP_SECS s / $BACKUP_MB MB |
| \`bazar restore\` (checking the file): time | $CHECK_SECS s |
| search by topic, first page of 100 (linearizable, a follower) | $(python3 -c "print(f'{float(\"$FIRST\") * 1000:.1f}')") ms |
| search by topic, page $pages of 100 through \`next_cursor\` | $(python3 -c "print(f'{float(\"${DEEP:-0}\") * 1000:.1f}')") ms |
EOF
