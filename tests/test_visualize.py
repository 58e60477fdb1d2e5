"""The decision graph and its pictures: the graph is the model, the DOT says what it means, the SVG shows
exactly what the engine fired, every format renders, errors are one line and exit 2.

Expected values are computed from the model (`engine.model`) or from an evaluation, never copied from the
graph under test. Tests that run graphviz's `dot` are marked `graphviz`.
"""

from __future__ import annotations

import functools
import os
import random
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lumbar_kb.graph_cmd as graph_command
from lumbar_kb.engine.api import Evaluator
from lumbar_kb.engine.errors import PatientError
from lumbar_kb.engine.loader import default_kb_dir, load
from lumbar_kb.engine.model import Derive, Recommend, SetUrgency, condition_facts
from lumbar_kb.engine.model import Test as ConditionTest
from lumbar_kb.engine.patient import random_patient
from lumbar_kb.main import main
from lumbar_kb.visualize import legend, render, style
from lumbar_kb.visualize.dot import edge_meanings, node_meanings, to_dot
from lumbar_kb.visualize.errors import GraphvizFailedError, GraphvizMissingError, OutputError, UnknownNodeError
from lumbar_kb.visualize.graph import CONCLUSION_KINDS, build_graph, influence, pathway, resolve, restrict, upstream
from lumbar_kb.visualize.overlay import overlay_from_result
from lumbar_kb.visualize.render import FORMATS, format_for, run_dot

REPO = Path(__file__).resolve().parents[1]
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="graphviz `dot` is not installed")

# Patients that take different paths through the guideline (the values are the patient's, not answers).
PATIENTS = {
    "cancer_with_leg_weakness": {
        "leg_weakness": True,
        "cancer_history": True,
        "primary_cancer": "kidney",
        "palpable_mass": True,
    },
    "lump_without_neuro": {
        "leg_weakness": False,
        "gait_difficulty": False,
        "radiating_numbness": False,
        "unable_to_walk": False,
        "bowel_bladder_dysfunction": False,
        "saddle_anesthesia": False,
        "progressive_neuro_deficit": False,
        "cancer_history": False,
        "palpable_mass": True,
        "radiograph": "abnormal",
    },
    "saddle_suspected_compression": {
        "saddle_anesthesia": True,
        "suspected_cord_compression": True,
        "rapid_progression": True,
        "severe_back_pain": True,
    },
    "nothing_answered": {},
    "after_imaging": {
        "imaging_shows_mass": True,
        "mass_persists": True,
        "radiograph": "normal",
        "cord_compression_confirmed": True,
    },
}


# ---- fixtures ----------------------------------------------------------------------------------------------------
@functools.cache
def bundled():
    """The bundled knowledge base, its graph and a compiled evaluator (built once)."""
    kb = load()
    return kb, build_graph(kb), Evaluator(kb)


@pytest.fixture()
def kb():
    return bundled()[0]


@pytest.fixture()
def graph():
    return bundled()[1]


@pytest.fixture()
def evaluator():
    return bundled()[2]


@pytest.fixture()
def patient_file(tmp_path):
    def write(name: str, facts: dict) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"id": name, **facts}, sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture()
