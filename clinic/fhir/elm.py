"""CQL expressions with their ELM: each `Expr` carries its CQL text and its ELM JSON tree side by side.

The building blocks `cql` and `cql_records` write the library with, so the text a person reads and the tree a CQL
engine (cql-execution) runs are built by one call and cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from lumbar_kb.engine.model import Value

ELM_TYPES = "urn:hl7-org:elm-types:r1"
FHIR_NS = "http://hl7.org/fhir"
FHIR_VERSION = "4.0.1"
ITEM_DEPTH = 3  # QuestionnaireResponse items are read this many levels deep (the exported one has 2: group, item)


# ---- expressions: CQL text and ELM side by side ------------------------------------------------------------------
@dataclass(frozen=True)
class Expr:
    cql: str
    elm: dict


def _t(name: str) -> str:
    return "{" + ELM_TYPES + "}" + name


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def string(value: str) -> Expr:
    text = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return Expr(text, {"type": "Literal", "valueType": _t("String"), "value": value})


def boolean(value: bool) -> Expr:
    text = "true" if value else "false"
    return Expr(text, {"type": "Literal", "valueType": _t("Boolean"), "value": text})


def decimal(value: float) -> Expr:
    text = f"{float(value):.1f}" if float(value).is_integer() else repr(float(value))
    return Expr(text, {"type": "Literal", "valueType": _t("Decimal"), "value": text})


def literal(value: Value) -> Expr:
    return boolean(value) if isinstance(value, bool) else string(value)


def null(kind: str) -> Expr:
    return Expr(f"null as {kind}", {"type": "As", "operand": {"type": "Null"}, "asType": _t(kind)})


def ref(name: str) -> Expr:
    return Expr(quoted(name), {"type": "ExpressionRef", "name": name})


def alias(name: str) -> Expr:
    return Expr(name, {"type": "AliasRef", "name": name})


def prop(source: Expr, path: str) -> Expr:
    if source.elm.get("type") == "AliasRef":
        return Expr(f"{source.cql}.{path}", {"type": "Property", "path": path, "scope": source.elm["name"]})
    return Expr(f"({source.cql}).{path}", {"type": "Property", "path": path, "source": source.elm})


def _junction(kind: str, word: str, items: list[Expr]) -> Expr:
    assert items
    out = items[0]
    for item in items[1:]:  # ELM's And / Or are binary: nest them left to right (associative under Kleene)
        out = Expr(f"{out.cql} {word} {item.cql}", {"type": kind, "operand": [out.elm, item.elm]})
    return Expr(f"({out.cql})", out.elm) if len(items) > 1 else out


def and_(items: list[Expr]) -> Expr:
    return _junction("And", "and", items)


def or_(items: list[Expr]) -> Expr:
    return _junction("Or", "or", items)


def not_(item: Expr) -> Expr:
    return Expr(f"(not ({item.cql}))", {"type": "Not", "operand": item.elm})  # CQL's `is` binds tighter than not


def equal(a: Expr, b: Expr) -> Expr:
    return Expr(f"({a.cql} = {b.cql})", {"type": "Equal", "operand": [a.elm, b.elm]})


def greater(a: Expr, b: Expr) -> Expr:
    return Expr(f"({a.cql} > {b.cql})", {"type": "Greater", "operand": [a.elm, b.elm]})


def list_(items: list[Expr]) -> Expr:
    return Expr("{ " + ", ".join(i.cql for i in items) + " }", {"type": "List", "element": [i.elm for i in items]})


def in_(a: Expr, values: list[Expr]) -> Expr:
    listed = list_(values)
    return Expr(f"({a.cql} in {listed.cql})", {"type": "In", "operand": [a.elm, listed.elm]})


def is_true(a: Expr) -> Expr:
    return Expr(f"({a.cql} is true)", {"type": "IsTrue", "operand": a.elm})


def is_false(a: Expr) -> Expr:
    return Expr(f"({a.cql} is false)", {"type": "IsFalse", "operand": a.elm})


def is_null(a: Expr) -> Expr:
    return Expr(f"({a.cql} is null)", {"type": "IsNull", "operand": a.elm})


def if_(cond: Expr, then: Expr, other: Expr) -> Expr:
    return Expr(
        f"(if {cond.cql} then {then.cql} else {other.cql})",
        {"type": "If", "condition": cond.elm, "then": then.elm, "else": other.elm},
    )


def case(whens: list[tuple[Expr, Expr]], other: Expr) -> Expr:
    if not whens:
        return other
    text = "case " + " ".join(f"when {c.cql} then {v.cql}" for c, v in whens) + f" else {other.cql} end"
    elm = {"type": "Case", "caseItem": [{"when": c.elm, "then": v.elm} for c, v in whens], "else": other.elm}
    return Expr(f"({text})", elm)


def coalesce(items: list[Expr]) -> Expr:
    return Expr(
        "Coalesce(" + ", ".join(i.cql for i in items) + ")", {"type": "Coalesce", "operand": [i.elm for i in items]}
    )


def tuple_(elements: dict[str, Expr]) -> Expr:
    text = "Tuple { " + ", ".join(f"{k}: {v.cql}" for k, v in elements.items()) + " }"
    return Expr(text, {"type": "Tuple", "element": [{"name": k, "value": v.elm} for k, v in elements.items()]})


def aggregate(kind: str, source: Expr) -> Expr:
    return Expr(f"{kind}({source.cql})", {"type": kind, "source": source.elm})


def unary(kind: str, operand: Expr, cql_name: str | None = None) -> Expr:
    return Expr(f"{cql_name or kind}({operand.cql})", {"type": kind, "operand": operand.elm})


def as_fhir(operand: Expr, kind: str) -> Expr:
    return Expr(
        f"({operand.cql} as FHIR.{kind})", {"type": "As", "operand": operand.elm, "asType": f"{{{FHIR_NS}}}{kind}"}
    )


def let_ref(name: str) -> Expr:
    """A value a query's `let` clause names, read in that query or a query nested in it."""
    return Expr(name, {"type": "QueryLetRef", "name": name})


def query(name: str, source: Expr, where: Expr | None = None, returns: Expr | None = None, let: tuple = ()) -> Expr:
    """`(source) name [let N: expr, ...] [where ...] return all ...`: `let` is (name, Expr) pairs, each worked out
    once per element of the source (an engine would otherwise work a repeated expression out at every use)."""
    text = f"({source.cql}) {name}"
    elm: dict = {"type": "Query", "source": [{"alias": name, "expression": source.elm}], "relationship": []}
    if let:
        text += " let " + ", ".join(f"{n}: {e.cql}" for n, e in let)
        elm["let"] = [{"identifier": n, "expression": e.elm} for n, e in let]
    if where is not None:
        text += f" where {where.cql}"
        elm["where"] = where.elm
    returns = returns if returns is not None else alias(name)  # `return all`: no distinct (cql-execution's default)
    text += f" return all {returns.cql}"
    elm["return"] = {"distinct": False, "expression": returns.elm}
    return Expr(f"({text})", elm)


def retrieve(kind: str) -> Expr:
    return Expr(
        f"[{kind}]",
        {
            "type": "Retrieve",
            "dataType": f"{{{FHIR_NS}}}{kind}",
            "templateId": f"http://hl7.org/fhir/StructureDefinition/{kind}",
        },
    )


def items_of(source: Expr) -> Expr:
    """`source.item` as a list, never null (an element without items gives the empty list)."""
    return coalesce([prop(source, "item"), Expr("{}", {"type": "List", "element": []})])
