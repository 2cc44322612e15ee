#!/usr/bin/env bash
# Bazar in containers: images built here from scratch (no registry needed), a
# compose cluster of 3 raft nodes and a frontend on a private network, and real
# faults: kills, pauses and network partitions.
#
#   scripts/docker.sh build            build the release binaries if missing, then the images
#                                      bazar/raft-node and bazar/frontend (when built) FROM scratch
#   scripts/docker.sh up               build what is missing, write the env file, start the
#                                      cluster, wait until both groups have a leader and the
#                                      catalog is loaded
#   scripts/docker.sh down [-v]        stop and remove the containers and the network; the data
#                                      volumes stay unless -v is given
#   scripts/docker.sh status           containers, health, network, the leaders each node sees
#   scripts/docker.sh kill N           SIGKILL node N (1-3, or "frontend"); it stays down
#   scripts/docker.sh pause N          freeze node N (docker pause); resume N thaws it
#   scripts/docker.sh resume N
#   scripts/docker.sh restart N        stop N gracefully (SIGTERM) if it runs, start it again with
#                                      its data, wait until it answers
#   scripts/docker.sh partition N      detach N from the network: it keeps running, cut off from
#                                      every other node and from clients
#   scripts/docker.sh isolate-leader G partition the node the others follow as leader of group G
#                                      (catalog or orders), and show who takes over
#   scripts/docker.sh heal [N]         reattach every detached container (or only N) with its
#                                      fixed address
#   scripts/docker.sh logs N [ARGS]    docker logs of N (ARGS such as -f or --tail 50 are passed on)
#
# Environment:
#   BAZAR_DATA                  folder of tokens.env and docker/<project>.env (default ./data)
#   BAZAR_ADMIN_TOKEN           admin token    } used when set; otherwise read from
#   BAZAR_CLUSTER_TOKEN         cluster token  } <data>/tokens.env, or generated into it
#   BAZAR_FRONTEND_TOKEN        frontend token } (the frontend opens the nodes' /mux with it)
#   BAZAR_DOCKER_PROJECT        compose project, prefix of container, network and volume
#                               names (default bazar)
#   BAZAR_DOCKER_SUBNET         the private network, a /24 (default 172.28.0.0/24): frontend
#                               at .10, node i at .1i, port 7101 in every node
#   BAZAR_DOCKER_BIND           host address the ports are published on (default 127.0.0.1)
#   BAZAR_DOCKER_PORT_BASE      node i is published on port BASE+i (default 7100)
#   BAZAR_DOCKER_FRONTEND_PORT  the frontend is published on this port (default 8080)
#   BAZAR_BIN_DIR               where the release binaries are (default target/release)
#   BAZAR_UP_TIMEOUT            seconds `up` and `restart` wait (default 120)
#   BAZAR_DOCKER_TLS            1: TLS everywhere (docker/compose.tls.yaml): a CA and a
#                               certificate made with openssl into <data>/docker/tls/ (kept
#                               across runs), HTTPS on every port, mutual TLS between nodes;
#                               keep it set for every command on that cluster
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

DATA="${BAZAR_DATA:-./data}"
BIN="${BAZAR_BIN_DIR:-$ROOT/target/release}"
PROJECT="${BAZAR_DOCKER_PROJECT:-bazar}"
SUBNET="${BAZAR_DOCKER_SUBNET:-172.28.0.0/24}"
BIND="${BAZAR_DOCKER_BIND:-127.0.0.1}"
PORT_BASE="${BAZAR_DOCKER_PORT_BASE:-7100}"
FRONTEND_PORT="${BAZAR_DOCKER_FRONTEND_PORT:-8080}"
UP_TIMEOUT="${BAZAR_UP_TIMEOUT:-120}"
NODE_IMAGE="bazar/raft-node:latest"
FRONTEND_IMAGE="bazar/frontend:latest"
COMPOSE_FILE="$ROOT/docker/compose.yaml"
ENV_FILE="$DATA/docker/$PROJECT.env"
NETWORK="$PROJECT-net"
NODES=3
NODE_PORT=7101

die() { echo "docker.sh: $*" >&2; exit 1; }
STAGING=""
trap '[[ -z "$STAGING" ]] || rm -rf "$STAGING"' EXIT
say() { echo "docker.sh: $*"; }