def kb_with_not(tmp_path):
    """The bundled knowledge base plus one rule whose condition has a `not` (the bundled one has none)."""
    root = tmp_path / "kb"
    shutil.copytree(default_kb_dir(), root)
    (root / "rules" / "zz_not.yaml").write_text(
        yaml.safe_dump(
            {
                "section": "after_imaging",
                "rules": [
                    {
                        "id": "test.mass_not_abnormal",
                        "title": "A palpable mass with radiographs not abnormal is not yet benign",
                        "when": {
                            "all": [
                                {"fact": "palpable_mass", "is": True},
                                {"not": {"fact": "radiograph", "is": "abnormal"}},
                            ]
                        },
                        "then": [{"warning": "do_not_assume_benign"}],
                        "cites": [1],
                        "rationale": "A test rule with a negated condition.",
                    }
                ],
            },
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    return root


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


# ---- DOT reading helpers (the DOT text is one statement per line) -----------------------------------------------
def statement(dot: str, node: str) -> str:
    lines = [line for line in dot.splitlines() if line.strip().startswith(f'"{node}" [')]
    assert len(lines) == 1, f"{node}: {len(lines)} statements"
    return lines[0]


def edge_statement(dot: str, tail: str, head: str) -> str:
    lines = [line for line in dot.splitlines() if line.strip().startswith(f'"{tail}" -> "{head}" [')]
    assert len(lines) == 1, f"{tail} -> {head}: {len(lines)} statements"
    return lines[0]


def attr(stmt: str, name: str) -> str | None:
    # attribute values are bare words, "quoted strings" or <html>; the html labels come first and the
    # attributes read here never contain quotes or spaces inside their value.
    m = re.search(rf'(?<![\w-]){re.escape(name)}=("(?:[^"\\]|\\.)*"|[^\s\]]+)', stmt.split("> ", 1)[-1])
    if m is None:
        return None
    value = m.group(1)
    return value[1:-1].replace('\\"', '"') if value.startswith('"') else value


def dot_node_ids(dot: str) -> list[str]:
    return re.findall(r'^\t+"([a-z_]+:[^"]+)" \[', dot, flags=re.M)


def dot_edge_ids(dot: str) -> set[tuple[str, str]]:
    return set(re.findall(r'^\t+"([^"]+)" -> "([^"]+)" \[', dot, flags=re.M))


# ---- 1. the graph is the model -----------------------------------------------------------------------------------
def expected_nodes(kb) -> dict[str, str]:
    nodes = {f"fact:{f.name}": ("derived_fact" if f.derived else "input_fact") for f in kb.facts.values()}
    nodes.update({f"rule:{r.id}": "rule" for r in kb.rules})
    for kind in CONCLUSION_KINDS:
        nodes.update({f"{kind}:{code}": kind for code in kb.catalog[kind]})
    return nodes


def expected_edges(kb) -> dict[tuple[str, str], str]:
    edges = {}
    for rule in kb.rules:
        for name in condition_facts(rule.when):
            edges[(f"fact:{name}", f"rule:{rule.id}")] = "reads"
        for c in rule.then:
            if isinstance(c, SetUrgency):
                edges[(f"rule:{rule.id}", f"urgency:{c.level}")] = "urgency"
            elif isinstance(c, Recommend):
                edges[(f"rule:{rule.id}", f"{c.kind}:{c.code}")] = c.kind
            else:
                assert isinstance(c, Derive)
                edges[(f"rule:{rule.id}", f"fact:{c.fact}")] = "derives"
    return edges


def test_every_fact_rule_and_conclusion_is_a_node_of_its_kind(kb, graph):
    expected = expected_nodes(kb)
    assert dict(graph.nodes(data="kind")) == expected
    assert len(expected) == len(kb.facts) + len(kb.rules) + sum(len(kb.catalog[k]) for k in CONCLUSION_KINDS)


def test_every_condition_and_conclusion_is_an_edge_and_nothing_else(kb, graph):
    expected = expected_edges(kb)
    assert {(u, v): d["relation"] for u, v, d in graph.edges(data=True)} == expected
    conclusions = sum(len(r.then) for r in kb.rules)
    tests = sum(len(condition_facts(r.when)) for r in kb.rules)
    assert graph.number_of_edges() == conclusions + tests  # no conclusion or tested fact was merged away


def test_nodes_carry_meaning_not_drawing(kb, graph):
    drawing = {"color", "fillcolor", "shape", "style", "penwidth", "fontcolor", "fontname", "pos", "width"}
    for _, data in graph.nodes(data=True):
        assert not drawing & set(data)
    for _, _, data in graph.edges(data=True):
        assert not drawing & set(data)
    for rule in kb.rules:
        data = graph.nodes[f"rule:{rule.id}"]
        assert (data["title"], data["section"]) == (rule.title, rule.section)
        assert data["citations"] == tuple(sorted(rule.cites))
        assert data["references"] == tuple(kb.references[n].cite() for n in sorted(rule.cites))
        assert data["section_title"] == kb.sections[rule.section].title
    for fact in kb.facts.values():
        assert graph.nodes[f"fact:{fact.name}"]["alarm"] == fact.alarm


def test_action_edges_carry_the_rules_window(kb, graph):
    for rule in kb.rules:
        for c in rule.then:
            if isinstance(c, Recommend) and c.kind == "action":
                data = graph.edges[f"rule:{rule.id}", f"action:{c.code}"]
                assert (data["within_hours"], data["window"]) == (c.within_hours, c.window)


def test_negative_edges_are_the_tests_a_no_satisfies(kb, graph):
    def leaves(cond):
        if isinstance(cond, ConditionTest):
            yield cond
        else:
            for item in getattr(cond, "items", ()) or (cond.item,):
                yield from leaves(item)

    for rule in kb.rules:
        for leaf in leaves(rule.when):
            data = graph.edges[f"fact:{leaf.fact}", f"rule:{rule.id}"]
            assert data["negative"] == (leaf.values == frozenset({False}))
            assert data["negated"] is False  # the bundled knowledge base has no `not`
    for rule in kb.rules:
        for d in rule.derives():
            assert graph.edges[f"rule:{rule.id}", f"fact:{d.fact}"]["negative"] == (d.value is False)
    # neuro.absent needs all seven neurological findings answered no
    absent = [u for u, _, d in graph.in_edges("rule:neuro.absent", data=True) if d["negative"]]
    assert len(absent) == 7


def test_a_not_condition_is_a_negated_edge_with_the_complement_values(kb_with_not):
    g = build_graph(load(kb_with_not))
    data = g.edges["fact:radiograph", "rule:test.mass_not_abnormal"]
    assert data["negated"] and data["negative"]
    assert data["values"] == ("not_done", "normal")
    assert data["needs"] == "not abnormal"
    dot = to_dot(g)
    stmt = edge_statement(dot, "fact:radiograph", "rule:test.mass_not_abnormal")
    assert attr(stmt, "style") == "dashed" and attr(stmt, "label") == "not abnormal"
    assert not g.edges["fact:palpable_mass", "rule:test.mass_not_abnormal"]["negative"]


def test_value_phrases_for_enum_tests(graph):
    assert graph.edges["fact:primary_cancer", "rule:cancer.known"]["needs"] == "any answer"
    from lumbar_kb.visualize.text import values_phrase

    primary = load().facts["primary_cancer"]
    assert values_phrase(primary, {"breast", "lung", "prostate", "kidney", "colorectal"}) == "not other"
    assert values_phrase(primary, {"breast", "lung"}) == "breast or lung"
    assert graph.edges["fact:radiograph", "rule:imaging.mri_lumbar.abnormal_radiograph"]["needs"] == "abnormal"


# ---- 2. the questions the graph answers --------------------------------------------------------------------------
def test_upstream_of_an_action_is_every_rule_recommending_it_and_what_they_read(kb, graph):
    target = "action:mri_whole_spine"
    recommending = {
        f"rule:{r.id}"
        for r in kb.rules
        if any(isinstance(c, Recommend) and c.kind == "action" and c.code == "mri_whole_spine" for c in r.then)
    }
    up = set(upstream(graph, target))
    assert recommending <= up
    for rule in recommending:
        assert {f"fact:{n}" for n in condition_facts(kb.rule(rule[5:]).when)} <= up
    # derived facts bring the rules deriving them, and what those read
    assert "rule:neuro.present" in up and "fact:leg_weakness" in up
    assert not any(graph.nodes[n]["kind"] in CONCLUSION_KINDS for n in up - {target})


def test_influence_of_a_finding_reaches_through_derived_facts(graph):
    reach = set(influence(graph, "fact:leg_weakness"))
    assert {
        "fact:neuro_symptom",
        "urgency:emergency",
        "action:emergency_department",
        "action:mri_whole_spine",
        "warning:imaging_alone_insufficient",
    } <= reach
    assert "differential:lipoma" not in reach  # only a cancer history decides the differential
    assert not any(graph.nodes[n]["kind"] == "input_fact" for n in reach - {"fact:leg_weakness"})


def test_pathway_is_upstream_and_influence_in_graph_order(graph):
    node = "fact:neuro_symptom"
    path = pathway(graph, node)
    assert set(path) == set(upstream(graph, node)) | set(influence(graph, node))
    assert path == [n for n in graph.nodes if n in set(path)]


def test_restrict_keeps_order_and_is_a_copy(graph):
    keep = pathway(graph, "action:mri_lumbar")
    sub = restrict(graph, reversed(keep))
    assert list(sub.nodes) == keep
    assert set(sub.edges) == set(graph.subgraph(keep).edges)
    sub.nodes[keep[0]]["label"] = "changed"
    assert graph.nodes[keep[0]]["label"] != "changed"


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 10**6), value_pick=st.integers(0, 10))
def test_a_finding_changes_only_what_it_is_upstream_of(seed, which, value_pick):
    """Changing one answer may change what the fired rules conclude (or derive) only where the graph has
    that finding upstream: the graph's pathways are the engine's real dependencies."""
    kb, graph, evaluator = bundled()
    before = random_patient(kb, random.Random(seed))
    fact = kb.input_facts[which % len(kb.input_facts)]
    after = dict(before)
    new = [None, *fact.values][value_pick % (len(fact.values) + 1)]
    if new is None:
        after.pop(fact.name, None)
    else:
        after[fact.name] = new
    try:
        evaluator.check_inputs(after)
    except PatientError:
        assume(False)

    def concluded(facts) -> set[str]:
        out = set()
        for rule_id in evaluator.evaluate(facts).fired_ids():
            for c in kb.rule(rule_id).then:
                out.add(
                    f"urgency:{c.level}"
                    if isinstance(c, SetUrgency)
                    else f"{c.kind}:{c.code}"
                    if isinstance(c, Recommend)
                    else f"fact:{c.fact}={c.value}"
                )
        return out

    for changed in concluded(before) ^ concluded(after):
        assert f"fact:{fact.name}" in upstream(graph, changed.split("=")[0])


