"""Independent FHIR R4 structural validation of data-converter output.

Usage: python validate_r4.py FILE...   (a Bundle / resource JSON, or NDJSON with one resource per line)

Two validators, both installed by scripts/test-setup.d/20-fhir-validators.sh:
  * fhir.resources 6.4.0 (pydantic models of FHIR R4 4.0.1): every resource is constructed; types,
    cardinalities, required elements, primitive formats (dates, decimals, ids) and enum codes.
  * fhirkit-rs 0.1.0: an independent R4 parser/validator with path-precise messages.
Prints one line per problem and `N resources, M errors`; exits 1 on any error.
"""
import json
import sys

from fhir.resources import construct_fhir_element
import fhirkit


def resources_of(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".ndjson") or path.endswith(".jsonl"):
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield f"{path}:{i}", json.loads(line)
    else:
        yield path, json.loads(text)


def main(paths):
    n = errors = 0
    for path in paths:
        for where, res in resources_of(path):
            n += 1
            rt = res.get("resourceType")
            try:
                construct_fhir_element(rt, res)
            except Exception as e:  # pydantic ValidationError or unknown type
                errors += 1
                print(f"fhir.resources: {where}: {rt}: {e}".replace("\n", " | "))
            for issue in fhirkit.validate(json.dumps(res)):
                if getattr(issue, "severity", "error") == "error":
                    errors += 1
                    print(f"fhirkit: {where}: {issue}")
    print(f"{n} resources, {errors} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