[[ "$PROJECT" =~ ^[a-z0-9][a-z0-9_-]*$ ]] || die "BAZAR_DOCKER_PROJECT must be lower-case letters, digits, - and _, got '$PROJECT'"
[[ "$SUBNET" =~ ^([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})\.0/24$ ]] || die "BAZAR_DOCKER_SUBNET must be a /24 such as 172.28.0.0/24, got '$SUBNET'"
NET="${BASH_REMATCH[1]}"

# Every docker call is bounded: a wedged engine must not hang a script or a test.
dk() { timeout 60 docker "$@"; }

ensure_docker() {
  command -v docker >/dev/null || die "docker is not installed (Debian: apt-get install docker.io docker-compose)"
  local err
  err="$(timeout 20 docker info --format '{{.ServerVersion}}' 2>&1 >/dev/null)" \
    || die "no Docker engine answers (${err:-docker info timed out}); start it (systemctl start docker) or check DOCKER_HOST and your permissions"
}

# The compose command: `docker compose` (v2) when present, else docker-compose (v1).
COMPOSE=()
ensure_compose() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
  else
    die "neither 'docker compose' nor docker-compose is installed (Debian: apt-get install docker-compose)"
  fi
}

compose() {
  local files=(--file "$COMPOSE_FILE")
  [[ "${BAZAR_DOCKER_TLS:-}" == 1 ]] && files+=(--file "$ROOT/docker/compose.tls.yaml")
  timeout 300 "${COMPOSE[@]}" --project-name "$PROJECT" --env-file "$(realpath "$ENV_FILE")" "${files[@]}" "$@"
}

# With BAZAR_DOCKER_TLS=1: a CA and one certificate for every container
# (their addresses, 127.0.0.1, localhost), made once into $TLS_DIR.
TLS_DIR="$DATA/docker/tls"
ensure_certs() {
  [[ "${BAZAR_DOCKER_TLS:-}" == 1 ]] || return 0
  [[ -f "$TLS_DIR/cert.pem" && -f "$TLS_DIR/key.pem" && -f "$TLS_DIR/ca.pem" ]] && return 0
  command -v openssl >/dev/null || die "BAZAR_DOCKER_TLS=1 needs openssl (Debian: apt-get install openssl)"
  mkdir -p "$TLS_DIR"
  local sans="IP:127.0.0.1,DNS:localhost,IP:$NET.10" i
  for ((i = 1; i <= NODES; i++)); do sans+=",IP:$NET.1$i"; done
  (
    umask 077
    cd "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=Bazar $PROJECT CA" -keyout ca-key.pem -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=bazar $PROJECT" \
      -keyout key.pem -out cert.csr 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' \
      "$sans" > cert.ext
    openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
      -extfile cert.ext -out cert.pem 2>/dev/null
    rm -f cert.csr cert.ext ca.srl
    # The containers run as a non-root user: they must read the key.
    chmod 644 key.pem cert.pem ca.pem
  ) || die "making certificates in $TLS_DIR failed"
  say "TLS: CA and certificate in $TLS_DIR (clients: --ca $TLS_DIR/ca.pem, https://)"
}

