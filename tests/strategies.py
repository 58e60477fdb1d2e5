"""Hypothesis strategies shared by the property tests: patients drawn by stratum so every pathway is common."""

from functools import cache

from hypothesis import event
from hypothesis import strategies as st

from lumbar_kb.engine.logic import contradicts_only_if

from .bundled import KB

STRATA = ("alarm_free", "all_no", "partly_unknown", "enum_answers", "fully_answered")


@cache
def _one_of(values: tuple):
    """A value of `values`: each strategy built once (built at every draw, it cost more than many tests)."""
    return st.sampled_from(values)


@cache
def one_of_or_unknown(values: tuple):
    """A value of `values` or None (unknown), the strategy built once."""
    return st.one_of(st.none(), st.sampled_from(values))


def valid(kb, facts):
    return not any(contradicts_only_if(f, facts) for f in kb.input_facts)


@st.composite
def patients(draw, kb=KB):
    stratum = draw(_one_of(STRATA))
    # outside the alarm-free strata, half the patients may say yes to an alarm question: with yes/no drawn
    # 50/50 nearly every patient would be an emergency already, and monotonicity would have nothing to bite on
    alarm_yes = stratum not in ("alarm_free", "all_no") and draw(st.booleans())
    facts = {}
    for fact in kb.input_facts:
        values = fact.values if alarm_yes or not (fact.alarm and fact.type == "bool") else (False,)
        if fact.type == "bool" and (stratum == "all_no" or (stratum == "alarm_free" and fact.alarm)):
            value = False
        elif stratum == "fully_answered" or (stratum == "enum_answers" and fact.type == "enum"):
            value = draw(_one_of(tuple(values)))
        else:
            value = draw(one_of_or_unknown(tuple(values)))
        if value is not None:
            facts[fact.name] = value
    for fact in kb.input_facts:  # the vocabulary's own constraints: a question that does not apply is left out
        if contradicts_only_if(fact, facts):
            del facts[fact.name]
    event(f"stratum: {stratum}")
    return facts
