"""Evaluate patients with durable-rules, behind a small interface: `Engine(kb).run(inputs) -> Trace`.

durable-rules is a C rete engine (`durable_rules_engine`) under a Python wrapper (`durable.engine`). The
wrapper costs about 20 µs per action (a Closure, two clock reads, a JSON round trip of the session state),
more than the rete itself, and brings the sharp edges measured on this project's machines
(docs/security-and-limits.md, "durable-rules, and its sharp edges"). This module drives the C engine directly
with a lean dispatch loop of its own, and is the only place that knows about durable at all:
  * the compiled ruleset is created once per Engine, and so is the one session (sid) its patients go through:
    once a patient's rules have fired, the facts asserted for it are retracted, which leaves the session
    empty for the next. A new session costs durable ~0.5 MB of memory set to zero (its index tables: ~30 % of
    a cohort's instructions, measured with callgrind), so the session is not deleted and made again for each
    patient. A failed evaluation deletes its session (pending actions, facts and all) and the next patient
    gets a fresh one (the 1,024-live-session cap; flat memory);
  * the `__intake__` rule fires for every patient, so `delete_state` never meets a session in which no
    action ran (the segfault);
  * no Host, hence none of its background timer threads: every action runs on the caller's thread, inside
    `run`, and calls are serialised with a lock (the C extension holds the GIL anyway);
  * an action never raises into durable (which would swallow the exception into the session state): any
    failure is recorded, the action abandoned, and `run` raises EngineError;
  * every fact message carries an explicit id; a derived fact is asserted once (never MessageObserved) and
    only if some rule tests it for that value (never MessageNotHandled); any other assert outcome is an EngineError;
  * no `$not`: negation is compiled away (see `compiler`).
The order in which durable hands out actions is the firing order recorded in the trace.
"""

from __future__ import annotations

import itertools
import json
import threading
import weakref
from collections.abc import Mapping

import durable_rules_engine as _durable

from lumbar_kb.engine.compiler import DERIVED, INTAKE, PATIENT, CompiledKB, compile_kb
from lumbar_kb.engine.errors import ContradictoryRules, EngineError, KnowledgeBaseError, Problem
from lumbar_kb.engine.model import KnowledgeBase, Value
from lumbar_kb.engine.prepared import Fragments, PreparedRule, first_deriver, prepared
from lumbar_kb.engine.trace import Firing, Trace

_ASSERTED, _NOT_HANDLED, _OBSERVED, _QUEUED = 0, 1, 2, 3  # durable's assert result codes
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(..., ensure_ascii=False), one encoder for all


def _create(name: str, rules: dict, kb: KnowledgeBase) -> int:
    """Create the C ruleset; if durable refuses it, name the rule it refuses (one rule at a time)."""
    try:
        return _durable.create_ruleset(name, json.dumps(rules, ensure_ascii=False))
    except _durable.error as exc:
        by_id = {r.id: r for r in kb.rules}
        problems = []
        for i, (rule_name, body) in enumerate(rules.items()):
            try:
                handle = _durable.create_ruleset(f"{name}_probe_{i}", json.dumps({rule_name: body}))
            except _durable.error as rule_exc:
                rule = by_id.get(rule_name)
                problems.append(
                    Problem(
                        f"durable-rules cannot compile this rule ({rule_exc}); split its condition into smaller rules",
                        file=rule.file if rule else None,
                        line=rule.line if rule else None,
                        subject=f"rule {rule_name}",
                    )
                )
            else:
                _durable.delete_ruleset(handle)
        raise KnowledgeBaseError(problems or [Problem(f"durable-rules cannot compile the rules: {exc}")]) from None


class _Session:
    __slots__ = ("trace", "facts", "fired", "sid", "facts_after", "asserted")

    def __init__(self, sid: str, inputs: Mapping[str, Value]):
        self.sid = sid
        self.asserted: list[str] = []  # the fact messages asserted for this patient, retracted after it
        self.trace = Trace(dict(inputs))
        self.facts = dict(inputs)  # inputs plus everything derived so far
        self.fired: set[str] = set()
        self.facts_after: dict[int, dict] = {}  # the facts known after n derivations, shared by its firings' evidence


class _Live:
    """The session an Engine's patients go through: its id, and whether an action has run in it (only then is
    `delete_state` safe: the segfault)."""

    __slots__ = ("sid", "acted")

    def __init__(self, sid: str):
        self.sid, self.acted = sid, False


def _end(handle: int, live: _Live) -> None:
    if live.acted:
        _durable.delete_state(handle, live.sid)


def _release(handle: int, live: _Live) -> None:
    """What an Engine holds in the C engine, freed when the Engine is collected: its session, then its ruleset."""
    _end(handle, live)
    _durable.delete_ruleset(handle)