image_exists() { dk image inspect "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- images --

ensure_binaries() {
  local missing=0 b
  for b in raft-node bazar; do [[ -x "$BIN/$b" ]] || missing=1; done
  [[ -f "$ROOT/frontend/Cargo.toml" && ! -x "$BIN/frontend" ]] && missing=1
  (( missing )) || return 0
  if [[ -n "${BAZAR_BIN_DIR:-}" ]]; then
    # Given binaries are used as they are; only the frontend may be missing.
    for b in raft-node bazar; do [[ -x "$BIN/$b" ]] || die "$b is missing in BAZAR_BIN_DIR=$BIN"; done
    return 0
  fi
  ensure_cargo || exit 1
  ensure_libclang || exit 1
  say "building release binaries (the first build takes about 10 minutes)"
  (cd "$ROOT" && cargo build --release --bins) || die "the build failed"
}

# Stages the build context of an image in DIR: rootfs/ with the BINARIES
# (debug info stripped), exactly the shared libraries ldd lists for them and
# the dynamic loader, a user bazar (10001) in /etc/passwd and /etc/group, and
# /tmp; data/ is an empty directory the Dockerfile copies to /data owned by bazar.
stage_rootfs() {
  local dir="$1"; shift
  mkdir -p "$dir/rootfs/usr/local/bin" "$dir/rootfs/etc" "$dir/rootfs/tmp" "$dir/data"
  chmod 1777 "$dir/rootfs/tmp"
  local b lib libs=()
  for b in "$@"; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing"
    if command -v objcopy >/dev/null; then
      objcopy --strip-debug "$BIN/$b" "$dir/rootfs/usr/local/bin/$b" || die "objcopy failed on $b"
    else
      cp "$BIN/$b" "$dir/rootfs/usr/local/bin/$b"
    fi
    local deps
    deps="$(ldd "$BIN/$b" 2>&1)" || deps=""   # a static binary has no libraries
    if grep -q 'not found' <<<"$deps"; then
      die "$b needs a library this machine does not have: $(grep 'not found' <<<"$deps" | tr -s ' \t' ' ')"
    fi
    # "libc.so.6 => /lib/.../libc.so.6 (0x..)" and "/lib64/ld-linux-x86-64.so.2 (0x..)"
    while read -r lib; do libs+=("$lib"); done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$deps")
  done
  for lib in "${libs[@]}"; do
    mkdir -p "$dir/rootfs$(dirname "$lib")"
    cp -L "$lib" "$dir/rootfs$lib"
  done
  printf 'root:x:0:0:root:/:/sbin/nologin\nbazar:x:10001:10001:bazar:/data:/sbin/nologin\n' > "$dir/rootfs/etc/passwd"
  printf 'root:x:0:\nbazar:x:10001:\n' > "$dir/rootfs/etc/group"
  printf 'hosts: files dns\n' > "$dir/rootfs/etc/nsswitch.conf"
}

build_image() {
  local name="$1" tag="$2"; shift 2
  local ctx out rev
  # A fresh context per build: two builds at once must not share one. It is
  # removed on the way out, also when the build dies half way.
  mkdir -p "$ROOT/target/docker"
  ctx="$(mktemp -d "$ROOT/target/docker/$name.XXXXXX")"
  STAGING="$ctx"
  stage_rootfs "$ctx" "$@"
  local old
  old="$(dk image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
  rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  out="$(dk build --file "$ROOT/docker/$name.Dockerfile" --tag "$tag" \
    --label "org.opencontainers.image.title=bazar $name" \
    --label "org.opencontainers.image.revision=$rev" "$ctx" 2>&1)" \
    || { echo "$out" >&2; die "docker build of $tag failed"; }
  local size libs
  size="$(dk image inspect --format '{{.Size}}' "$tag")"
  libs="$(find "$ctx/rootfs" -name '*.so*' | wc -l)"
  rm -rf "$ctx"
  STAGING=""
  # The image this one replaces, unless a container still uses it.
  if [[ -n "$old" && "$old" != "$(dk image inspect --format '{{.Id}}' "$tag")" ]]; then
    dk image rm "$old" >/dev/null 2>&1 || true
  fi
  say "built $tag ($((size / 1000000)) MB: $* and $libs shared libraries)"
}

build() {
  ensure_binaries
  build_image raft-node "$NODE_IMAGE" raft-node bazar
  if [[ -x "$BIN/frontend" ]]; then
    build_image frontend "$FRONTEND_IMAGE" frontend bazar
  else
    say "no frontend binary yet ($BIN/frontend): built the raft-node image only"
  fi
}

ensure_images() {
  local want=0
  image_exists "$NODE_IMAGE" || want=1
  # The frontend image, once its binary exists or can be built here.
  if [[ -x "$BIN/frontend" || ( -f "$ROOT/frontend/Cargo.toml" && -z "${BAZAR_BIN_DIR:-}" ) ]]; then
    image_exists "$FRONTEND_IMAGE" || want=1
  fi
  (( want )) && build
  return 0
}

# ------------------------------------------------------------- the cluster --

# Writes the env file compose reads: tokens, project, network, published ports.
write_env() {
  ensure_tokens_file "$DATA" docker.sh || die "cannot set up tokens in $DATA"
  mkdir -p "$DATA/docker"
  local profiles=""
  image_exists "$FRONTEND_IMAGE" && profiles=frontend
  (
    umask 077
    cat > "$ENV_FILE" <<EOF
# Written by scripts/docker.sh on every run; holds the tokens: keep it private.
COMPOSE_PROJECT_NAME=$PROJECT
COMPOSE_PROFILES=$profiles
BAZAR_PROJECT=$PROJECT
BAZAR_SUBNET=$SUBNET
BAZAR_NET=$NET
BAZAR_BIND=$BIND
BAZAR_NODE1_PORT=$((PORT_BASE + 1))
BAZAR_NODE2_PORT=$((PORT_BASE + 2))
BAZAR_NODE3_PORT=$((PORT_BASE + 3))
BAZAR_FRONTEND_PORT=$FRONTEND_PORT
BAZAR_NODE_IMAGE=$NODE_IMAGE
BAZAR_FRONTEND_IMAGE=$FRONTEND_IMAGE
BAZAR_ADMIN_TOKEN=$BAZAR_ADMIN_TOKEN
BAZAR_CLUSTER_TOKEN=$BAZAR_CLUSTER_TOKEN
BAZAR_FRONTEND_TOKEN=$BAZAR_FRONTEND_TOKEN
BAZAR_TLS_DIR=$(realpath -m "$TLS_DIR")
EOF
  )
  export COMPOSE_PROFILES="$profiles"
}

container_of() {
  case "$1" in
    frontend) echo "$PROJECT-frontend" ;;
    *) echo "$PROJECT-node-$1" ;;
  esac
}

