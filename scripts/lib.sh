# Shared helpers for Bazar's scripts (sourced, not run).

# Makes sure RocksDB's bindings can be built: they need libclang. Installs
# libclang-dev through apt when running as root, otherwise says what to do.
ensure_libclang() {
  if compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null \
    || compgen -G "/usr/lib/*/libclang*.so*" >/dev/null \
    || ldconfig -p 2>/dev/null | grep -q libclang; then
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

# Makes sure cargo is available.
ensure_cargo() {
  command -v cargo >/dev/null || { echo "cargo is not installed: install Rust from https://rustup.rs" >&2; return 1; }
}
