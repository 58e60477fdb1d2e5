"""Benchmark: the exported FHIR CPG package in the independent engines, on every generated patient. Prints figures
and the disagreements with the durable engine (0 is the goal); never fails on speed.

tests/test_cpg.py runs the CQL library on 10,000 generated patients but the FHIRPath alternatives on a sample
(fhirpath.js is several times slower than cql-execution on this package); this runs both engines on all of them.
Needs node and `make setup` (npm ci).

    python benchmarks/bench_cpg.py [--patients 10000] [--seed 27]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lumbar_kb.clinic.fhir.codes import load_codes  # noqa: E402
from lumbar_kb.clinic.fhir.cql import build_library  # noqa: E402
from lumbar_kb.engine.api import Evaluator  # noqa: E402
from lumbar_kb.engine.loader import load  # noqa: E402
from lumbar_kb.engine.patient import random_patient  # noqa: E402
from tests.test_cpg import bundle, export, from_cql, from_engine, output_names, run_harness  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=27)
    args = parser.parse_args()
    kb = load()
    codes = load_codes(kb)
    lib = build_library(kb, codes)
    evaluator = Evaluator(kb)
    rng = random.Random(args.seed)
    patients = [random_patient(kb, rng) for _ in range(args.patients)]
    bundles = [bundle(kb, codes, p, f"p{i}") for i, p in enumerate(patients)]
    with tempfile.TemporaryDirectory() as tmp:
        package = export(None, Path(tmp) / "package")
        started = time.perf_counter()
        answers = run_harness(package, bundles, output_names(lib), Path(tmp), timeout=24 * 3600)
        wall = time.perf_counter() - started
    started = time.perf_counter()
    cql_off = fhirpath_off = 0
    for b in bundles:
        pid = b["entry"][0]["resource"]["id"]
        expected, fired = from_engine(kb, evaluator, codes, b)
        cql_off += from_cql(lib, answers["cql"][pid]) != expected
        fhirpath_off += sorted(answers["fhirpath"][pid]) != fired
    engine = time.perf_counter() - started
    n = len(bundles)
    print(f"patients: {n} (seed {args.seed}), unknowns in {sum(len(p) < len(kb.input_facts) for p in patients)}")
    print(
        f"node harness wall time: {wall:.1f} s (CQL {answers['seconds']['cql']:.1f} s, "
        f"FHIRPath {answers['seconds']['fhirpath']:.1f} s)"
    )
    print(
        f"cql-execution: {1000 * answers['seconds']['cql'] / n:.2f} ms a patient; "
        f"fhirpath.js: {1000 * answers['seconds']['fhirpath'] / n:.2f} ms a patient ({len(kb.rules)} conditions)"
    )
    print(f"durable engine on the same bundles (FHIR read + evaluate): {1000 * engine / n:.3f} ms a patient")
    print(f"disagreements: CQL {cql_off}, FHIRPath {fhirpath_off} (harness errors: {len(answers['errors'])}) [goal: 0]")
    return 0 if cql_off == fhirpath_off == 0 and not answers["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
