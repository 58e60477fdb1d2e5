"""Commands for the clinic: `serve` (the CDS Hooks service and the questionnaire page) and `export fhir`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lumbar_kb.common import EXIT_OK, add_kb_option, dumps, kb_from
from lumbar_kb.engine.errors import LumbarKBError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="the CDS Hooks 2.0 service and the questionnaire page (FastAPI + uvicorn)",
        description="Serve CDS Hooks 2.0 (GET /cds-services, POST /cds-services/{id}, feedback), the "
        "questionnaire page at / (under --insecure-dev, or with --questionnaire-page) and the OpenAPI schema at "
        "/openapi.json. Every CDS call must carry a JWT bearer token from an issuer in --trust, unless "
        "--insecure-dev (local trials only).",
    )
    add_kb_option(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes, each compiling the knowledge base once and listening on the port itself "
        "(SO_REUSEPORT: the kernel spreads connections over them); one that dies is replaced",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=8,
        help="threads per worker for token checks, discovery and feedback (default 8)",
    )
    p.add_argument(
        "--fetch-threads",
        type=int,
        default=16,
        help="threads per worker waiting on fhirServer fetches, apart from the others: a stalled FHIR server "
        "holds only these (default 16)",
    )
    p.add_argument(
        "--engine-threads",
        type=int,
        default=2,
        help="threads per worker evaluating hook calls, taken in arrival order (default 2: more interleave "
        "under Python's GIL and lengthen every call)",
    )
    p.add_argument(
        "--trust", type=Path, help="JSON file of trusted issuers: their JWKS (or jwks_url) and their FHIR servers"
    )
    p.add_argument(
        "--public-url",
        help="the URL clients call, e.g. https://cds.example.org: every token's audience is built from it "
        "(required with --trust)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help="folder for the service's store (created 0700; default $LUMBAR_KB_STATE_DIR, else "
        "$XDG_STATE_HOME/lumbar-kb, else ~/.local/state/lumbar-kb)",
    )
    p.add_argument(
        "--db", type=Path, help="the SQLite store itself (cards, feedback; created 0600); default: in --state-dir"
    )
    p.add_argument(
        "--max-token-lifetime",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="longest JWT accepted, exp - iat (default 300)",
    )
    p.add_argument(
        "--link-ttl",
        type=float,
        default=12 * 3600.0,
        metavar="SECONDS",
        help="how long a card's signed explanation link stays valid (default 12 hours)",
    )
    p.add_argument("--codes", type=Path, help="terminology bindings (default: codes.yaml of the knowledge base)")
    p.add_argument("--max-body", type=int, default=1_000_000, help="largest request body in bytes")
    p.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="a browser-based CDS client allowed to call (e.g. https://sandbox.cds-hooks.org); repeatable",
    )
    p.add_argument("--no-access-log", action="store_true", help="do not log a line per request (uvicorn's access log)")
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate (chain)")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    p.add_argument(
        "--questionnaire-page",
        action="store_true",
        help="with --trust, also serve the questionnaire page at / and POST /api/evaluate, which take no token (they "
        "evaluate the answers sent and store nothing; on by default only under --insecure-dev)",
    )
    p.add_argument("--insecure-dev", action="store_true", help="do NOT check tokens (local trials only; loud)")
    p.set_defaults(run=_run_serve)

    e = sub.add_parser("export", help="export the knowledge base in another format")
    formats = e.add_subparsers(dest="format", required=True, metavar="FORMAT")
    f = formats.add_parser(
        "fhir",
        help="FHIR R4 CPG package: Questionnaire, Library (CQL and ELM), PlanDefinition, ActivityDefinitions",
        description="Write the Questionnaire (clinician and patient wording; alarm questions first), the "
        "Library (the logic as CQL text and ELM JSON), the PlanDefinition (one action per rule, its condition "
        "a Library expression with a FHIRPath alternative) and an ActivityDefinition per action, one JSON file "
        "each, and list what the package cannot express.",
    )
    f.add_argument("-o", "--output", type=Path, required=True, metavar="DIR")
    f.add_argument("--codes", type=Path, help="terminology bindings (default: codes.yaml of the knowledge base)")
    add_kb_option(f)
    f.set_defaults(run=_run_export_fhir)


def _run_serve(args) -> int:
    import uvicorn

    from lumbar_kb.clinic.service.app import INSECURE_BANNER, create_app, settings_to_env
    from lumbar_kb.clinic.service.state import Settings

    settings = Settings(
        kb_dir=args.kb,
        codes_file=args.codes,
        db=args.db,
        state_dir=args.state_dir,
        trust=args.trust,
        max_token_lifetime=args.max_token_lifetime,
        link_ttl=args.link_ttl,
        threads=max(1, args.threads),
        engine_threads=max(1, args.engine_threads),
        fetch_threads=max(1, args.fetch_threads),
        public_url=args.public_url,
        insecure_dev=args.insecure_dev,
        max_body=args.max_body,
        cors_origins=list(args.cors_origin or ()),
        questionnaire=True if args.questionnaire_page else None,
    )
    if args.insecure_dev:
        bar = "!" * 100
        print(f"{bar}\n{INSECURE_BANNER}\n{bar}", file=sys.stderr)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise LumbarKBError("give both --tls-cert and --tls-key (or neither, behind a TLS-terminating proxy)")
    cert, key = (str(args.tls_cert), str(args.tls_key)) if args.tls_cert else (None, None)
    app = create_app(settings)  # fails early (exit 2) on a bad knowledge base, codes or trust file
    if args.workers > 1:  # a listening socket per worker (SO_REUSEPORT), so connections spread over them
        from lumbar_kb.clinic.service.workers import Listen, serve

        listen = Listen(args.host, args.port, cert, key, not args.no_access_log)
        serve(settings_to_env(settings), listen, args.workers)
    else:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            ssl_certfile=cert,
            ssl_keyfile=key,
            access_log=not args.no_access_log,
            proxy_headers=False,  # X-Forwarded-For/-Proto are a client's word: never the address or scheme
        )
    return EXIT_OK


def _run_export_fhir(args) -> int:
    from lumbar_kb.clinic.fhir.codes import load_codes
    from lumbar_kb.clinic.fhir.export import export_all, uncoded_actions

    kb = kb_from(args)
    codes = load_codes(kb, args.codes)
    files = export_all(kb, codes)
    args.output.mkdir(parents=True, exist_ok=True)
    for name, resource in files.items():
        tmp = args.output / f".{name}.tmp"
        tmp.write_text(dumps(resource), encoding="utf-8")
        tmp.replace(args.output / name)
    print(f"wrote {len(files)} FHIR resources to {args.output}")
    from lumbar_kb.clinic.fhir.cql import limitations

    print("not expressed in the CPG package (also in the Library's usage):")
    for line in limitations(kb):
        print(f"  - {line}")
    uncoded = uncoded_actions(kb, codes)
    if uncoded:
        print(
            "ActivityDefinitions with no standard code, only the knowledge base's own (a terminologist binds one "
            f"under `orders` in codes.yaml): {', '.join(uncoded)}"
        )
    return EXIT_OK
