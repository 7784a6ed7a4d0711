#!/usr/bin/env bash
# Runs the system without hardware: pcscd with vsmartcard's virtual reader, a virtual My Number
# card in it, and the card agent showing the card. On a terminal it keeps the card inserted until
# Enter is pressed, so that other `card-agent` commands can be tried beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/iphr-target}"
IPHR_CLEANUP=()
trap iphr_cleanup EXIT

require_cargo
apt_install pcscd libpcsclite-dev pkg-config vsmartcard-vpcd opensc pcsc-tools
source scripts/test-setup.d/10-pcscd.sh

step "build"
cargo build --release -p card-agent --locked
AGENT="$CARGO_TARGET_DIR/release/card-agent"
CARD_DIR="${IPHR_DEMO_DIR:-.iphr/demo}/virtual-my-number-card"

step "virtual My Number card"
# The vpcd readers are shared with the tests: hold the same lock they hold.
exec 9>"${TMPDIR:-/tmp}/iphr-pcsc.lock"
flock 9
"$AGENT" virtual-card jpki --dir "$CARD_DIR" --reset-counters --create-only >/dev/null
"$AGENT" virtual-card jpki --dir "$CARD_DIR" &
CARD_PID=$!
IPHR_CLEANUP+=("kill $CARD_PID 2>/dev/null")
card_seen() { "$AGENT" readers | grep -q "Virtual PCD 00 00: card"; }
wait_for 15 card_seen || { echo "the virtual card did not appear in 'Virtual PCD 00 00'" >&2; exit 1; }

step "card-agent status"
"$AGENT" status --reader "Virtual PCD 00 00"

if [ -t 0 ]; then
  cat <<MSG

The virtual card stays in 'Virtual PCD 00 00'. Try, in another terminal:
  $AGENT sign --challenge 0123456789abcdef      (PIN: 1234)
  opensc-tool -n; pkcs15-tool --list-certificates
Press Enter to remove the card and stop.
MSG
  read -r _
fi
