# Starts pcscd (with vsmartcard's vpcd readers) unless one already serves; stops it afterwards.
# A pcscd that is exiting (process still there, socket gone) is waited for, then replaced.
pcscd_running() { pgrep -x pcscd >/dev/null 2>&1; }
pcscd_serving() { pcscd_running && test -S /run/pcscd/pcscd.comm; }
vpcd_reader_listed() { pcsc_scan -r 2>/dev/null | grep -q "Virtual PCD 00 00"; }
if pcscd_running && ! wait_for 5 pcscd_serving; then
  echo "a pcscd without its socket is running; waiting for it to exit" >&2
  wait_for 10 bash -c '! pgrep -x pcscd' || { echo "a stale pcscd does not exit" >&2; exit 1; }
fi
if pcscd_serving; then
  echo "pcscd already running; using it" >&2
else
  mkdir -p "${CARGO_TARGET_DIR}/logs"
  # APDUs (test PINs included) are logged only on request: IPHR_PCSCD_APDU_LOG=1.
  pcscd --foreground --debug ${IPHR_PCSCD_APDU_LOG:+--apdu} >"${CARGO_TARGET_DIR}/logs/pcscd.log" 2>&1 &
  PCSCD_PID=$!
  IPHR_CLEANUP+=("kill -TERM $PCSCD_PID 2>/dev/null; wait_for 10 bash -c '! kill -0 $PCSCD_PID'")
fi
wait_for 10 test -S /run/pcscd/pcscd.comm || { echo "pcscd did not start" >&2; exit 1; }
wait_for 10 vpcd_reader_listed || { echo "vpcd reader 'Virtual PCD 00 00' not listed" >&2; exit 1; }
export IPHR_PCSC_READY=1
