"""Write small knowledge bases to disk in the real format (guideline.yaml, facts.yaml, rules/*.yaml), for tests
that need rule shapes the bundled guideline does not have (negation, two tests on one fact, several derivations,
never-true conditions, priorities). They are loaded by the real loader, so they are valid by construction or the
loader says why not.

A fact spec is `{"type": "bool"}` or `{"type": "enum", "values": [...]}`, optionally `"derived": True`. A rule
spec is a mapping as written in a rule file (`id`, `when`, `then`, optionally `priority`); the rest is filled in.
"""

from __future__ import annotations

from pathlib import Path

import yaml

URGENCY = {"low": 0, "mid": 1, "high": 2}  # rank: the result takes the highest rank a fired rule concluded
ACTIONS = ("act_a", "act_b")
WATCHED = {"act_a": {"imaging": True}, "act_b": {"time_critical": True}}
WARNINGS = ("warn_a", "warn_b")
DIFFERENTIAL = ("dx_a", "dx_b")


def _entry(code: str) -> dict:
    return {"label": f"label {code}", "text": f"text {code}", "patient_text": f"patient text {code}"}


def guideline(name: str = "gen") -> dict:
    return {
        "name": name,
        "title": "A generated knowledge base",
        "question": "What do the rules conclude?",
        "version": "1",
        "last_updated": "2026-01-01",
        "review_status": "submitted",
        "publisher": "tests",
        "disclaimer": "Generated for tests.",
        "references": {
            1: {"title": "First principles", "source": "tests", "year": 2026, "kind": "guideline"},
            2: {"title": "Second thoughts", "source": "tests", "kind": "research"},
        },
        "sections": {"one": {"title": "Section one"}, "two": {"title": "Section two"}},
        "urgency": {code: {"rank": rank, **_entry(code)} for code, rank in URGENCY.items()},
        # act_a an imaging study and act_b a time-critical step: the look-ahead watches both (could_escalate)
        "actions": {code: {**_entry(code), **WATCHED[code]} for code in ACTIONS},
        "warnings": {code: _entry(code) for code in WARNINGS},
        "differential": {code: _entry(code) for code in DIFFERENTIAL},
    }


def fact_doc(spec: dict) -> dict:
    doc: dict = {"type": spec["type"], "meaning": "a generated fact"}
    if spec["type"] == "enum":
        doc["values"] = list(spec["values"])
    if spec.get("derived"):
        doc["derived"] = True
    else:
        doc["question"] = "Is it so?"
        doc["patient_question"] = "Is it so for you?"
    return doc


def write_kb(root: Path, facts: dict, rules: list, split: int | None = None) -> Path:
    """Write the knowledge base; rules[:split] go to section one, the rest to section two (in that order)."""
    root = Path(root)
    (root / "rules").mkdir(parents=True, exist_ok=True)
    dump = lambda data, path: path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    dump(guideline(), root / "guideline.yaml")
    dump({"facts": {name: fact_doc(spec) for name, spec in facts.items()}}, root / "facts.yaml")
    full = [{"title": f"title of {r['id']}", "cites": [1], "rationale": "generated", **r} for r in rules]
    split = len(full) if split is None else split
    for section, part in (("one", full[:split]), ("two", full[split:])):
        if part:
            dump({"section": section, "rules": part}, root / "rules" / f"{section}.yaml")
    return root
