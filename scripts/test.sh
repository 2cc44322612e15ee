#!/usr/bin/env bash
# Runs every Bazar test, from a fresh clone:
#   1. builds the release binaries and every test (one profile for
#      everything, so that the dependencies compile once; the crate hack/
#      makes the builds with and without dev-dependencies resolve the same
#      features, so that rustdoc and the scripts' `cargo build --bins` do
#      not compile RocksDB again),
#   2. lint: rustfmt, clippy and rustdoc with every warning an error, and
#      scripts/check-features.sh, which fails when a dependency change
#      breaks that agreement,
#   3. unit tests of every crate, in parallel (state machines, the
#      checker, the client), and the doc tests,
#   4. the integration tests, one at a time so that their timing is not
#      distorted by each other: the in-process ones of each crate
#      (openraft's storage suite on RocksDB, the node's HTTP API, the
#      client and the bench against small servers), then the real-process
#      ones in tests/ (clusters of raft-node processes under kill -9,
#      SIGSTOP, full restarts, partitions, clock faults and power loss). Among them,
#      tests/tests/processes/containers.rs builds the images and runs a compose cluster
#      under network partitions when a Docker engine answers (about 1-2
#      minutes); without one it fails and says why, unless skipping is
#      asked for (BAZAR_SKIP_CONTAINERS=1; BAZAR_SKIP_PARTITIONS=1 likewise
#      for the partition tests, which need root and iptables;
#      BAZAR_SKIP_CLOCKS=1 for the clock-fault tests, which need
#      libfaketime, installed here through apt when missing and root;
#      BAZAR_SKIP_POWERLOSS=1 for the power-loss tests, tests/tests/processes/powerloss.rs,
#      which need root, /dev/fuse and fuse3, about 45 s). Among them,
#      tests/tests/processes/browser.rs drives the storefront and the lab in headless
#      Chromium (installed through apt when missing, as root; without it the
#      test fails and says why, unless BAZAR_SKIP_BROWSER=1),
#   5. scripts/fuzz-api.sh: Schemathesis (installed from PyPI into
#      target/fuzz-venv) fuzzes the frontend and a node against
#      docs/api.yaml: no 5xx, no undocumented status, every body as documented.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
cd "$ROOT"
ensure_cargo
ensure_libclang
ensure_lint_tools
ensure_faketime || [[ "${BAZAR_SKIP_CLOCKS:-}" == 1 ]] || exit 1
if [[ "${BAZAR_SKIP_POWERLOSS:-}" != 1 ]]; then ensure_fuse3; fi

started=$SECONDS
phase_started=$SECONDS
# Announces a phase, and how long the one before it took.
phase() {
  if ((SECONDS > started)); then
    echo "    (took $((SECONDS - phase_started)) s; $((SECONDS - started)) s so far)"
  fi
  phase_started=$SECONDS
  echo "==> $*"
}
phase "building release binaries and tests"
cargo build --release --workspace --bins --tests
phase "lint: rustfmt and clippy, warnings denied"
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
phase "lint: rustdoc, warnings denied; one feature set for every build"
scripts/check-features.sh
RUSTDOCFLAGS="-D warnings" cargo doc --release --workspace --no-deps
phase "unit tests"
cargo test --release --workspace --lib --bins
phase "doc tests"
cargo test --release --workspace --doc
phase "integration tests: in-process, then real processes"
ensure_chromium
cargo test --release --workspace --test '*' -- --test-threads=1
phase "the API against docs/api.yaml (Schemathesis; frontend and node, with and without the admin token)"
ensure_python_venv
scripts/fuzz-api.sh
phase "all tests passed in $((SECONDS - started)) s"
