// The exported FHIR CPG package run by engines nobody in this project wrote: the Library's ELM in cql-execution
// with cql-exec-fhir's FHIR R4 data source, and the PlanDefinition's FHIRPath alternatives in fhirpath.js.
// No clinical logic here: it reads what the package says and prints what the engines answer.
//
//   node tests/cpg/run.js PACKAGE_DIR PATIENTS.json > ANSWERS.json
//   node tests/cpg/run.js --serve     (one request per line on stdin: {"package": DIR, "patients": FILE}; one
//                                       line of ANSWERS per request on stdout, or {"fatal": "..."})
//
// In --serve mode a package is read and compiled once (keyed by its files' contents), so a test session pays
// node's start and the library's compilation once, not for every batch.
// PATIENTS.json: {"bundles": [FHIR Bundle, ...], "expressions": [library expression names to report], optionally
// "fhirpath": [the patient ids to run the FHIRPath alternatives for; default every one]}. Each Bundle
// holds one Patient and its QuestionnaireResponses. Answers: {"cql": {patientId: {name: value}}, "fhirpath":
// {patientId: [ids of the PlanDefinition actions whose FHIRPath applicability holds]}, "errors": [...], "seconds":
// {"cql": the CQL run, "fhirpath": compiling and running the FHIRPath alternatives}}.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const readline = require('readline');
const cql = require('cql-execution');
const cqlfhir = require('cql-exec-fhir');
const fhirpath = require('fhirpath');
const r4 = require('fhirpath/fhir-context/r4');

const ALTERNATIVE = 'http://hl7.org/fhir/StructureDefinition/cqf-alternativeExpression';

const prepared = new Map(); // sha256 of a package's files -> {library, plan, compiled (the FHIRPath, when first asked)}

function preparedPackage(dir) {
  const hash = crypto.createHash('sha256');
  const pkg = { libraries: [], plans: [] };
  for (const name of fs.readdirSync(dir).sort()) {
    if (!name.endsWith('.json')) continue;
    const text = fs.readFileSync(path.join(dir, name), 'utf8');
    hash.update(`${name}\0${text}\0`);
    const res = JSON.parse(text);
    if (res.resourceType === 'Library') pkg.libraries.push(res);
    if (res.resourceType === 'PlanDefinition') pkg.plans.push(res);
  }
  const key = hash.digest('hex');
  if (!prepared.has(key)) {
    if (pkg.libraries.length !== 1 || pkg.plans.length !== 1) {
      throw new Error(`expected one Library and one PlanDefinition in ${dir}`);
    }
    prepared.set(key, { library: new cql.Library(elmOf(pkg.libraries[0])), plan: pkg.plans[0], compiled: null });
  }
  return prepared.get(key);
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

async function answer(dir, input) {
  const answers = { cql: {}, fhirpath: {}, errors: [], seconds: {} };
  let started = process.hrtime.bigint();
  const elapsed = () => Number(process.hrtime.bigint() - started) / 1e9;
  const pkg = preparedPackage(dir);
  const executor = new cql.Executor(pkg.library, new cql.CodeService({}));
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
  const chosen = input.fhirpath ? new Set(input.fhirpath) : null;
  if (chosen === null || chosen.size > 0) {
    pkg.compiled = pkg.compiled || conditions(pkg.plan);
    for (const bundle of input.bundles) {
      const patient = bundle.entry.find((e) => e.resource.resourceType === 'Patient').resource;
      if (chosen && !chosen.has(patient.id)) continue;
      const responses = bundle.entry.map((e) => e.resource).filter((r) => r.resourceType === 'QuestionnaireResponse');
      const applicable = [];
      for (const [id, fn] of pkg.compiled) {
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
  }
  answers.seconds.fhirpath = elapsed();
  return answers;
}

async function serve() {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let out;
    try {
      const request = JSON.parse(line);
      out = await answer(request.package, JSON.parse(fs.readFileSync(request.patients, 'utf8')));
    } catch (err) {
      out = { fatal: err && err.stack ? err.stack : String(err) };
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  }
}

async function main() {
  if (process.argv[2] === '--serve') return serve();
  const [dir, patientsFile] = process.argv.slice(2);
  const input = JSON.parse(fs.readFileSync(patientsFile, 'utf8'));
  process.stdout.write(JSON.stringify(await answer(dir, input)));
}

main().catch((err) => {
  process.stderr.write(`cpg harness: ${err && err.stack ? err.stack : err}\n`);
  process.exit(3);
});
