"""What can be seen of a knowledge base without a solver.

The derivation graph (derived fact -> derived fact, through the rules that read one and derive the other)
and its cycles; who reads and who concludes what; the input state count; and the figure that an action's
window words state ("within 12-24 hours" states 24 hours), to compare with its `within_hours`.
"""

from __future__ import annotations

import difflib
import heapq
import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from lumbar_kb.engine import logic
from lumbar_kb.engine.errors import LumbarKBError, Problem
from lumbar_kb.engine.model import KnowledgeBase, Recommend, Rule, SetUrgency, condition_facts, hours_text


def conclusion_key(conclusion) -> tuple:
    """What a conclusion decides, for comparing rules: an action with its window figure (not its words)."""
    if isinstance(conclusion, SetUrgency):
        return ("urgency", conclusion.level)
    if isinstance(conclusion, Recommend):
        return (
            (conclusion.kind, conclusion.code, conclusion.within_hours)
            if conclusion.kind == "action"
            else (conclusion.kind, conclusion.code)
        )
    return ("derive", conclusion.fact, conclusion.value)


def describe_key(key: tuple) -> str:
    if key[0] == "derive":
        return f"derive {key[1]} = {logic_value(key[2])}"
    if key[0] == "action":
        return f"action {key[1]} ({hours_text(key[2])})"
    return f"{key[0]} {key[1]}"


def logic_value(value) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def conclusion_codes(rule: Rule) -> list[str]:
    """The catalogue codes a rule concludes, as "kind:code"."""
    out = []
    for c in rule.then:
        if isinstance(c, SetUrgency):
            out.append(f"urgency:{c.level}")
        elif isinstance(c, Recommend):
            out.append(f"{c.kind}:{c.code}")
    return out


@dataclass(frozen=True)
class Structure:
    kb: KnowledgeBase
    readers: dict  # fact -> [rule ids] whose condition reads it
    derivers: dict  # (fact, value) -> [rule ids] that derive it
    concluders: dict  # "kind:code" -> [rule ids]
    # the derivation graph: derived fact -> {derived fact it helps derive -> [rule ids], in rule order}; a few dicts,
    # not networkx (the decision graph's library), whose import was a fifth of what `validate` took
    graph: dict
    cycles: list  # list[list[tuple[str, str]]]: each cycle as (derived fact, rule id) steps

    @property
    def acyclic(self) -> bool:
        return not self.cycles

    def topological_derived(self) -> list[str]:
        """Derived facts, each after every derived fact its deriving rules read (acyclic only); of those free to
        come next, the first in vocabulary order."""
        order = {name: i for i, name in enumerate(self.kb.facts)}
        waiting = dict.fromkeys(self.graph, 0)
        for successors in self.graph.values():
            for nxt in successors:
                waiting[nxt] += 1
        free = [(order[n], n) for n, k in waiting.items() if k == 0]
        heapq.heapify(free)
        out = []
        while free:
            _, node = heapq.heappop(free)
            out.append(node)
            for nxt in self.graph[node]:
                waiting[nxt] -= 1
                if waiting[nxt] == 0:
                    heapq.heappush(free, (order[nxt], nxt))
        if len(out) != len(waiting):
            raise ValueError("the derivation graph has a cycle: no topological order")
        return out


def analyse(kb: KnowledgeBase) -> Structure:
    readers: dict[str, list[str]] = {name: [] for name in kb.facts}
    derivers: dict[tuple, list[str]] = {(f.name, v): [] for f in kb.derived_facts for v in f.values}
    concluders: dict[str, list[str]] = {f"{kind}:{code}": [] for kind, codes in kb.catalog.items() for code in codes}
    graph: dict[str, dict[str, list[str]]] = {f.name: {} for f in kb.derived_facts}
    for rule in kb.rules:
        for fact in rule.reads:
            readers[fact].append(rule.id)
        for code in conclusion_codes(rule):
            concluders[code].append(rule.id)
        for derive in rule.derives():
            derivers[(derive.fact, derive.value)].append(rule.id)
            for fact in rule.reads:
                if kb.facts[fact].derived:
                    graph[fact].setdefault(derive.fact, []).append(rule.id)
    return Structure(kb, readers, derivers, concluders, graph, _cycles(kb, graph))