check_target() {
  [[ "${1:-}" == frontend ]] && return 0
  if ! [[ "${1:-}" =~ ^[0-9]+$ ]] || (( $1 < 1 || $1 > NODES )); then
    die "expected a node number from 1 to $NODES (or frontend), got '${1:-}'"
  fi
}

# created, running, paused, restarting, exited, dead; "missing" when there is no such container.
state_of() {
  local st
  st="$(dk inspect --format '{{.State.Status}}' "$(container_of "$1")" 2>/dev/null)" && [[ -n "$st" ]] || st=missing
  echo "$st"
}

connected() {
  local nets
  # shellcheck disable=SC2016 # a Go template, not a shell expansion
  nets="$(dk inspect --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$(container_of "$1")" 2>/dev/null)" || return 1
  [[ " $nets " == *" $NETWORK "* ]]
}

# /health of N, asked from inside its container (so it works whatever the host
# can route to, and for a partitioned node it is that node's own view).
health_of() {
  local port=$NODE_PORT
  [[ "$1" == frontend ]] && port=8080
  local scheme=http tls=()
  [[ "${BAZAR_DOCKER_TLS:-}" == 1 ]] && scheme=https tls=(--ca /tls/ca.pem)
  timeout 5 docker exec "$(container_of "$1")" /usr/local/bin/bazar --json --timeout 2 "${tls[@]}" \
    --frontend "$scheme://127.0.0.1:$port" health 2>/dev/null
}

field() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"; }
# The leader of group $2 in a /health answer $1 (its "groups" object names the
# groups again, so look inside "leaders" only).
leader_field() { field "$(sed -n 's/.*"leaders":{\([^}]*\)}.*/\1/p' <<<"$1")" "$2"; }