def test_resolve_names(graph):
    assert resolve(graph, "action:mri_whole_spine") == "action:mri_whole_spine"
    assert resolve(graph, "mri_whole_spine") == "action:mri_whole_spine"
    assert resolve(graph, "red_flag.leg_weakness") == "rule:red_flag.leg_weakness"
    with pytest.raises(UnknownNodeError) as err:
        resolve(graph, "action:mri_whole_spin")
    assert err.value.problems[0].hint == "did you mean 'action:mri_whole_spine'?"
    with pytest.raises(UnknownNodeError) as err:
        resolve(graph, "lipomaa")
    assert err.value.problems[0].hint == "did you mean 'differential:lipoma'?"
    with pytest.raises(UnknownNodeError) as err:
        resolve(graph, "qqqqqqqqqq")
    assert "kind:name" in err.value.problems[0].hint
    assert resolve(graph, "URGENCY:Emergency") == "urgency:emergency"
    assert resolve(graph, "Rule:RED_FLAG.leg_weakness") == "rule:red_flag.leg_weakness"
    assert resolve(graph, "actions:mri_whole_spine") == "action:mri_whole_spine"
    for empty in ("", " "):
        with pytest.raises(UnknownNodeError, match="the name is empty"):
            resolve(graph, empty)


def test_resolve_refuses_a_bare_name_two_nodes_share():
    g = nx.DiGraph()
    g.add_node("fact:mass", name="mass")
    g.add_node("action:mass", name="mass")
    with pytest.raises(UnknownNodeError) as err:
        resolve(g, "mass")
    assert "fact:mass" in err.value.problems[0].hint and "action:mass" in err.value.problems[0].hint
    g.add_node("warning:Lump", name="Lump")
    g.add_node("warning:lump", name="lump")
    assert resolve(g, "warning:Lump") == "warning:Lump"  # the exact case first
    with pytest.raises(UnknownNodeError, match="names several"):
        resolve(g, "warning:LUMP")  # ignoring case only when that leaves one