def _components(graph: dict) -> list[set]:
    """The strongly connected components: the nodes each node reaches and is reached from (the graphs here are a
    knowledge base's derived facts: a search from each is cheap)."""
    reach = {}
    for start in graph:
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen
    out, placed = [], set()
    for node in graph:
        if node not in placed:
            component = {other for other in reach[node] if node in reach[other]}
            placed |= component
            out.append(component)
    return out


def _cycles(kb: KnowledgeBase, graph: dict) -> list[list[tuple[str, str]]]:
    """One simple cycle per strongly connected component that has one, deterministic."""
    order = {name: i for i, name in enumerate(kb.facts)}
    cycles = []
    components = [sorted(c, key=order.__getitem__) for c in _components(graph)]
    for component in sorted(components, key=lambda c: order[c[0]]):
        start = component[0]
        if len(component) == 1 and start not in graph[start]:
            continue
        inside = set(component)
        path = _cycle_from({n: [m for m in graph[n] if m in inside] for n in component}, start, order)
        cycles.append([(a, graph[a][b][0]) for a, b in zip(path, path[1:] + path[:1], strict=False)])
    return cycles


def _cycle_from(graph: dict, start: str, order: dict) -> list[str]:
    """The shortest cycle through `start` (breadth first, neighbours in vocabulary order)."""
    parents: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node], key=order.__getitem__):
            if nxt == start:
                path: list[str] = [node]
                while (parent := parents[path[-1]]) is not None:
                    path.append(parent)
                return list(reversed(path))
            if nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    raise AssertionError("a strongly connected component has a cycle through each node")


# ---- input states ------------------------------------------------------------------------------------------
def input_state_count(kb: KnowledgeBase, limit: int = 1_000_000) -> tuple[int, bool]:
    """How many distinct patients there are (each input fact unknown or a value, respecting `only_if` and the
    vocabulary's relations).

    Facts tied together by `only_if` or a relation are counted by enumerating their joint assignments (when there are
    fewer than `limit`); the rest multiply. Returns (count, exact)."""
    inputs = list(kb.input_facts)
    parent = {f.name: f.name for f in inputs}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for f in inputs:
        if f.only_if is not None:
            for other in condition_facts(f.only_if):
                if other in parent:
                    parent[find(other)] = find(f.name)
    for relation in kb.relations:
        tied = [n for c in (relation.when, relation.implies, relation.excludes) if c for n in condition_facts(c)]
        for other in tied[1:]:
            parent[find(other)] = find(tied[0])
    related = {n for r in kb.relations for c in (r.when, r.implies, r.excludes) if c for n in condition_facts(c)}
    clusters: dict[str, list] = {}
    for f in inputs:
        clusters.setdefault(find(f.name), []).append(f)
    total, exact = 1, True
    for members in clusters.values():
        size = math.prod(len(f.values) + 1 for f in members)
        if len(members) == 1 and members[0].only_if is None and members[0].name not in related:
            total *= size
            continue
        if size > limit:
            total *= size
            exact = False
            continue
        count = 0
        for combo in itertools.product(*[(None, *f.values) for f in members]):
            facts = {f.name: v for f, v in zip(members, combo, strict=False) if v is not None}
            if not any(logic.contradicts_only_if(f, facts) for f in members) and not any(
                logic.breaks(r, facts) for r in kb.relations
            ):
                count += 1
        total *= count
    return total, exact


# ---- window words ------------------------------------------------------------------------------------------
_UNIT_HOURS = {"minute": 1 / 60, "min": 1 / 60, "hour": 1, "hr": 1, "h": 1, "day": 24, "week": 168, "month": 730}
_FIGURE = re.compile(
    r"(\d+(?:\.\d+)?)(?:\s*(?:-|–|to)\s*(\d+(?:\.\d+)?))?\s*"
    r"(minutes?|mins?|hours?|hrs?|h|days?|weeks?|months?)\b",
    re.IGNORECASE,
)
_AT_ONCE = re.compile(r"\b(immediately|at once|right away|now)\b", re.IGNORECASE)


