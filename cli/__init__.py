"""lumbar-kb: the lumbar region mass guideline as a forward-chaining rules knowledge base.

This package is the import root `lumbar_kb` (its files live in the top-level `cli/`, mapped in pyproject.toml) and
holds the command line, the outermost layer. The libraries are its subpackages:

    lumbar_kb.engine     the core every audience shares: YAML -> loader -> model -> compiler -> durable-rules
                         session -> trace -> Result, and the analysis authors run (check, test, explain, diff)
    lumbar_kb.visualize  the board's wing: the decision graph (networkx), its pictures (graphviz), the review
                         pack and the hazard log
    lumbar_kb.cohort     the analysts' wing: many patients, the audit store, the cohort report
    lumbar_kb.clinic     the clinicians' wing: the CDS Hooks service, FHIR in and out
    lumbar_kb.knowledge  the bundled knowledge base (YAML) and its JSON Schemas

Nothing below this package imports it. See docs/architecture.md.
"""

__version__ = "0.1.0"