class Engine:
    """A knowledge base compiled into a durable-rules ruleset, ready to evaluate many patients.

    Build once and reuse (a few ms); `run` is thread-safe but serialised.
    """

    _names = itertools.count(1)

    def __init__(self, kb: KnowledgeBase, compiled: CompiledKB | None = None):
        self.kb = kb
        self.compiled = compiled or compile_kb(kb)
        # a process-unique name: the C engine keeps every ruleset until it is deleted
        self._handle = _create(f"{self.compiled.ruleset_name}_{next(self._names)}", self.compiled.rules, kb)
        self._sids = itertools.count(1)
        self._live = _Live(str(next(self._sids)))  # the session every patient goes through
        weakref.finalize(self, _release, self._handle, self._live)  # free the C ruleset and session with the Engine
        self._rules: dict[str, PreparedRule] = prepared(kb).rules  # each rule's derivations and supporter
        # each derived (fact, value) some pattern tests: its message after the session id, encoded once
        self._derived_messages: dict[tuple, str] = {
            (fact, value): _ENCODE({"id": f"d:{fact}", "t": DERIVED, "n": fact, "v": value})[1:]
            for fact, value in self.compiled.read_derived
        }
        self._fragments = Fragments(kb, _ENCODE)  # each vocabulary answer's part of the patient's message
        self._lock = threading.Lock()

    def _answers(self, inputs: dict) -> str:
        """The answers as the members of a JSON object (`_ENCODE(inputs)` without its braces), joined from the
        fragments of the vocabulary's answers; anything else (a key or value outside the vocabulary, a value of
        another type) is encoded as it is."""
        joined = self._fragments.join(inputs.items(), ", ")
        return _ENCODE(inputs)[1:-1] if joined is None else joined

    def run(self, inputs: Mapping[str, Value]) -> Trace:
        """Assert one patient's answered input facts, fire to quiescence, return the trace."""
        with self._lock:
            live = self._live
            session = _Session(live.sid, inputs)
            handle = self._handle
            try:
                answers = self._answers(session.trace.inputs)  # spliced after the message's own keys
                rest = ", " + answers + "}" if answers else "}"
                state = self._assert(
                    session, f'{{"sid": "{session.sid}", "id": "patient", "t": "{PATIENT}"{rest}', "patient"
                )
                started = _durable.start_action_for_state(handle, state)
                message = started[1] if started else None
                live.acted = live.acted or message is not None
                while message:
                    name = message[2 : message.index('"', 2)]  # '{"<rule name>":{...match...}}'
                    if name != INTAKE:
                        try:
                            self._fire(session, name)
                        except BaseException:
                            _durable.abandon_action(handle, state)
                            raise
                    message = _durable.complete_and_start_action(handle, state)
                for sent in reversed(session.asserted):  # the session is left empty for the next patient
                    code, _ = _durable.retract_fact(handle, sent)
                    if code != _ASSERTED:
                        raise EngineError(f"durable-rules could not retract a fact (code {code})")
            except BaseException as exc:
                self._new_session()
                if isinstance(exc, EngineError | ContradictoryRules) or not isinstance(exc, Exception):
                    raise
                raise EngineError(f"a rule action failed: {type(exc).__name__}: {exc}") from exc
            return session.trace

    def _new_session(self) -> None:
        """Drop the session a failed evaluation leaves behind (its facts and pending actions with it) and start
        another. A session in which no action ever ran is left to durable rather than deleted (the segfault):
        with the intake rule that only happens when the patient's own fact was refused, which never happens."""
        _end(self._handle, self._live)
        self._live.sid, self._live.acted = str(next(self._sids)), False

    def _assert(self, session: _Session, message: str, fact_id: str) -> int:
        code, state = _durable.assert_fact(self._handle, message)
        if code != _ASSERTED:
            reason = {_NOT_HANDLED: "matched no rule", _OBSERVED: "was already asserted"}.get(code, f"code {code}")
            raise EngineError(f"durable-rules refused fact {fact_id} ({reason})")
        session.asserted.append(message)
        return state

    def _fire(self, session: _Session, name: str) -> None:
        if name in session.fired:
            return  # a further match of a rule that already fired: its conclusions are recorded
        step = self._rules[name]
        session.fired.add(name)
        trace = session.trace
        derived = trace.derived
        evidence = (step.support, trace.inputs, derived, len(derived), session.facts_after)
        # the model's own string for the rule id, not the one cut from durable's message: the traces, decisions
        # and pathways that stores keep then share one copy of each id (~1 KB a kept sequence otherwise)
        trace.firings.append(Firing(step.rule.id, len(trace.firings) + 1, None, evidence))
        for derive in step.derives:
            known = session.facts.get(derive.fact)
            if known is not None:
                if known != derive.value:
                    first = first_deriver((self._rules[f.rule] for f in trace.firings), derive.fact, known)
                    raise ContradictoryRules(derive.fact, first, known, step.rule, derive.value)
                continue
            session.facts[derive.fact] = derive.value
            trace.derived[derive.fact] = derive.value
            rest = self._derived_messages.get((derive.fact, derive.value))
            if rest is not None:  # only a value some pattern tests: one no pattern tests is not handled
                self._assert(session, f'{{"sid": "{session.sid}", {rest}', f"d:{derive.fact}")
