# Shared shell helpers for scripts/*.sh (sourced, not run).

step() { printf '\n=== %s\n' "$*" >&2; }

# Runs the cleanup commands pushed onto IPHR_CLEANUP, last first.
iphr_cleanup() {
  local i
  for ((i = ${#IPHR_CLEANUP[@]} - 1; i >= 0; i--)); do
    eval "${IPHR_CLEANUP[$i]}" || true
  done
}

require_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || {
    echo "cargo not found: install a Rust toolchain (rustup, Rust >= 1.95) first" >&2
    exit 1
  }
}

# Installs the Debian packages that are missing; a machine that has them all skips apt.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Polls a command until it succeeds, up to $1 seconds.
wait_for() {
  local timeout=$1; shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}