# ---- 3. the DOT text ---------------------------------------------------------------------------------------------
def test_dot_has_a_cluster_per_section_with_its_rules(kb, graph):
    dot = to_dot(graph)
    for section in kb.sections.values():
        rules = [r for r in kb.rules if r.section == section.id]
        start = dot.index(f"subgraph cluster_section_{section.id} {{")
        body = dot[start : dot.index("\n\t}", start)]
        assert f'label="{section.title}"' in body or f"label={section.title}" in body
        for rule in rules:
            assert f'\t"rule:{rule.id}" [' in body
    for kind in CONCLUSION_KINDS:
        start = dot.index(f"subgraph cluster_conclusion_{kind} {{")
        body = dot[start : dot.index("\n\t\t}", start)]
        for code in kb.catalog[kind]:
            assert f'\t"{kind}:{code}" [' in body


def test_dot_draws_every_node_and_edge_once_with_ids(graph):
    dot = to_dot(graph)
    nodes = dot_node_ids(dot)
    assert sorted(nodes) == sorted(graph.nodes)
    assert dot_edge_ids(dot) == set(graph.edges)
    for node in graph.nodes:
        assert attr(statement(dot, node), "id") == node
    for tail, head in graph.edges:
        assert attr(edge_statement(dot, tail, head), "id") == f"{tail}->{head}"


def test_dot_styles_come_from_the_style_table_by_meaning(graph):
    dot = to_dot(graph)
    for node in graph.nodes:
        stmt = statement(dot, node)
        meanings = node_meanings(graph, node, None)
        assert attr(stmt, "class").split() == meanings
        for key, value in style.node_style(*meanings).items():
            assert attr(stmt, key) == value, (node, key)
    for tail, head, data in graph.edges(data=True):
        stmt = edge_statement(dot, tail, head)
        meanings = edge_meanings(data, None)
        assert attr(stmt, "class").split() == meanings
        for key, value in style.edge_style(*meanings).items():
            assert attr(stmt, key) == value, (tail, head, key)


