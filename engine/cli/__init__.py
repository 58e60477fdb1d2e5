"""lumbar-kb: the lumbar region mass guideline as a forward-chaining rules knowledge base.

This package is the import root `lumbar_kb` (its files live in `engine/cli/`, mapped in pyproject.toml) and
holds the command line, the outermost layer. The libraries are its subpackages:

    lumbar_kb.engine     YAML -> loader -> model -> compiler -> durable-rules session -> trace -> Result
    lumbar_kb.visualize  the decision graph (networkx) and its pictures (graphviz)
    lumbar_kb.knowledge  the bundled knowledge base (YAML) and its JSON Schemas

Nothing below this package imports it. See docs/architecture.md.
"""

__version__ = "0.1.0"