def stated_hours(words: str | None) -> float | None:
    """The deadline window words state, in hours: the upper end of the first figure ("within 12-24 hours"
    -> 24, "within 2 weeks" -> 336), 0 for "immediately"; None when the words state no figure ("urgently")."""
    if not words:
        return None
    match = _FIGURE.search(words)
    if match:
        number = float(match.group(2) or match.group(1))
        unit = match.group(3).lower().rstrip("s") or "h"
        return number * _UNIT_HOURS[unit]
    if _AT_ONCE.search(words):
        return 0.0
    return None


def stated_lower(words: str | None) -> float | None:
    """The lower end of a range the window words state ("within 12-24 hours" -> 12); None without a range."""
    match = _FIGURE.search(words or "")
    if not match or match.group(2) is None:
        return None
    return float(match.group(1)) * _UNIT_HOURS[match.group(3).lower().rstrip("s") or "h"]


def action_conclusions(rule: Rule) -> list[Recommend]:
    return [c for c in rule.then if isinstance(c, Recommend) and c.kind == "action"]


# ---- names ---------------------------------------------------------------------------------------------------
PLURAL_KINDS = {
    "facts": "fact",
    "rules": "rule",
    "actions": "action",
    "warnings": "warning",
    "differentials": "differential",
}


def resolve_name(
    ids: Iterable[str], text: str, *, subject: str, unknown: str, error: type[LumbarKBError] = LumbarKBError
) -> str:
    """The id (`kind:name`, e.g. `action:mri_whole_spine`, `rule:neuro.present`) a user means by `text`.

    The one resolver of typed names, for `explain`'s CODE and `graph --focus`: a full id, or a bare name
    only one of `ids` has. The kind may be plural (`actions:`). The kind and the name are compared exactly
    first, then ignoring case when that leaves one id (`urgency:EMERGENCY`). An empty, unknown or
    ambiguous name is `error` (exit 2): `unknown` is the message with '{}' for the text, the hint a "did you
    mean" or the ids to choose from."""
    ids = list(dict.fromkeys(ids))
    kinds = list(dict.fromkeys(i.split(":", 1)[0] for i in ids))
    text = text.strip()
    if not text:
        raise error(
            Problem(
                "the name is empty",
                subject=subject,
                hint="a name is written kind:name, kind one of " + ", ".join(kinds),
            )
        )
    if text in ids:
        return text
    if ":" in text:  # kind:name, the kind perhaps plural or in capitals
        kind, name = (part.strip() for part in text.split(":", 1))
        kind = PLURAL_KINDS.get(kind.lower(), kind.lower())
        candidates = [(i, i.split(":", 1)[1]) for i in ids if i.split(":", 1)[0].lower() == kind]
    else:  # a bare name
        name = text
        candidates = [(i, i.split(":", 1)[-1]) for i in ids]
    for fold in (lambda word: word, str.lower):
        found = [i for i, bare in candidates if fold(bare) == fold(name)]
        if len(found) == 1:
            return found[0]
        if found:
            raise error(Problem(f"'{text}' names several", subject=subject, hint="use one of: " + ", ".join(found)))
    raise error(Problem(unknown.format(text), subject=subject, hint=_suggest_name(ids, kinds, text)))


def _suggest_name(ids: list[str], kinds: list[str], text: str) -> str:
    by_bare: dict[str, str] = {}
    for i in ids:
        by_bare.setdefault(i.split(":", 1)[-1], i)
    close = difflib.get_close_matches(text, sorted(set(ids) | set(by_bare)), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0] if close[0] in ids else by_bare[close[0]]}'?"
    return "a name is written kind:name, kind one of " + ", ".join(kinds)