def test_the_emergency_pathway_is_marked(kb, graph):
    dot = to_dot(graph)
    top = max(kb.catalog["urgency"].values(), key=lambda e: e.rank).code
    red = style.NODE["emergency"]["color"]
    emergency_rules = {r.id for r in kb.rules if SetUrgency(top) in r.then}
    assert emergency_rules
    for rule in kb.rules:
        stmt = statement(dot, f"rule:{rule.id}")
        assert ("emergency" in attr(stmt, "class").split()) == (rule.id in emergency_rules)
        assert (attr(stmt, "color") == red) == (rule.id in emergency_rules)
        if rule.id in emergency_rules:
            edge = edge_statement(dot, f"rule:{rule.id}", f"urgency:{top}")
            assert attr(edge, "color") == style.EDGE["emergency"]["color"]
    level = statement(dot, f"urgency:{top}")
    assert attr(level, "fillcolor") == style.NODE["emergency_level"]["fillcolor"]
    # the sections holding an emergency rule are framed in red
    for section in {kb.rule(r).section for r in emergency_rules}:
        start = dot.index(f"subgraph cluster_section_{section} {{\n")
        attributes = dot[start:].splitlines()[1]
        assert f'color="{style.CLUSTER["emergency_section"]["color"]}"' in attributes


def test_tooltips_give_the_rules_text_and_full_citation_titles(kb, graph):
    dot = to_dot(graph)
    for rule in kb.rules:
        tip = attr(statement(dot, f"rule:{rule.id}"), "tooltip")
        assert rule.title in tip and rule.rationale.strip() in tip
        for n in rule.cites:
            assert kb.references[n].title in tip
    tip = attr(statement(dot, "fact:leg_weakness"), "tooltip")
    assert kb.facts["leg_weakness"].question in tip


def test_the_legend_shows_every_kind_and_uses_the_style_table(graph):
    dot = to_dot(graph)
    drawn = {m for node in graph.nodes for m in node_meanings(graph, node, None)}
    in_legend = {m for meanings, _ in legend.NODE_ENTRIES for m in meanings}
    assert drawn <= in_legend
    for _meanings, text in legend.NODE_ENTRIES + legend.EDGE_ENTRIES:
        assert text.replace("'", "&#x27;") in dot
    for meanings, _ in legend.NODE_ENTRIES:
        assert f'BGCOLOR="{style.node_style(*meanings)["fillcolor"]}"' in dot
    assert "fired" not in {m for meanings, _ in legend.NODE_ENTRIES for m in meanings}
    assert legend.PATIENT_ENTRIES[0][1] not in dot  # patient states only when a patient is drawn


def test_dot_without_a_patient_has_no_patient_states(graph):
    dot = to_dot(graph)
    states = {"fired", "not-fired", "fact-true", "fact-false", "fact-unknown", "fact-value", "used", "unused"}
    for match in re.finditer(r'class="?([^"\]]+?)"?[ \]]', dot):
        assert not states & set(match.group(1).split())


def test_dot_is_deterministic_across_processes(tmp_path, patient_file):
    patient = patient_file("p", PATIENTS["cancer_with_leg_weakness"])
    outputs = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-m", "lumbar_kb", "graph", "--patient", str(patient)],
            capture_output=True,
            env=env,
            cwd=tmp_path,
            check=True,
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0].startswith(b"digraph lumbar_mass {")


# ---- 4. a patient's path -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PATIENTS))
def test_dot_overlay_matches_the_evaluation(graph, evaluator, name):
    result = evaluator.evaluate(PATIENTS[name])
    overlay = overlay_from_result(graph, result, patient=name)
    dot = to_dot(graph, overlay=overlay)
    fired = {f"rule:{f.rule}": f.order for f in result.fired}
    for node in graph.nodes:
        classes = attr(statement(dot, node), "class").split()
        kind = graph.nodes[node]["kind"]
        if kind == "rule":
            assert ("fired" in classes) == (node in fired) and ("not-fired" in classes) == (node not in fired)
        elif kind in ("input_fact", "derived_fact"):
            value = {**result.inputs, **result.derived}.get(graph.nodes[node]["name"])
            want = {True: "fact-true", False: "fact-false", None: "fact-unknown"}.get(value, "fact-value")
            assert want in classes
    for node, order in fired.items():
        assert f"<B>{order}.</B>" in statement(dot, node)
    used = {(f"fact:{n}", f"rule:{f.rule}") for f in result.fired for n in f.matched}
    used |= {(f"rule:{f.rule}", head) for f in result.fired for head in graph.successors(f"rule:{f.rule}")}
    for tail, head in graph.edges:
        classes = attr(edge_statement(dot, tail, head), "class").split()
        assert ("used" in classes) == ((tail, head) in used)
    assert f"urgency {result.urgency.upper()}" in dot


