#!/usr/bin/env bash
# Fails when a build without the dev-dependencies (`cargo doc`, the scripts'
# `cargo build --bins`) would resolve a shared dependency with other features
# than the test builds do, which makes cargo compile it, and everything above
# it, a second time (RocksDB's C++ among them when it reaches bindgen). Names
# each such crate with both feature sets; the fix is to ask for the union in
# hack/Cargo.toml (its comments say how).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Every package of the resolved graph with its features, one line per
# package and side (a crate built for proc-macros and for binaries can
# appear twice): "name version<TAB>features".
features() {
  cargo tree --workspace --locked -e "$1" --prefix none -f '{p}	{f}' \
    | sed -E 's/ ?\(\*\)//g; s/ \(proc-macro\)//; s/ \([^)]*\)	/	/; s/ +$//' \
    | awk -F'\t' 'NF == 2 { print $1 "\t" $2 }' | sort -u \
    | awk -F'\t' '{ if ($1 in sets) sets[$1] = sets[$1] " | " $2; else sets[$1] = $2 } END { for (p in sets) print p "\t[" sets[p] "]" }' \
    | sort
}

without_dev=$(mktemp)
with_dev=$(mktemp)
trap 'rm -f "$without_dev" "$with_dev"' EXIT
features normal,build >"$without_dev"
features normal,build,dev >"$with_dev"

differ=$(join -t $'\t' "$without_dev" "$with_dev" | awk -F'\t' '$2 != $3 { print "  " $1 "\n    without dev-dependencies: " $2 "\n    with them:                " $3 }')
if [[ -n "$differ" ]]; then
  echo "check-features: these crates would be compiled twice, with and without the dev-dependencies' features:" >&2
  echo "$differ" >&2
  echo "check-features: ask for the union in hack/Cargo.toml ([build-dependencies] for proc-macros' and build scripts' crates)" >&2
  exit 1
fi
echo "check-features: every build resolves the shared dependencies alike ($(wc -l <"$with_dev") packages)"