# The leader of group G that a majority of the connected, running nodes agree on.
leader_of() {
  local group="$1" i h l votes=()
  for ((i = 1; i <= NODES; i++)); do
    [[ "$(state_of "$i")" == running ]] || continue
    connected "$i" || continue
    h="$(health_of "$i")" || continue
    l="$(leader_field "$h" "$group")"
    [[ "$l" =~ ^[0-9]+$ ]] && votes+=("$l")
  done
  (( ${#votes[@]} > 0 )) || return 1
  local best count
  read -r count best < <(printf '%s\n' "${votes[@]}" | sort | uniq -c | sort -rn | head -n1)
  (( count > NODES / 2 )) || return 1
  echo "$best"
}

wait_ready() {
  local deadline=$((SECONDS + UP_TIMEOUT)) i h st
  for ((i = 1; i <= NODES; i++)); do
    while :; do
      st="$(state_of "$i")"
      if [[ "$st" == exited || "$st" == dead || "$st" == missing ]]; then
        echo "--- last lines of $(container_of "$i") ---" >&2
        dk logs --tail 20 "$(container_of "$i")" >&2 || true
        die "node $i is $st"
      fi
      h="$(health_of "$i" || true)"
      if [[ "$(field "$h" catalog_seeded)" == true && "$(leader_field "$h" catalog)" =~ ^[0-9]+$ && "$(leader_field "$h" orders)" =~ ^[0-9]+$ ]]; then
        break
      fi
      (( SECONDS < deadline )) || { echo "last /health of node $i: ${h:-no answer}" >&2; die "node $i not ready after ${UP_TIMEOUT}s (scripts/docker.sh logs $i)"; }
      sleep 0.5
    done
  done
  if [[ "$(state_of frontend)" != missing ]]; then
    until health_of frontend >/dev/null; do
      (( SECONDS < deadline )) || die "frontend not ready after ${UP_TIMEOUT}s (scripts/docker.sh logs frontend)"
      sleep 0.5
    done
  fi
}

status() {
  local i st health net h cat ord seeded
  printf '%-9s %-22s %-8s %-10s %-10s %-18s %-9s %-9s %-7s\n' SERVICE CONTAINER STATE HEALTH NETWORK ADDRESS CATALOG ORDERS SEEDED
  for i in $(seq 1 "$NODES") frontend; do
    st="$(state_of "$i")"
    [[ "$i" == frontend && "$st" == missing ]] && continue
    health="$(dk inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}}' "$(container_of "$i")" 2>/dev/null || echo -)"
    if [[ "$st" == missing ]]; then net=-; elif connected "$i"; then net=connected; else net=DETACHED; fi
    cat=-; ord=-; seeded=-
    if [[ "$i" != frontend && "$st" == running ]] && h="$(health_of "$i")"; then
      cat="leader=$(leader_field "$h" catalog)"; ord="leader=$(leader_field "$h" orders)"; seeded="$(field "$h" catalog_seeded)"
    fi
    local addr="$NET.1$i:$NODE_PORT"
    [[ "$i" == frontend ]] && addr="$NET.10:8080"
    printf '%-9s %-22s %-8s %-10s %-10s %-18s %-9s %-9s %-7s\n' \
      "$([[ $i == frontend ]] && echo frontend || echo "node-$i")" "$(container_of "$i")" "$st" "$health" "$net" "$addr" "$cat" "$ord" "$seeded"
  done
}

require_state() {
  local st; st="$(state_of "$1")"
  [[ "$st" != missing ]] || die "$(container_of "$1") does not exist (scripts/docker.sh up)"
  [[ " ${*:2} " == *" $st "* ]] || die "$(container_of "$1") is $st"
}

partition() {
  local c; c="$(container_of "$1")"
  require_state "$1" running paused
  connected "$1" || die "$c is already detached from $NETWORK"
  dk network disconnect "$NETWORK" "$c" || die "could not detach $c from $NETWORK"
  say "partitioned $c: detached from $NETWORK (scripts/docker.sh heal reattaches it)"
}

heal() {
  local i c ip alias healed=0 targets
  targets="${1:-$(seq 1 "$NODES") frontend}"
  for i in $targets; do
    c="$(container_of "$i")"
    if [[ "$(state_of "$i")" == missing ]]; then
      [[ -z "${1:-}" ]] || die "$c does not exist"
      continue
    fi
    connected "$i" && continue
    ip="$(dk inspect --format '{{index .Config.Labels "bazar.ip"}}' "$c")"
    alias="$(dk inspect --format '{{index .Config.Labels "bazar.service"}}' "$c")"
    [[ -n "$ip" ]] || die "$c has no bazar.ip label: was it started by scripts/docker.sh?"
    dk network connect --ip "$ip" --alias "$alias" "$NETWORK" "$c" || die "could not reattach $c to $NETWORK at $ip"
    say "reattached $c at $ip"
    healed=$((healed + 1))
  done
  if (( healed == 0 )); then
    if [[ -n "${1:-}" ]]; then say "nothing to heal: $(container_of "$1") is attached to $NETWORK"; else say "nothing to heal: every container is attached to $NETWORK"; fi
  fi
}

cmd="${1:-}"
case "$cmd" in
  build|up|down|status|kill|pause|resume|restart|partition|isolate-leader|heal|logs) ensure_docker ;;
esac
case "$cmd" in
  build)
    build
    ;;
  up)
    ensure_compose
    ensure_images
    write_env
    ensure_certs
    say "env file: $ENV_FILE"
    out="$(compose up --detach 2>&1)" || {
      echo "$out" >&2
      grep -qiE 'overlap|address already in use|port is already allocated' <<<"$out" \
        && echo "hint: another cluster uses that subnet or port: set BAZAR_DOCKER_SUBNET, BAZAR_DOCKER_PORT_BASE or BAZAR_DOCKER_FRONTEND_PORT" >&2
      die "compose up failed"
    }
    wait_ready
    say "cluster is up (project $PROJECT, network $NETWORK $SUBNET)"
    status
    scheme="" ca=""
    [[ "${BAZAR_DOCKER_TLS:-}" == 1 ]] && scheme="https://" ca=" --ca $TLS_DIR/ca.pem"
    if image_exists "$FRONTEND_IMAGE"; then
      say "try: $BIN/bazar$ca --frontend $scheme$BIND:$FRONTEND_PORT search 'distributed systems'"
    else
      say "try: $BIN/bazar$ca --frontend $scheme$BIND:$((PORT_BASE + 1)) search 'distributed systems'"
    fi
    ;;
  down)
    ensure_compose
    volumes=()
    case "${2:-}" in
      "") ;;
      -v|--volumes) volumes=(--volumes) ;;
      *) die "down takes -v (also delete the data volumes), got '$2'" ;;
    esac
    write_env
    export COMPOSE_PROFILES=frontend   # take the frontend down too, if there is one
    for i in $(seq 1 "$NODES") frontend; do
      [[ "$(state_of "$i")" == paused ]] && dk unpause "$(container_of "$i")" >/dev/null
    done
    compose down --timeout 15 "${volumes[@]}" || die "compose down failed"
    if (( ${#volumes[@]} )); then say "removed project $PROJECT and its data volumes"; else say "removed project $PROJECT; data volumes kept (down -v deletes them)"; fi
    ;;
  status)
    status
    ;;
  kill)
    check_target "${2:-}"
    require_state "$2" running paused
    dk kill --signal KILL "$(container_of "$2")" >/dev/null || die "could not kill $(container_of "$2")"
    say "killed $(container_of "$2") (SIGKILL); scripts/docker.sh restart $2 starts it again"
    ;;
  pause)
    check_target "${2:-}"
    require_state "$2" running
    dk pause "$(container_of "$2")" >/dev/null || die "could not pause $(container_of "$2")"
    say "paused $(container_of "$2")"
    ;;
  resume)
    check_target "${2:-}"
    require_state "$2" paused
    dk unpause "$(container_of "$2")" >/dev/null || die "could not resume $(container_of "$2")"
    say "resumed $(container_of "$2")"
    ;;
  restart)
    check_target "${2:-}"
    c="$(container_of "$2")"
    st="$(state_of "$2")"
    [[ "$st" != missing ]] || die "$c does not exist (scripts/docker.sh up)"
    [[ "$st" == paused ]] && dk unpause "$c" >/dev/null
    if [[ "$st" == running || "$st" == paused ]]; then
      dk stop --time 15 "$c" >/dev/null || die "could not stop $c"
    fi
    dk start "$c" >/dev/null || die "could not start $c"
    deadline=$((SECONDS + UP_TIMEOUT))
    until health_of "$2" >/dev/null; do
      st="$(state_of "$2")"
      [[ "$st" == running ]] || { dk logs --tail 20 "$c" >&2 || true; die "$c is $st after starting it"; }
      (( SECONDS < deadline )) || die "$c did not answer /health after ${UP_TIMEOUT}s"
      sleep 0.2
    done
    if connected "$2"; then say "$c is back"; else say "$c is back, still detached from $NETWORK (scripts/docker.sh heal)"; fi
    ;;
  partition)
    check_target "${2:-}"
    partition "$2"
    ;;
  isolate-leader)
    group="${2:-}"
    [[ "$group" == catalog || "$group" == orders ]] || die "isolate-leader takes a group: catalog or orders, got '$group'"
    leader="$(leader_of "$group")" || die "no $group leader that a majority of the attached nodes agree on"
    partition "$leader"
    say "isolated node $leader, the $group leader, from the majority"
    deadline=$((SECONDS + 10))
    while (( SECONDS < deadline )); do
      if new="$(leader_of "$group")" && [[ "$new" != "$leader" ]]; then
        say "node $new leads $group now"
        exit 0
      fi
      sleep 0.2
    done
    say "warning: the majority has not agreed on a new $group leader within 10 s"
    ;;
  heal)
    [[ -z "${2:-}" ]] || check_target "$2"
    heal "${2:-}"
    ;;
  logs)
    check_target "${2:-}"
    require_state "$2" created running paused restarting exited dead
    exec docker logs "${@:3}" "$(container_of "$2")"
    ;;
  *)
    print_usage "$0"
    [[ -z "$cmd" ]] && exit 2
    die "unknown command '$cmd'"
    ;;
esac
