// The exported FHIR CPG package run by engines nobody in this project wrote: the Library's ELM in cql-execution
// with cql-exec-fhir's FHIR R4 data source, and the PlanDefinition's FHIRPath alternatives in fhirpath.js.
// No clinical logic here: it reads what the package says and prints what the engines answer.
//
//   node tests/cpg/run.js PACKAGE_DIR PATIENTS.json > ANSWERS.json
//
// PATIENTS.json: {"bundles": [FHIR Bundle, ...], "expressions": [library expression names to report], optionally
// "fhirpath": [the patient ids to run the FHIRPath alternatives for; default every one]}. Each Bundle
// holds one Patient and its QuestionnaireResponses. Answers: {"cql": {patientId: {name: value}}, "fhirpath":
// {patientId: [ids of the PlanDefinition actions whose FHIRPath applicability holds]}, "errors": [...], "seconds":
// {"cql": the CQL run, "fhirpath": compiling and running the FHIRPath alternatives}}.
'use strict';
const fs = require('fs');
const path = require('path');
const cql = require('cql-execution');
const cqlfhir = require('cql-exec-fhir');
const fhirpath = require('fhirpath');
const r4 = require('fhirpath/fhir-context/r4');

const ALTERNATIVE = 'http://hl7.org/fhir/StructureDefinition/cqf-alternativeExpression';

function readPackage(dir) {
  const out = { libraries: [], plans: [] };
  for (const name of fs.readdirSync(dir).sort()) {
    if (!name.endsWith('.json')) continue;
    const res = JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'));
    if (res.resourceType === 'Library') out.libraries.push(res);
    if (res.resourceType === 'PlanDefinition') out.plans.push(res);
  }
  return out;
}

function elmOf(library) {
  const content = (library.content || []).find((c) => c.contentType === 'application/elm+json');
  if (!content) throw new Error(`Library ${library.url} carries no application/elm+json content`);
  return JSON.parse(Buffer.from(content.data, 'base64').toString('utf8'));
}

function plain(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === 'boolean' || typeof value === 'string' || typeof value === 'number') return value;
  if (value.isDecimal || value.constructor?.name === 'Decimal') return Number(value.toString());
  return String(value);
}

function conditions(plan) {
  // [action id, FHIRPath alternative] for every action with an applicability condition, nested actions included
  const out = [];
  const walk = (actions) => {
    for (const action of actions || []) {
      for (const cond of action.condition || []) {
        if (cond.kind !== 'applicability') continue;
        const alt = (cond.expression.extension || []).find((e) => e.url === ALTERNATIVE);
        const expr = alt && alt.valueExpression;
        if (expr && expr.language === 'text/fhirpath') out.push([action.id, fhirpath.compile(expr.expression, r4)]);
      }
      walk(action.action);
    }
  };
  walk(plan.action);
  return out;
}

async function main() {
  const [dir, patientsFile] = process.argv.slice(2);
  const pkg = readPackage(dir);
  const input = JSON.parse(fs.readFileSync(patientsFile, 'utf8'));
  const answers = { cql: {}, fhirpath: {}, errors: [], seconds: {} };
  let started = process.hrtime.bigint();
  const elapsed = () => Number(process.hrtime.bigint() - started) / 1e9;
  if (pkg.libraries.length !== 1 || pkg.plans.length !== 1) {
    throw new Error(`expected one Library and one PlanDefinition in ${dir}`);
  }
  const elm = elmOf(pkg.libraries[0]);
  const executor = new cql.Executor(new cql.Library(elm), new cql.CodeService({}));
  const source = cqlfhir.PatientSource.FHIRv401();
  source.loadBundles(input.bundles);
  const results = await executor.exec(source);
  answers.seconds.cql = elapsed();
  for (const [pid, values] of Object.entries(results.patientResults)) {
    const picked = {};
    for (const name of input.expressions) picked[name] = plain(values[name]);
    answers.cql[pid] = picked;
  }
  started = process.hrtime.bigint();
  const compiled = conditions(pkg.plans[0]);
  const chosen = input.fhirpath ? new Set(input.fhirpath) : null;
  for (const bundle of input.bundles) {
    const patient = bundle.entry.find((e) => e.resource.resourceType === 'Patient').resource;
    if (chosen && !chosen.has(patient.id)) continue;
    const responses = bundle.entry.map((e) => e.resource).filter((r) => r.resourceType === 'QuestionnaireResponse');
    const applicable = [];
    for (const [id, fn] of compiled) {
      // the QuestionnaireResponse is the expression's context resource (%resource); several are read one by one
      const verdicts = responses.map((qr) => fn(qr));
      for (const v of verdicts) {
        if (v.length > 1 || (v.length === 1 && typeof v[0] !== 'boolean')) {
          answers.errors.push(`${patient.id} ${id}: not a boolean: ${JSON.stringify(v)}`);
        }
      }
      if (verdicts.some((v) => v.length === 1 && v[0] === true)) applicable.push(id);
    }
    answers.fhirpath[patient.id] = applicable;
  }
  answers.seconds.fhirpath = elapsed();
  process.stdout.write(JSON.stringify(answers));
}

main().catch((err) => {
  process.stderr.write(`cpg harness: ${err && err.stack ? err.stack : err}\n`);
  process.exit(3);
});
