"""The questionnaire page in headless Chromium (Debian's /usr/bin/chromium through Playwright), against a real
`lumbar-kb serve` on a free loopback port started and stopped here.

From the guideline: a red flag (leg weakness) is an emergency, shown at once; while alarm questions are
unanswered the page never says the lowest urgency as if settled; the alarm questions come first.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from .bundled import KB
from .chromium import CHROMIUM, FLAGS
from .servers import serving

ROOT = Path(__file__).resolve().parent.parent

ALARM = [f for f in KB.input_facts if f.alarm]
LOWEST = min(KB.catalog["urgency"].values(), key=lambda e: e.rank)
TOP = max(KB.catalog["urgency"].values(), key=lambda e: e.rank)


def test_chromium_is_installed():
    assert os.path.exists(CHROMIUM), "install Debian's chromium (.ci/ensure-chromium, run by make setup)"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("page")) as served:
        yield served.base


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1000, "height": 1300},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server + "/")
    page.wait_for_function("() => document.getElementById('result').dataset.urgency !== undefined")
    yield page
    assert all(url.startswith(server) for url in requests), "every asset is local"
    page.close()


def answer(page, fact: str, value: str) -> None:
    """Answer as a user would: a question not shown among the main ones is under "Other questions"."""
    target = f"#q-{fact}-{value}"
    if page.eval_on_selector(target, "e => !!e.closest('#more-block')") and not page.eval_on_selector(
        "#more-block", "e => e.open"
    ):
        page.click("#more-title")
    page.check(target)


def _headline(page) -> str:
    return page.inner_text("#headline")


def _shots() -> Path:
    """Where the screenshots go: docs/images under `make screenshots` (LUMBAR_KB_SCREENSHOTS), else a temporary
    folder, so a test run never rewrites tracked files."""
    where = os.environ.get("LUMBAR_KB_SCREENSHOTS")
    out = Path(where) if where else Path(tempfile.gettempdir()) / "lumbar-kb-screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_alarm_questions_first_and_no_settled_lowest_urgency_while_they_are_unanswered(page):
    facts = page.eval_on_selector_all("#questions fieldset", "els => els.map(e => e.dataset.fact)")
    assert facts[: len(ALARM)] == [f.name for f in ALARM]
    assert page.get_attribute("#result", "data-complete") == "false"
    assert _headline(page) != LOWEST.label
    assert "info" not in page.get_attribute("#result", "class")
    answer(page, "palpable_mass", "true")
    page.wait_for_function("() => document.querySelector('#q-palpable_mass-true').checked")
    page.wait_for_timeout(300)
    assert _headline(page) != LOWEST.label and page.get_attribute("#result", "data-complete") == "false"
    assert page.is_visible("#incomplete") and KB.incomplete_text.strip() in page.inner_text("#incomplete")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(_shots() / "questionnaire-incomplete.png"))


def test_a_red_flag_shows_the_emergency_at_once(page):
    answer(page, "leg_weakness", "true")
    page.wait_for_function(f"() => document.getElementById('result').dataset.urgency === '{TOP.code}'")
    assert _headline(page) == TOP.label
    assert "critical" in page.get_attribute("#result", "class")
    assert KB.catalog["action"]["emergency_department"].label in page.inner_text("#actions")


def test_the_keyboard_answers_and_focus_stays_on_the_question(page):
    page.focus("#q-leg_weakness-true")
    page.keyboard.press("ArrowDown")  # radio groups move with the arrow keys: now "No"
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'q-leg_weakness-false'")
    page.wait_for_function("() => document.getElementById('q-leg_weakness-false').checked")
    assert page.evaluate("document.activeElement.id") == "q-leg_weakness-false"


def test_all_alarm_questions_answered_no_completes_the_result_and_shrinks_the_questions(page, server):
    for fact in ALARM:
        answer(page, fact.name, "false")
        page.wait_for_timeout(50)
    page.wait_for_function("() => document.getElementById('result').dataset.complete === 'true'")
    assert not _headline(page).startswith("INCOMPLETE") and not page.is_visible("#incomplete")
    answer(page, "palpable_mass", "true")  # a lump: now the back-pain questions cannot change the result
    page.wait_for_function("() => document.querySelectorAll('#more fieldset').length > 0")
    shown = page.eval_on_selector_all("#questions fieldset", "els => els.map(e => e.dataset.fact)")
    hidden = page.eval_on_selector_all("#more fieldset", "els => els.map(e => e.dataset.fact)")
    assert set(shown) | set(hidden) == {f.name for f in KB.input_facts}
    assert hidden, "questions that cannot change the result are tucked away"


def test_patient_wording_and_a_screenshot(page):
    page.check("input[name=audience][value=patient]")
    first = ALARM[0]
    page.wait_for_function(
        f"() => document.querySelector('#q-{first.name}-legend').textContent.endsWith({first.patient_question!r})"
    )
    answer(page, "palpable_mass", "true")
    page.wait_for_function("() => document.querySelector('#q-palpable_mass-true').checked")
    page.wait_for_timeout(300)
    assert page.is_visible("#incomplete") and not page.is_visible("#why-block")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(_shots() / "questionnaire-patient.png"))
    page.check("input[name=audience][value=clinician]")
    page.wait_for_function(
        f"() => document.querySelector('#q-{first.name}-legend').textContent.endsWith({first.question!r})"
    )
    answer(page, "palpable_mass", "true")
    answer(page, "bowel_bladder_dysfunction", "true")
    page.wait_for_function(f"() => document.getElementById('result').dataset.urgency === '{TOP.code}'")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(_shots() / "questionnaire-page.png"), full_page=False)


def test_every_input_has_a_label(page):
    unlabeled = page.evaluate(
        "[...document.querySelectorAll('input')].filter(i => !document.querySelector(`label[for=\"${i.id}\"]`)"
        " && !i.closest('label')).length"
    )
    assert unlabeled == 0
