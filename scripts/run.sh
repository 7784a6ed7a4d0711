#!/usr/bin/env bash
# The demo, without hardware: pcscd with vsmartcard's virtual readers, a virtual My Number card in
# the first; the gateway on SQLite (a fresh database each run) with sample data imported through its
# drop directory (特定健診 archive and CDA, レセプト, stress check), a partner PHR service registered (mTLS certificate +
# private_key_jwt keys), the kiosk page and the card agent's localhost API; three reference source
# servers (健診機関, 保険者, 産業医クラウド) and a virtual PHR card in the second reader, which signs
# in, consents, links at each source and grants, while the gateway pulls (progress shown), then a
# new file at a source arriving with the scheduled pull. On a terminal it then runs until Ctrl-C;
# otherwise (scripts, CI) it checks that everything answers and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/iphr-target}"
IPHR_CLEANUP=()
trap iphr_cleanup EXIT

require_cargo
apt_install pcscd libpcsclite-dev pkg-config vsmartcard-vpcd opensc pcsc-tools openssl curl python3
source scripts/test-setup.d/10-pcscd.sh

step "build"
cargo build --release -p card-agent -p gateway -p iphr-source --locked
cargo build --release -p iphr-tests --bin kiosk-demo --locked
AGENT="$CARGO_TARGET_DIR/release/card-agent"
GATEWAY="$CARGO_TARGET_DIR/release/iphr-gateway"
SOURCE="$CARGO_TARGET_DIR/release/iphr-source"
KIOSK_DEMO="$CARGO_TARGET_DIR/release/kiosk-demo"
DEMO="$(mkdir -p "${IPHR_DEMO_DIR:-.iphr/demo}" && cd "${IPHR_DEMO_DIR:-.iphr/demo}" && pwd)"
CARD_DIR="$DEMO/virtual-my-number-card"
GW="$DEMO/gateway"
SRC="$DEMO/sources"
mkdir -p "$GW"
# Each run starts from a fresh database, fresh sources and a fresh PHR card.
rm -rf "$GW"/gateway.db* "$SRC" "$DEMO/phr-card"
mkdir -p "$SRC"
KIOSK_PORT="${IPHR_DEMO_PORT:-8443}"
PARTNER_PORT="${IPHR_DEMO_PARTNER_PORT:-9443}"
AGENT_PORT="${IPHR_DEMO_AGENT_PORT:-24700}"
ORIGIN="https://localhost:$KIOSK_PORT"

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
"$AGENT" status --reader "Virtual PCD 00 00"

step "gateway configuration (TLS, the test CA and its CRL, a partner's keys)"
# Server certificates are end-entity certificates (CA:FALSE): rustls clients (the kiosk client,
# the gateway's source connector) refuse a CA certificate used as a server's own.
server_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" \
    -addext "basicConstraints=critical,CA:FALSE" -keyout "$1.key" -out "$1.pem" 2>/dev/null
}
server_cert "$GW/tls"
# The virtual card's JPKI-like test CA, and a CRL it signs (openssl's minimal CA database).
CA="$CARD_DIR/ca"
openssl x509 -inform DER -in "$CA/auth-ca.der" -out "$GW/jpki-auth-ca.pem"
mkdir -p "$GW/crl-db"
: >"$GW/crl-db/index.txt"
[ -f "$GW/crl-db/crlnumber" ] || echo 01 >"$GW/crl-db/crlnumber"
cat >"$GW/crl-db/ca.cnf" <<CNF
[ ca ]
default_ca = demo
[ demo ]
database = $GW/crl-db/index.txt
crlnumber = $GW/crl-db/crlnumber
default_md = sha256
default_crl_days = 30
CNF
openssl ca -gencrl -config "$GW/crl-db/ca.cnf" -keyfile "$CA/auth-ca.key.pem" \
  -cert "$GW/jpki-auth-ca.pem" -out "$GW/jpki-auth.crl.pem" 2>/dev/null
# The partner: a self-signed mTLS client certificate and a P-256 key for private_key_jwt.
if [ ! -f "$GW/partner.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=demo-phr-app" -keyout "$GW/partner.key" -out "$GW/partner.pem" 2>/dev/null
  openssl ec -in "$GW/partner.key" -pubout -outform DER -out "$GW/partner.pub.der" 2>/dev/null
  python3 - "$GW/partner.pub.der" >"$GW/partner.jwks.json" <<'PY'
import base64, json, sys
point = open(sys.argv[1], "rb").read()[-64:]  # SubjectPublicKeyInfo ends with X || Y
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "demo-1", "use": "sig",
                            "alg": "ES256", "x": b64(point[:32]), "y": b64(point[32:])}]}))