def test_an_unanswered_alarm_question_stands_out(graph, evaluator):
    result = evaluator.evaluate({"palpable_mass": True})
    dot = to_dot(graph, overlay=overlay_from_result(graph, result))
    stmt = statement(dot, "fact:leg_weakness")
    assert "unanswered-alarm" in attr(stmt, "class").split()
    assert attr(stmt, "color") == style.NODE["unanswered-alarm"]["color"]
    assert "unanswered-alarm" not in attr(statement(dot, "fact:night_pain"), "class").split()


def test_an_overlay_from_another_knowledge_base_is_refused(kb_with_not, graph):
    other = Evaluator.open(kb_with_not).evaluate({"palpable_mass": True, "radiograph": "normal"})
    assert "test.mass_not_abnormal" in other.fired_ids()
    with pytest.raises(ValueError, match="test.mass_not_abnormal"):
        overlay_from_result(graph, other)


def svg_classes(svg: bytes) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """SVG node and edge ids with their classes."""
    root = ET.fromstring(svg)
    nodes, edges = {}, {}
    for g in root.iter("{http://www.w3.org/2000/svg}g"):
        classes = set(g.get("class", "").split())
        if "node" in classes:
            nodes[g.get("id")] = classes
        elif "edge" in classes:
            edges[g.get("id")] = classes
    return nodes, edges


@pytest.mark.graphviz
@needs_dot
@pytest.mark.parametrize("name", sorted(PATIENTS))
def test_svg_fired_elements_are_exactly_the_fired_rules(graph, evaluator, name):
    result = evaluator.evaluate(PATIENTS[name])
    svg = run_dot(to_dot(graph, overlay=overlay_from_result(graph, result)), "svg")
    nodes, edges = svg_classes(svg)
    assert set(nodes) == set(graph.nodes)
    assert {n for n, c in nodes.items() if "fired" in c} == {f"rule:{r}" for r in result.fired_ids()}
    assert {n for n, c in nodes.items() if "not-fired" in c} == {
        n for n in graph.nodes if graph.nodes[n]["kind"] == "rule"
    } - {f"rule:{r}" for r in result.fired_ids()}
    known = {**result.inputs, **result.derived}
    for state, test in (
        ("fact-true", lambda v: v is True),
        ("fact-false", lambda v: v is False),
        ("fact-unknown", lambda v: v is None),
    ):
        want = {f"fact:{f}" for f in (n[5:] for n in graph.nodes if n.startswith("fact:")) if test(known.get(f))}
        assert {n for n, c in nodes.items() if state in c} == want
    used = {(f"fact:{n}", f"rule:{f.rule}") for f in result.fired for n in f.matched}
    used |= {(f"rule:{f.rule}", head) for f in result.fired for head in graph.successors(f"rule:{f.rule}")}
    assert {e for e, c in edges.items() if "used" in c} == {f"{t}->{h}" for t, h in used}


@pytest.mark.graphviz
@needs_dot
def test_svg_tooltips_and_titles_carry_the_citation_titles(kb, graph):
    root = ET.fromstring(run_dot(to_dot(graph), "svg"))
    svg, xlink = "{http://www.w3.org/2000/svg}", "{http://www.w3.org/1999/xlink}"
    node = next(g for g in root.iter(f"{svg}g") if g.get("id") == "rule:differential.disc_herniation")
    tip = next(a for a in node.iter(f"{svg}a")).get(f"{xlink}title")
    for n in kb.rule("differential.disc_herniation").cites:
        assert kb.references[n].cite() in tip
    assert node.find(f"{svg}title").text == tip  # viewers that read only <title> show the same text
    for g in root.iter(f"{svg}g"):
        if {"node", "edge"} & set(g.get("class", "").split()):
            assert g.find(f"{svg}title").text == next(g.iter(f"{svg}a")).get(f"{xlink}title")


@pytest.mark.graphviz
@needs_dot
def test_dot_runs_without_warnings(graph, evaluator):
    overlay = overlay_from_result(graph, evaluator.evaluate(PATIENTS["cancer_with_leg_weakness"]))
    for source in (to_dot(graph), to_dot(graph, overlay=overlay), to_dot(graph, focus="action:mri_whole_spine")):
        done = subprocess.run(["dot", "-Tsvg"], input=source.encode(), capture_output=True, check=True)
        assert done.stderr == b""


