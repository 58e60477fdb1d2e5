"""Evaluate patients with durable-rules, behind a small interface: `Engine(kb).run(inputs) -> Trace`.

durable-rules 2.0.28 is unmaintained and has sharp edges (../shared/notes/durable-rules.md); this module is
the only place that knows about them:
  * one Host and one registered ruleset per Engine, built once; every patient gets a fresh session id (sid)
    and its state is deleted afterwards (the 1,024-live-session cap, flat memory);
  * the `__intake__` rule fires in every session, so `delete_state` never meets a session without an action
    (the segfault);
  * the Host's background timer threads are never started (`_run` is a no-op), so every action runs on the
    caller's thread inside `assert_fact`, and engine calls are serialised with a lock (the C extension holds
    the GIL anyway);
  * actions never raise into durable (which would swallow the exception into the session state): each action
    catches, records, and the evaluation then raises EngineError;
  * every fact message carries an explicit id, and a derived fact is asserted once (no MessageObserved), and
    only if some rule reads it (no MessageNotHandled);
  * no `$not`: negation is compiled away (see `compiler`).
"""
from __future__ import annotations

import copy
import itertools
import threading
from typing import Callable, Mapping

from durable.engine import Host

from .compiler import DERIVED, INTAKE, PATIENT, CompiledKB, compile_kb
from .errors import EngineError
from .logic import support
from .model import KnowledgeBase, Rule, Value
from .trace import Firing, Trace


class _QuietHost(Host):
    """A durable Host that resolves actions from a table and starts no timer threads."""

    def __init__(self, actions: Mapping[str, Callable]):
        self._actions_table = dict(actions)
        super().__init__()

    def get_action(self, action_name: str) -> Callable:
        return self._actions_table[action_name]

    def _run(self) -> None:  # the timer threads would dispatch actions behind our back
        return None


class _Session:
    __slots__ = ("trace", "fired", "error", "counter")

    def __init__(self, inputs: dict):
        self.trace = Trace(dict(inputs))
        self.fired: set[str] = set()
        self.error: BaseException | None = None
        self.counter = 0


class Engine:
    """A compiled knowledge base ready to evaluate patients. Build once, reuse: building costs ~15 ms."""

    def __init__(self, kb: KnowledgeBase, compiled: CompiledKB | None = None):
        self.kb = kb
        self.compiled = compiled or compile_kb(kb)
        self._rules = {r.id: r for r in kb.rules}
        self._name = self.compiled.ruleset_name
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._sids = itertools.count(1)
        actions: dict[str, Callable] = {INTAKE: _intake}
        for rule in kb.rules:
            actions[rule.id] = self._make_action(rule)
        self._host = _QuietHost(actions)
        self._host.register_rulesets(copy.deepcopy(self.compiled.definition))  # durable mutates what it is given

    def _make_action(self, rule: Rule) -> Callable:
        sessions = self._sessions
        read_derived = self.compiled.read_derived

        def action(c):
            session = sessions.get(c.s.sid)
            if session is None or session.error is not None or rule.id in session.fired:
                return  # a further match of a rule that already fired: conclusions are already recorded
            try:
                _fire(session, rule, c, read_derived)
            except BaseException as exc:  # never let durable swallow it
                session.error = exc

        action.__name__ = f"rule_{rule.id}"
        return action

    def run(self, inputs: Mapping[str, Value]) -> Trace:
        """Assert one patient's answered input facts, fire to quiescence, return the trace."""
        with self._lock:
            sid = str(next(self._sids))
            session = _Session(inputs)
            self._sessions[sid] = session
            try:
                message = {"sid": sid, "id": "patient", "t": PATIENT, **session.trace.inputs}
                self._host.assert_fact(self._name, message)
            except EngineError:
                raise
            except Exception as exc:
                raise EngineError(f"durable-rules failed on this patient: {type(exc).__name__}: {exc}") from exc
            finally:
                del self._sessions[sid]
                try:
                    self._host.delete_state(self._name, sid)
                except Exception:
                    pass  # no state was stored (the patient message was refused before any action)
            if session.error is not None:
                raise EngineError(f"a rule action failed: {type(session.error).__name__}: {session.error}") \
                    from session.error
            return session.trace


def _intake(c) -> None:
    """Fires once per session so that durable always has run an action before `delete_state`."""
    return None


def _fire(session: _Session, rule: Rule, c, read_derived: frozenset) -> None:
    trace = session.trace
    session.fired.add(rule.id)
    session.counter += 1
    trace.firings.append(Firing(rule.id, session.counter, support(rule.when, trace.facts())))
    for derive in rule.derives():
        known = trace.derived.get(derive.fact)
        if known is not None:
            if known != derive.value:
                raise EngineError(f"rule {rule.id} derives {derive.fact}={derive.value!r} but it was already "
                                  f"derived as {known!r}: the knowledge base contradicts itself for this patient")
            continue
        trace.derived[derive.fact] = derive.value
        if derive.fact in read_derived:
            c.assert_fact({"id": f"d:{derive.fact}", "t": DERIVED, "n": derive.fact, "v": derive.value})
