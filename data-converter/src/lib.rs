//! data-converter: source formats into the unified iPHR, and the iPHR into FHIR R4 (filled by later issues).
