# PHR card (PIV) interoperability: yubico-piv-tool and OpenSC read our virtual PHR card, openssl
# checks OpenSC's signature, and the agent is run against Nitrokey's piv-authenticator, which is
# built here (its littlefs2 dependency needs libclang for bindgen) into the cargo target dir.
apt_install yubico-piv-tool opensc openssl libclang-dev
step "build piv-authenticator-vpcd (tests/piv-authenticator-vpcd)"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR}/piv-authenticator-vpcd" \
  cargo build --release --locked --quiet --manifest-path tests/piv-authenticator-vpcd/Cargo.toml
export IPHR_PIV_AUTHENTICATOR_VPCD="${CARGO_TARGET_DIR}/piv-authenticator-vpcd/release/piv-authenticator-vpcd"
