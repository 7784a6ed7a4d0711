//! iPHR gateway: verifies card tokens, keeps consent and audit, serves partners (filled by later issues).
