#!/usr/bin/env bash
# Fuzzes the HTTP API against its OpenAPI document (docs/api.yaml) with
# Schemathesis, an independent property-based API tester, on a local cluster
# of real processes that this script starts and stops itself.
#
#   scripts/fuzz-api.sh [--max-examples N] [--seed S]   (defaults: 60, seed 1 or $BAZAR_FUZZ_SEED)
#
# Four runs: the frontend and raft node 1, each without and with the admin
# token. Every response is checked for: no 5xx, a status code the document
# lists for the operation, the documented content type, a body that matches
# the documented schema, and the documented headers. Not fuzzed, and why:
#   - GET /watch and GET /lab/events: endless streams (a fuzzer waits for a
#     body that never ends);
#   - POST /admin/init, /admin/{group}/add-learner and /change-membership with
#     the admin token: they would reshape the very cluster under test (their
#     refusals without the token are fuzzed).
# Schemathesis is installed from PyPI into target/fuzz-venv when missing.
# Prints one closing line: "fuzz-api: N passed, N failed" (a run is one of the
# four), and exits non-zero when any run found a problem.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
cd "$ROOT"

MAX_EXAMPLES=60
SEED="${BAZAR_FUZZ_SEED:-1}"
while (($#)); do
  case "$1" in
    --max-examples) MAX_EXAMPLES="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    *) echo "fuzz-api.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

die() { echo "fuzz-api.sh: $*" >&2; exit 1; }

VENV="$ROOT/target/fuzz-venv"
if [[ ! -x "$VENV/bin/schemathesis" ]]; then
  ensure_python_venv || exit 1
  echo "fuzz-api.sh: installing Schemathesis from PyPI into $VENV"
  python3 -m venv "$VENV" || die "could not make a virtualenv (apt-get install python3-venv)"
  "$VENV/bin/pip" install --quiet 'schemathesis>=4,<5' || die "could not install schemathesis from PyPI"
fi

# A cluster of our own: its own data folder and ports outside the kernel's
# ephemeral range, so that nothing else on the machine holds them.
DATA="$(mktemp -d /tmp/bazar-fuzz.XXXXXX)"
pick_base() {
  local base
  for _ in $(seq 1 50); do
    base=$((20000 + (RANDOM % 900) * 10))
    if ! ss -Htln | awk '{print $4}' | grep -qE ":(${base}[0-9]|$((base + 80)))$"; then
      echo "$base"; return 0
    fi
  done
  return 1
}
BASE="$(pick_base)" || die "no free ports found"
export BAZAR_DATA="$DATA" BAZAR_PORT_BASE="$BASE" BAZAR_FRONTEND_ADDR="127.0.0.1:$((BASE + 80))"
cleanup() {
  scripts/cluster.sh down >/dev/null 2>&1 || true
  rm -rf "$DATA"
}
trap cleanup EXIT
scripts/cluster.sh up >"$DATA/up.log" 2>&1 || { cat "$DATA/up.log"; die "the cluster did not start"; }
if [[ -f "$DATA/tokens.env" ]]; then
  # shellcheck disable=SC1091
  source "$DATA/tokens.env"
fi

FRONTEND="http://$BAZAR_FRONTEND_ADDR"
NODE="http://127.0.0.1:$((BASE + 1))"
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance

# One worker: with two, Schemathesis's coverage phase parsed source in two
# threads at once and CPython raised "AST constructor recursion depth
# mismatch" (a run error of the tool, not a finding), seen on GET /admin/digest.
passed=0
failed=0
run() {
  local name="$1" url="$2"; shift 2
  echo "==> fuzz-api: $name ($url, seed $SEED, up to $MAX_EXAMPLES examples per operation)"
  if "$VENV/bin/schemathesis" --no-color run docs/api.yaml --url "$url" --checks "$CHECKS" \
      --phases examples,coverage,fuzzing --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
      --workers 1 --request-timeout 10 \
      --exclude-path /watch --exclude-path /lab/events "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "fuzz-api: $name found problems (replay with --seed $SEED)"
  fi
}
ADMIN=(--header "Authorization: Bearer $BAZAR_ADMIN_TOKEN")
RESHAPING=(--exclude-path /admin/init --exclude-path-regex '^/admin/\{group\}/')
run "frontend, no token" "$FRONTEND" --exclude-tag node
run "frontend, admin token" "$FRONTEND" --exclude-tag node "${ADMIN[@]}"
run "node 1, no token" "$NODE" --exclude-tag web
run "node 1, admin token" "$NODE" --exclude-tag web "${ADMIN[@]}" "${RESHAPING[@]}"
echo "fuzz-api: $passed passed, $failed failed"
((failed == 0))
