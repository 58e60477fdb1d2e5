"""The README's contract tables stay true to the knowledge base."""

from .conftest import ROOT


def test_readme_lists_every_input_fact_with_its_type(kb):
    readme = (ROOT / "README.md").read_text()
    for fact in kb.input_facts:
        kind = "bool" if fact.type == "bool" else ", ".join(fact.values)
        assert f"| `{fact.name}` | {kind} |" in readme, fact.name


def test_readme_names_every_conclusion_code(kb):
    readme = (ROOT / "README.md").read_text()
    for kind in ("action", "warning", "differential"):
        for code in kb.catalog[kind]:
            assert f"`{code}`" in readme, code


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
