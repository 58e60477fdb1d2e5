"""Analyses kept by content (engine/analysis/memo.py): the same content gives the kept result, any edit a new
one, and a private result is the caller's own."""

from __future__ import annotations

from dataclasses import replace

from lumbar_kb.engine.analysis.memo import ByContent, digest
from lumbar_kb.engine.loader import load


def test_the_same_content_is_built_once_and_an_edit_in_memory_is_built_anew(kb):
    memo: ByContent[list] = ByContent(kept=2)
    built: list[int] = []

    def build(k):
        built.append(len(k.rules))
        return [len(k.rules)]

    assert memo.get(kb, lambda: build(kb)) == [len(kb.rules)]
    assert memo.get(load(), lambda: build(kb)) == [len(kb.rules)]  # loaded again: the same content
    assert built == [len(kb.rules)]
    fewer = replace(kb, rules=kb.rules[1:])  # the files' sha256 is the same; the content is not
    assert fewer.sha256 == kb.sha256 and digest(fewer) != digest(kb)
    assert memo.get(fewer, lambda: build(fewer)) == [len(kb.rules) - 1]
    assert built == [len(kb.rules), len(kb.rules) - 1]


def test_a_cached_property_read_does_not_change_the_key(kb):
    fresh = load()
    before = digest(fresh)
    assert fresh.input_facts and fresh.derived_facts  # cached properties, stored on the object once read
    assert digest(fresh) == before == digest(kb)


def test_a_private_result_is_the_callers_own(kb):
    memo: ByContent[list] = ByContent(private=True)
    first = memo.get(kb, lambda: [["kept"]])
    first[0].append("changed by a caller")
    assert memo.get(kb, lambda: [["built again"]]) == [["kept"]]


def test_the_oldest_is_dropped_beyond_the_bound(kb):
    memo: ByContent[str] = ByContent(kept=1)
    other = replace(kb, rules=kb.rules[1:])
    memo.get(kb, lambda: "a")
    memo.get(other, lambda: "b")
    assert memo.get(kb, lambda: "built again") == "built again"
