"""The medical board's review pack: a static, self-contained HTML folder built from the knowledge base.

model     the data the pages show, built first from the knowledge base, the engine's Results, the
          approvals and (with --against) the behaviour diff; no HTML here
diagrams  DOT for the section overview, one diagram per section and each example patient's fired path
          (drawn by graphviz through `visualize.render`), every rule node a link to its rule card
pack      renders the Jinja2 templates (templates/, autoescaped, loops and escaping only) and writes the
          folder: index.html, the pages, and the local style sheet and script (no network, no CDN)
"""
