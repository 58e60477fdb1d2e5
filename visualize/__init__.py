"""The decision graph of a knowledge base (networkx) and its pictures (graphviz).

One job per module:
    graph    the model as a networkx DiGraph of meanings; pathway / upstream / influence queries
    overlay  one patient's path (fired rules, order, fact values, used edges) from the engine's Result
    style    the one style table, keyed by meaning
    text     conditions, values and windows in words
    legend   the heading and legend, drawn from the style table
    dot      DOT text from a graph (+ overlay, + focus); runs nothing
    render   runs graphviz's `dot`, writes files atomically
    svg      copies each tooltip into the SVG element's <title>
    cli      the `lumbar-kb graph` subcommand
"""
