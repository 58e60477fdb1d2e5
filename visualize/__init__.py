"""The decision graph of a knowledge base (networkx) and its pictures (graphviz)."""