# ---- 5. focus views ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "focus",
    ["action:mri_whole_spine", "fact:cancer_history", "rule:neuro.present", "urgency:emergency", "fact:neuro_symptom"],
)
def test_focus_draws_only_the_pathway(graph, focus):
    dot = to_dot(graph, focus=focus)
    expected = set(pathway(graph, focus))
    assert set(dot_node_ids(dot)) == expected
    assert dot_edge_ids(dot) == {(u, v) for u, v in graph.edges if u in expected and v in expected}
    stmt = statement(dot, focus)
    assert "focus" in attr(stmt, "class").split() and attr(stmt, "peripheries") == "2"
    assert f"pathway through {focus}" in dot


def test_focus_keeps_whole_model_tooltips(graph):
    dot = to_dot(graph, focus="action:mri_lumbar")
    tip = attr(statement(dot, "fact:radiograph"), "tooltip")
    assert "pitfall.imaging_alone_insufficient" in tip  # a reader outside the pathway is still named


def test_focus_with_a_patient(graph, evaluator):
    result = evaluator.evaluate(PATIENTS["lump_without_neuro"])
    dot = to_dot(graph, overlay=overlay_from_result(graph, result), focus="action:mri_lumbar")
    assert "fired" in attr(statement(dot, "rule:imaging.mri_lumbar.abnormal_radiograph"), "class").split()
    assert "not-fired" in attr(statement(dot, "rule:imaging.mri_lumbar.mass_persists"), "class").split()
    assert "rule:red_flag.leg_weakness" not in dot_node_ids(dot)


# ---- 6. the command ----------------------------------------------------------------------------------------------
def test_without_output_the_dot_goes_to_stdout(graph, capsys):
    code, out, err = run_cli(["graph"], capsys)
    assert (code, err) == (0, "")
    assert out == to_dot(graph)