PY
fi
step "three reference sources (mTLS: each its own server certificate; the gateway's client certificate)"
SOURCE_PORT0="${IPHR_DEMO_SOURCE_PORT:-9451}"
"$KIOSK_DEMO" ca --dir "$DEMO/phr-issuer" >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=iphr-demo-gateway" -keyout "$GW/source-client.key" -out "$GW/source-client.pem" 2>/dev/null
SOURCES=(
  "kenshin-tokyo|東京健診センター|K-0001|KENSHIN-7KQ2-MX4P|A.checkup"
  "kyokai-kenpo|けんぽ健康保険組合|H-0001|KENPO-9D2T-AXQ1|A.claims"
  "op-cloud|産業医クラウド|W003|OPCLOUD-44RW-PZ8C|B.attendance,C.interview,C.oh-opinion"
)
SOURCES_TOML=""
KIOSK_SOURCES=()
i=0
for entry in "${SOURCES[@]}"; do
  IFS='|' read -r id name pseudonym code categories <<<"$entry"
  port=$((SOURCE_PORT0 + i)); i=$((i + 1))
  dir="$SRC/$id"
  mkdir -p "$dir/data"
  cp -r "tests/fixtures/sources/$id/$pseudonym" "$dir/data/"
  server_cert "$dir/tls"
  cat >"$dir/source.toml" <<TOML
service_id = "$id"
listen = "127.0.0.1:$port"
data_dir = "data"
state_dir = "state"
tls_cert = "tls.pem"
tls_key = "tls.key"
phr_issuer_ca = "$DEMO/phr-issuer/phr-issuer-ca.der"
[[gateways]]
audience = "iphr-demo-gateway"
certificate = "$GW/source-client.pem"
[[enrollments]]
code = "$code"
pseudonym = "$pseudonym"
TOML
  "$SOURCE" --config "$dir/source.toml" 2>"$dir/source.log" &
  pid=$!
  IPHR_CLEANUP+=("kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null")
  source_up() { curl -sfk --cert "$GW/source-client.pem" --key "$GW/source-client.key" "https://localhost:$1/healthz" >/dev/null; }
  wait_for 15 source_up "$port" || { cat "$dir/source.log" >&2; echo "source $id did not answer" >&2; exit 1; }
  SOURCES_TOML+=$'\n'"[[sources.source]]"$'\n'"id = \"$id\""$'\n'"url = \"https://localhost:$port\""$'\n'"server_ca = \"$dir/tls.pem\""
  KIOSK_SOURCES+=(--source "$id:$pseudonym:$code:$categories")
done

cat >"$GW/gateway.toml" <<TOML
public_origin = "$ORIGIN"
listen = "127.0.0.1:$KIOSK_PORT"
[tls]
cert = "$GW/tls.pem"
key = "$GW/tls.key"
[database]
url = "sqlite://$GW/gateway.db"
[kiosk]
agent_url = "http://127.0.0.1:$AGENT_PORT"
[[trust]]
card_type = "jpki"
key = "auth"
anchors = ["$GW/jpki-auth-ca.pem"]
crls = ["$GW/jpki-auth.crl.pem"]
[partner]
listen = "127.0.0.1:$PARTNER_PORT"
public_url = "https://localhost:$PARTNER_PORT"
[import]
drop_dir = "$GW/drop"
[[trust]]
card_type = "phr"
key = "auth"
anchors = ["$DEMO/phr-issuer/phr-issuer-ca.der"]
# The demo's PHR card issuer publishes no CRL.
revocation = "disabled"
[sources]
gateway_id = "iphr-demo-gateway"
client_cert = "$GW/source-client.pem"
client_key = "$GW/source-client.key"
pull_interval_secs = 5
$SOURCES_TOML
TOML

step "the partner and the sources registered"
"$GATEWAY" --config "$GW/gateway.toml" register-partner --id demo-phr-app \
  --name "けんこう手帳アプリ" --purpose "健診結果の経年表示と生活習慣の助言" \
  --categories A.checkup,A.stress-check --certificate "$GW/partner.pem" \
  --jwks "$GW/partner.jwks.json"
