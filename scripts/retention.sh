#!/usr/bin/env bash
# Idempotency-key retention under a steady stream of buys: a local 3-node
# cluster with a short retention window buys N copies through the frontend
# (`bazar bench`, buys only, each with a key the node makes up), and the
# state of both groups is counted by kind of row (`/admin/digest` of node
# 1) at the end of the stream and again once the window has passed. The
# idempotency rows (reservations in the catalog; keys, reservation indexes
# and expiry rows in the orders) stay at about (buys per second × window)
# however many buys are made; the orders and their history grow. Prints a
# Markdown table, and the largest count of retained keys seen during the
# stream (sampled from /metrics every 5 s).
#
#   scripts/retention.sh [--buys N] [--window TIME] [--clients N] [--no-build]
#
# Defaults: 1,000,000 buys, a 2 s window, 32 clients. Environment:
# RETENTION_PORT_BASE [7800] (nodes on BASE+1..3, frontend BASE+80).
# Everything runs in a temporary folder and is stopped by PID at the end,
# whether the script succeeds or not.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
BIN="$ROOT/target/release"
BUYS=1000000 WINDOW=2s CLIENTS=32 BUILD=1
while (($#)); do
  case "$1" in
    --buys) BUYS="${2:?--buys needs a number}"; shift ;;
    --window) WINDOW="${2:?--window needs a duration}"; shift ;;
    --clients) CLIENTS="${2:?--clients needs a number}"; shift ;;
    --no-build) BUILD=0 ;;
    -h | --help) print_usage "$0"; exit 0 ;;
    *) echo "retention.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "==> $*" >&2; }
measure_cluster_env retention "${RETENTION_PORT_BASE:-7800}" "$BUILD"
SAMPLER=""
cleanup() {
  [[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null && wait "$SAMPLER" 2>/dev/null
  "$ROOT/scripts/cluster.sh" down >/dev/null 2>&1 || true
  say "data and logs kept in $WORK"
}
trap cleanup EXIT

node() { echo "127.0.0.1:$((BASE + $1))"; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

say "starting 3 nodes with --idempotency-retention $WINDOW in $WORK"
BAZAR_NODE_ARGS="--idempotency-retention $WINDOW" "$ROOT/scripts/cluster.sh" up >"$WORK/up.log" 2>&1 ||
  { tail -20 "$WORK/up.log" >&2; exit 1; }
source "$WORK/tokens.env"
export BAZAR_ADMIN_TOKEN BAZAR_CLUSTER_TOKEN BAZAR_FRONTEND_TOKEN
bazar() { "$BIN/bazar" --data "$WORK" --frontend "http://$BAZAR_FRONTEND_ADDR" "$@"; }

# Enough copies that every buy is confirmed: sales, not refusals.
per_book=$((BUYS / 7 + 1000))
for id in 1 2 3 4 5 6 7; do
  bazar restock "$id" "$per_book" >/dev/null
done

digest() { # GROUP OUT: node 1's digest, with its rows by kind
  curl -fsS -H "Authorization: Bearer $BAZAR_ADMIN_TOKEN" "http://$(node 1)/admin/digest?group=$1" >"$2"
}
metric() { # NAME{labels}: a sample of node 1's /metrics
  curl -fsS "http://$(node 1)/metrics" | awk -v m="$1" '$1 == m { print $2; exit }'
}

# The retained keys every 5 s during the stream.
(
  while true; do
    echo "$(date +%s) $(metric 'bazar_idempotency_keys_retained{group="catalog"}') $(metric 'bazar_idempotency_keys_retained{group="orders"}')"
    sleep 5
  done
) >"$WORK/retained.txt" 2>/dev/null &
SAMPLER=$!

say "buying $BUYS copies with $CLIENTS clients"
t0="$(now)"
bazar bench --clients "$CLIENTS" --requests "$BUYS" --warmup 0s --mix buy=100 --no-prepare \
  --out "$WORK/bench.json" >"$WORK/bench.txt" 2>&1 || { tail -20 "$WORK/bench.txt" >&2; exit 1; }
STREAM="$(elapsed "$t0")"
kill "$SAMPLER" 2>/dev/null && wait "$SAMPLER" 2>/dev/null || true
SAMPLER=""
digest catalog "$WORK/catalog-end.json"
digest orders "$WORK/orders-end.json"

say "waiting for the window ($WINDOW) and a few purge rounds"
python3 -c "import sys,time; s=sys.argv[1]; u={'ms':1e-3,'s':1,'m':60,'h':3600}; import re
m=re.fullmatch(r'([0-9.]+)(ms|s|m|h)?', s); time.sleep(float(m.group(1))*u[m.group(2) or 's'] + 3)" "$WINDOW"
digest catalog "$WORK/catalog-after.json"
digest orders "$WORK/orders-after.json"

python3 - "$WORK" "$BUYS" "$WINDOW" "$STREAM" "$CLIENTS" <<'EOF'
import json, sys, os
work, buys, window, stream, clients = sys.argv[1:6]
def load(name):
    return json.load(open(os.path.join(work, name)))
samples = [l.split() for l in open(os.path.join(work, "retained.txt")) if len(l.split()) == 3]
peak = max((int(float(c)) + int(float(o)) for _, c, o in samples), default=0)
print(f"\n## Retention: {int(buys):,} buys, window {window}, {clients} clients\n")
print(f"Stream: {stream} s. Retained keys (catalog + orders) sampled every 5 s during it: at most {peak:,}.\n")
print("| group | rows of | at the end of the stream: rows | bytes | once the window passed: rows | bytes |")
print("|---|---|---:|---:|---:|---:|")
for group in ("catalog", "orders"):
    end, after = load(f"{group}-end.json")["rows"], load(f"{group}-after.json")["rows"]
    for kind in sorted(set(end) | set(after)):
        e, a = end.get(kind, {"rows": 0, "bytes": 0}), after.get(kind, {"rows": 0, "bytes": 0})
        print(f"| {group} | {kind} | {e['rows']:,} | {e['bytes']:,} | {a['rows']:,} | {a['bytes']:,} |")
    te = sum(v["bytes"] for v in end.values()); ta = sum(v["bytes"] for v in after.values())
    re_ = sum(v["rows"] for v in end.values()); ra = sum(v["rows"] for v in after.values())
    print(f"| {group} | **all** | {re_:,} | {te:,} | {ra:,} | {ta:,} |")
EOF
