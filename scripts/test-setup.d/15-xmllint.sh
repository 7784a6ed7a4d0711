# 特定健診 CDA against the official schema (data-converter/tests/schema.rs): libxml2's xmllint.
apt_install libxml2-utils
