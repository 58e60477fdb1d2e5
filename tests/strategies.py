"""Hypothesis strategies shared by the property tests: patients drawn by stratum so every pathway is common."""

from hypothesis import event
from hypothesis import strategies as st

from lumbar_kb.engine.logic import contradicts_only_if

from .bundled import KB

STRATA = ("alarm_free", "all_no", "partly_unknown", "enum_answers", "fully_answered")


def valid(kb, facts):
    return not any(contradicts_only_if(f, facts) for f in kb.input_facts)


@st.composite
def patients(draw, kb=KB):
    stratum = draw(st.sampled_from(STRATA))
    # outside the alarm-free strata, half the patients may say yes to an alarm question: with yes/no drawn
    # 50/50 nearly every patient would be an emergency already, and monotonicity would have nothing to bite on
    alarm_yes = stratum not in ("alarm_free", "all_no") and draw(st.booleans())
    facts = {}
    for fact in kb.input_facts:
        values = fact.values if alarm_yes or not (fact.alarm and fact.type == "bool") else (False,)
        if fact.type == "bool" and (stratum == "all_no" or (stratum == "alarm_free" and fact.alarm)):
            value = False
        elif stratum == "fully_answered" or (stratum == "enum_answers" and fact.type == "enum"):
            value = draw(st.sampled_from(values))
        else:
            value = draw(st.one_of(st.none(), st.sampled_from(values)))
        if value is not None:
            facts[fact.name] = value
    for fact in kb.input_facts:  # the vocabulary's own constraints: a question that does not apply is left out
        if contradicts_only_if(fact, facts):
            del facts[fact.name]
    event(f"stratum: {stratum}")
    return facts
