# shellcheck shell=bash
# Shared helpers for Bazar's scripts (sourced, not run).

# Makes sure RocksDB's bindings can be built: they need libclang. Installs
# libclang-dev through apt when running as root, otherwise says what to do.
ensure_libclang() {
  # libclang itself (libclang.so*, libclang-N.so*), not libclang-cpp, which
  # some images carry without it and which clang-sys cannot use.
  if compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null \
    || compgen -G "/usr/lib/*/libclang.so*" >/dev/null \
    || compgen -G "/usr/lib/*/libclang-[0-9]*.so*" >/dev/null \
    || ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so'; then
    return 0
  fi
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing libclang-dev (RocksDB's bindings need it)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null; } \
      || { echo "could not install libclang-dev" >&2; return 1; }
  else
    echo "RocksDB's bindings need libclang: install it (Debian/Ubuntu: sudo apt-get install libclang-dev) and retry" >&2
    return 1
  fi
}

# Prints the path of libfaketime's thread-safe library (what the clock
# faults preload into nodes), or fails when it is not installed.
faketime_library() {
  local f
  for f in "${BAZAR_LIBFAKETIME:-}" /usr/lib/*/faketime/libfaketimeMT.so.1 \
    /usr/lib/faketime/libfaketimeMT.so.1 /usr/local/lib/faketime/libfaketimeMT.so.1; do
    [[ -n "$f" && -f "$f" ]] && { echo "$f"; return 0; }
  done
  return 1
}

# Makes sure libfaketime is installed (the clock-fault tests run nodes under
# it). Installs Debian's faketime through apt when running as root,
# otherwise says what to do.
ensure_faketime() {
  faketime_library >/dev/null && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing faketime (the clock-fault tests run nodes under libfaketime)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null; } \
      || { echo "could not install faketime" >&2; return 1; }
    faketime_library >/dev/null || { echo "faketime is installed but libfaketimeMT.so.1 was not found" >&2; return 1; }
  else
    echo "the clock-fault tests need libfaketime: install it (Debian/Ubuntu: sudo apt-get install faketime)," \
      "set BAZAR_LIBFAKETIME to libfaketimeMT.so.1, or skip them with BAZAR_SKIP_CLOCKS=1" >&2
    return 1
  fi
}

# Makes sure the power-loss tests can unmount what they mount: lazyfs
# (tests/src/lazyfs) mounts with mount(2) as root and falls back to
# fusermount3 -u -z to clean up, from Debian's fuse3. Installs it through apt
# when running as root, otherwise says what to do. (The kernel's /dev/fuse
# cannot be installed: without it the power-loss tests fail and say so,
# unless BAZAR_SKIP_POWERLOSS=1.)
ensure_fuse3() {
  command -v fusermount3 >/dev/null && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing fuse3 (the power-loss tests mount a FUSE file system)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null; } \
      || { echo "could not install fuse3" >&2; return 1; }
  else
    echo "the power-loss tests need fusermount3: install it (Debian/Ubuntu: sudo apt-get install fuse3) and retry" >&2
    return 1
  fi
}

# Makes sure cargo is available.
ensure_cargo() {
  command -v cargo >/dev/null || { echo "cargo is not installed: install Rust from https://rustup.rs" >&2; return 1; }
}

# Makes sure rustfmt and clippy, which the test command's lint step runs,
# are installed with the toolchain.
ensure_lint_tools() {
  local absent=()
  cargo fmt --version >/dev/null 2>&1 || absent+=(rustfmt)
  cargo clippy --version >/dev/null 2>&1 || absent+=(clippy)
  if ((${#absent[@]})); then
    echo "the lint step needs ${absent[*]}: install with 'rustup component add ${absent[*]}' and retry" >&2
    return 1
  fi
}

# Makes the admin, cluster and frontend tokens available as exported
# BAZAR_ADMIN_TOKEN, BAZAR_CLUSTER_TOKEN and BAZAR_FRONTEND_TOKEN: taken from
# the environment when the first two are set, otherwise read from
# DIR/tokens.env, otherwise generated into it (mode 600; the `bazar` CLI reads
# the admin token from there). A frontend token missing from both is taken
# from the file, or generated and added to it (files written before it
# existed). Says which on stderr, prefixed by WHO.
ensure_tokens_file() {
  local dir="$1" who="$2" file="$1/tokens.env"
  if [[ -n "${BAZAR_ADMIN_TOKEN:-}" && -n "${BAZAR_CLUSTER_TOKEN:-}" ]]; then
    if [[ -z "${BAZAR_FRONTEND_TOKEN:-}" && -f "$file" ]]; then
      BAZAR_FRONTEND_TOKEN="$(sed -n 's/^BAZAR_FRONTEND_TOKEN=//p' "$file" | tail -n 1)"
    fi
    if [[ -z "${BAZAR_FRONTEND_TOKEN:-}" ]]; then
      BAZAR_FRONTEND_TOKEN="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
      [[ -f "$file" ]] && (umask 077 && printf 'BAZAR_FRONTEND_TOKEN=%s\n' "$BAZAR_FRONTEND_TOKEN" >> "$file")
    fi
    export BAZAR_ADMIN_TOKEN BAZAR_CLUSTER_TOKEN BAZAR_FRONTEND_TOKEN
    return 0
  fi
  mkdir -p "$dir" || return 1
  if [[ -f "$file" ]]; then
    # shellcheck disable=SC1090
    source "$file"
    [[ -n "${BAZAR_ADMIN_TOKEN:-}" && -n "${BAZAR_CLUSTER_TOKEN:-}" ]] \
      || { echo "$who: $file does not set BAZAR_ADMIN_TOKEN and BAZAR_CLUSTER_TOKEN" >&2; return 1; }
    if [[ -z "${BAZAR_FRONTEND_TOKEN:-}" ]]; then
      BAZAR_FRONTEND_TOKEN="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
      printf 'BAZAR_FRONTEND_TOKEN=%s\n' "$BAZAR_FRONTEND_TOKEN" >> "$file" || return 1
      echo "$who: added a frontend token to $file" >&2
    fi
  else
    BAZAR_ADMIN_TOKEN="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    BAZAR_CLUSTER_TOKEN="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    BAZAR_FRONTEND_TOKEN="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    (umask 077 && printf 'BAZAR_ADMIN_TOKEN=%s\nBAZAR_CLUSTER_TOKEN=%s\nBAZAR_FRONTEND_TOKEN=%s\n' \
      "$BAZAR_ADMIN_TOKEN" "$BAZAR_CLUSTER_TOKEN" "$BAZAR_FRONTEND_TOKEN" > "$file") || return 1
    echo "$who: generated tokens in $file" >&2
  fi
  export BAZAR_ADMIN_TOKEN BAZAR_CLUSTER_TOKEN BAZAR_FRONTEND_TOKEN
  echo "$who: tokens: $file" >&2
}

# Makes sure python3 can make virtualenvs (the API fuzzer is installed into
# one from PyPI). Installs python3-venv through apt when running as root,
# otherwise says what to do.
ensure_python_venv() {
  if command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; then
    return 0
  fi
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing python3 and python3-venv (the API fuzzer runs in a virtualenv)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null; } \
      || { echo "could not install python3-venv" >&2; return 1; }
  else
    echo "the API fuzzer needs python3 with venv: install it (Debian/Ubuntu: sudo apt-get install python3-venv) and retry" >&2
    return 1
  fi
}

# Makes sure headless Chromium and its WebDriver can run (the browser test
# drives the storefront and the lab with them). Installs Debian's chromium
# and chromium-driver through apt when running as root, otherwise says what
# to do. BAZAR_SKIP_BROWSER=1 skips the browser test instead.
ensure_chromium() {
  if [[ "${BAZAR_SKIP_BROWSER:-}" == 1 ]]; then
    return 0
  fi
  if command -v chromedriver >/dev/null && { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
    return 0
  fi
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing chromium and chromium-driver (the browser test drives them)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
      || { echo "could not install chromium and chromium-driver" >&2; return 1; }
  else
    echo "the browser test needs chromium and chromedriver: install them (Debian: sudo apt-get install chromium chromium-driver), or set BAZAR_SKIP_BROWSER=1" >&2
    return 1
  fi
}

# Prints the comment block at the top of the script $1: its usage.
print_usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$1"
}

# For the measuring scripts (scale.sh, retention.sh): builds the release
# binaries unless $3 is 0, then makes a temporary folder named after $1 for
# a local cluster with nodes on ports $2+1, $2+2, ... and the frontend on
# $2+80, and exports what scripts/cluster.sh reads. Sets WORK and BASE.
measure_cluster_env() {
  local name="$1" base="$2" build="$3"
  if ((build)); then
    ensure_cargo || return 1
    ensure_libclang || return 1
    (cd "$ROOT" && cargo build --release --workspace --bins) || return 1
  fi
  BASE="$base"
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/bazar-$name.XXXXXX")"
  export BAZAR_DATA="$WORK" BAZAR_PORT_BASE="$BASE" BAZAR_FRONTEND_ADDR="127.0.0.1:$((BASE + 80))"
}