def test_help_says_dot_goes_to_stdout(capsys):
    with pytest.raises(SystemExit):
        main(["graph", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "DOT text is printed to standard output" in out
    assert "apt-get install -y graphviz" in out


def test_format_comes_from_the_extension():
    assert {format_for(Path(f"x{ext}")) for ext in FORMATS} == {"svg", "png", "pdf", "dot"}
    assert format_for(Path("X.SVG")) == "svg"


@pytest.mark.graphviz
@needs_dot
@pytest.mark.parametrize(
    "ext,magic",
    [
        (".svg", b"<?xml"),
        (".png", b"\x89PNG\r\n\x1a\n"),
        (".pdf", b"%PDF-"),
        (".dot", b"digraph "),
        (".gv", b"digraph "),
    ],
)
def test_every_format_renders(tmp_path, capsys, patient_file, ext, magic):
    out = tmp_path / f"path{ext}"
    patient = patient_file("p", PATIENTS["saddle_suspected_compression"])
    code, stdout, err = run_cli(["graph", "--patient", str(patient), "-o", str(out)], capsys)
    assert (code, stdout, err) == (0, "", "")
    data = out.read_bytes()
    assert data.startswith(magic) and len(data) > 1000
    if ext == ".svg":
        assert b'id="rule:ed.saddle_anesthesia" class="node rule emergency fired"' in data
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["p.yaml", out.name])  # no temp file left


def test_dot_output_needs_no_graphviz(tmp_path, capsys, monkeypatch, graph):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "g.dot"
    code, _, err = run_cli(["graph", "-o", str(out)], capsys)
    assert (code, err) == (0, "")
    assert out.read_text(encoding="utf-8") == to_dot(graph)


@pytest.mark.parametrize("ext", [".svg", ".png", ".pdf"])
def test_a_missing_dot_is_one_line_with_the_install_command(tmp_path, capsys, monkeypatch, ext):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / f"g{ext}"
    code, stdout, err = run_cli(["graph", "-o", str(out)], capsys)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "apt-get install -y graphviz" in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(GraphvizMissingError):
        run_dot("digraph {}", "svg")


def test_a_failing_dot_leaves_the_previous_file_untouched(tmp_path, capsys, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dot").write_text("#!/bin/sh\necho 'Error: syntax error in line 1' >&2\nexit 1\n")
    (fake / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    out = tmp_path / "g.svg"
    out.write_text("previous picture")
    code, _, err = run_cli(["graph", "-o", str(out)], capsys)
    assert code == 2 and "syntax error in line 1" in err and err.count("\n") == 1
    assert out.read_text() == "previous picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "g.svg"]
    with pytest.raises(GraphvizFailedError):
        run_dot("digraph {}", "png")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where no file can be created")
def test_an_unwritable_output_is_one_line_naming_it(capsys):
    code, stdout, err = run_cli(["graph", "-o", "/proc/x.dot"], capsys)
    assert (code, stdout) == (2, "")
    assert err.startswith("error: /proc/x.dot: cannot write the output") and err.count("\n") == 1


def test_any_os_error_writing_the_output_is_an_output_error(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(render.tempfile, "mkstemp", refuse)
    out = tmp_path / "g.dot"
    code, stdout, err = run_cli(["graph", "-o", str(out)], capsys)
    assert (code, stdout) == (2, "")
    assert err == f"error: {out}: cannot write the output: Permission denied\n"
    monkeypatch.undo()
    monkeypatch.setattr(render.os, "replace", refuse)  # the temporary file is written, the rename fails
    with pytest.raises(OutputError):
        render.write_atomic(out, b"digraph {}")
    assert list(tmp_path.iterdir()) == []


def test_the_output_path_is_checked_once(tmp_path, capsys, monkeypatch):
    calls = []

    def counting(path):
        calls.append(path)
        return render.format_for(path)

    monkeypatch.setattr(render, "check_output", counting)
    monkeypatch.setattr(graph_command, "check_output", counting)
    out = tmp_path / "g.dot"
    assert run_cli(["graph", "-o", str(out)], capsys)[0] == 0
    assert calls == [out] and out.is_file()


@pytest.mark.parametrize(
    "args,expect",
    [
        (["--focus", "action:mri_whole_spin"], "did you mean 'action:mri_whole_spine'?"),
        (["--focus", "zzzzzzzz"], "kind:name"),
        (["--focus", ""], "--focus: the name is empty"),
        (["-o", "out.jpg"], "did you mean '.png'?"),
        (["-o", "out"], "cannot tell the format"),
        (["-o", "no/such/dir/out.svg"], "output directory does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, expect):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(["graph", *args], capsys)
    assert (code, stdout) == (2, "")
    assert expect in err and err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_bad_patient_file_names_the_file_and_line(tmp_path, capsys, patient_file):
    patient = patient_file("bad", {"leg_weaknes": True})
    code, stdout, err = run_cli(["graph", "--patient", str(patient)], capsys)
    assert (code, stdout) == (2, "")
    assert f"{patient}:2" in err and "did you mean 'leg_weakness'?" in err


def test_a_bad_knowledge_base_is_reported_not_drawn(tmp_path, capsys):
    code, stdout, err = run_cli(["graph", "--kb", str(tmp_path / "missing")], capsys)
    assert (code, stdout) == (2, "")
    assert "knowledge base directory not found" in err


def test_graph_of_another_knowledge_base(kb_with_not, capsys):
    code, out, _ = run_cli(["graph", "--kb", str(kb_with_not), "--focus", "test.mass_not_abnormal"], capsys)
    assert code == 0
    assert set(dot_node_ids(out)) == {
        "rule:test.mass_not_abnormal",
        "fact:palpable_mass",
        "fact:radiograph",
        "warning:do_not_assume_benign",
    }


# ---- 7. the committed pictures are the current knowledge base ---------------------------------------------------
REGENERATE = "regenerate them with the commands under 'Regenerating the pictures above' in docs/board.md"


def test_the_committed_whole_guideline_picture_is_current(graph):
    nodes, edges = svg_classes((REPO / "docs" / "images" / "decision-graph.svg").read_bytes())
    assert set(nodes) == set(graph.nodes), f"docs/images/decision-graph.svg is stale: {REGENERATE}"
    assert set(edges) == {f"{t}->{h}" for t, h in graph.edges}, REGENERATE


def test_the_committed_patient_picture_is_this_patients_path(graph, evaluator):
    result = evaluator.evaluate_file(REPO / "docs" / "images" / "patient-cancer-leg-weakness.yaml")
    nodes, _ = svg_classes((REPO / "docs" / "images" / "patient-path.svg").read_bytes())
    assert set(nodes) == set(graph.nodes), f"docs/images/patient-path.svg is stale: {REGENERATE}"
    assert {n for n, c in nodes.items() if "fired" in c} == {f"rule:{r}" for r in result.fired_ids()}, REGENERATE


def test_the_example_patient_points_to_where_its_picture_is_described():
    first = (REPO / "docs" / "images" / "patient-cancer-leg-weakness.yaml").read_text(encoding="utf-8").splitlines()[0]
    where = re.search(r'see ([\w./-]+\.md), section "([^"]+)"', first)
    assert where, f"the first line should say where the picture is described: {first}"
    doc = REPO / where.group(1)
    assert doc.is_file(), f"{doc} does not exist"
    assert f"## {where.group(2)}" in doc.read_text(encoding="utf-8").splitlines()