for entry in "${SOURCES[@]}"; do
  IFS='|' read -r id name pseudonym code categories <<<"$entry"
  "$GATEWAY" --config "$GW/gateway.toml" register-partner --source --id "$id" --name "$name" \
    --purpose "健康管理と両立支援のための記録の取り込み" --categories "$categories"
done

step "gateway"
"$GATEWAY" --config "$GW/gateway.toml" 2>"$GW/gateway.log" &
GATEWAY_PID=$!
IPHR_CLEANUP+=("kill -INT $GATEWAY_PID 2>/dev/null; wait $GATEWAY_PID 2>/dev/null")
healthy() { curl -sfk "$ORIGIN/healthz" >/dev/null; }
wait_for 30 healthy || { cat "$GW/gateway.log" >&2; echo "the gateway did not answer" >&2; exit 1; }
curl -sfk -o /dev/null "$ORIGIN/kiosk"
# The partner listener refuses a client without a registered certificate, and serves the
# CapabilityStatement to the registered one.
if curl -sk -o /dev/null "https://localhost:$PARTNER_PORT/fhir/metadata"; then
  echo "the partner listener accepted a client without a certificate" >&2; exit 1
fi
curl -sfk --cert "$GW/partner.pem" --key "$GW/partner.key" \
  "https://localhost:$PARTNER_PORT/fhir/metadata" | grep -q CapabilityStatement

step "the kiosk with a virtual PHR card: consent, link, grant, pull from the three sources"
"$KIOSK_DEMO" run --origin "$ORIGIN" --gateway-cert "$GW/tls.pem" --issuer "$DEMO/phr-issuer" \
  --card-dir "$DEMO/phr-card" --reader-index 1 "${KIOSK_SOURCES[@]}" \
  --later "tests/fixtures/sources/next/kenshin-2025.xml=$SRC/kenshin-tokyo/data/K-0001/kenshin-2025.xml"

# The sample data for the partner API, delivered through the drop directory after the pulls: some of
# it is about the same synthetic people, whose keys the pulls linked to the PHR card's person (a key
# that already held records from elsewhere would need an identity check first).
step "sample data through the drop directory"
FIX=data-converter/tests/fixtures
mkdir -p "$GW/drop/incoming"
cp "$FIX/stress/workers.csv" "$GW/drop/incoming/.workers.stress.csv" && mv "$GW/drop/incoming/.workers.stress.csv" "$GW/drop/incoming/workers.stress.csv"
for f in archive/1399999991_06139999_202406100_1.zip cda/full.xml uke/sample.uke; do
  name="${f##*/}"
  cp "$FIX/$f" "$GW/drop/incoming/.$name" && mv "$GW/drop/incoming/.$name" "$GW/drop/incoming/$name"
done
drop_done() { [ -z "$(ls -A "$GW/drop/incoming")" ]; }
wait_for 60 drop_done || { ls -l "$GW/drop/incoming" >&2; echo "the drop directory was not imported" >&2; exit 1; }
ls "$GW/drop/done"
if [ -n "$(ls -A "$GW/drop/failed" 2>/dev/null)" ]; then cat "$GW/drop/failed"/*.error.txt >&2; exit 1; fi

cat <<MSG

iPHR gateway demo
  kiosk page:        $ORIGIN/kiosk   (self-signed certificate: accept it in the browser)
  partner FHIR API:  https://localhost:$PARTNER_PORT/fhir   (mTLS: $GW/partner.pem, key $GW/partner.key;
                     OAuth: POST /oauth/token with a private_key_jwt assertion signed by that key, client_id demo-phr-app)
  database:          $GW/gateway.db   (drop files into $GW/drop/incoming to import them)
  virtual card:      'Virtual PCD 00 00', PIN 1234
  sources:           https://localhost:$SOURCE_PORT0 … (iphr-source, files under $SRC/*/data); pull now: $GATEWAY --config $GW/gateway.toml pull
MSG

if [ -t 0 ]; then
  cat <<MSG

The card agent runs below: open the kiosk page, press 「カードで本人確認」 and type the PIN here.
After signing in, consent to the partner on the page. Imported records are linked to the person by
  $GATEWAY --config $GW/gateway.toml link-person --key KEY --person PERSON_ID
(KEY as in the record, e.g. 保険者番号:記号:番号:枝番; PERSON_ID as shown on the page).
Press Ctrl-C to stop.
MSG
  "$AGENT" serve --port "$AGENT_PORT" --allow-origin "$ORIGIN" --reader "Virtual PCD 00 00"
fi
