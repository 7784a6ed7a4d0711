#!/usr/bin/env bash
# Runs every test of the workspace, through the real PC/SC stack (pcscd + vpcd).
# Installs what it needs (Debian packages), starts what is not running (pcscd; the hooks in
# scripts/test-setup.d/ start more), and stops only what it started, by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/iphr-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
IPHR_CLEANUP=()
trap iphr_cleanup EXIT

require_cargo
apt_install pcscd libpcsclite-dev pkg-config vsmartcard-vpcd opensc pcsc-tools

# Hooks: each is sourced in this shell; it may install, start services, export variables for the
# tests, and push commands onto IPHR_CLEANUP (run in reverse order at exit).
for hook in scripts/test-setup.d/*.sh; do
  [ -e "$hook" ] || continue
  step "setup: ${hook##*/}"
  # shellcheck disable=SC1090
  source "$hook"
done

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test"
cargo test --workspace --locked
