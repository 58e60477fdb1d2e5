"""The pages under docs/ run as written, and no figure or table in them (or in the README) can go stale.

Each audience page's ```sh and ```python blocks are run the way tests/test_readme.py runs the README's: in
order, in one bash session, in a fresh clone of HEAD, one clone per page, with the venv activated first (every
page says it assumes so). For the README and the pages alike:

* a ```console block is a command and what it prints: the command (`$ lumbar-kb ...`, the first line) is run
  in the repository, in-process, and must succeed, and every other line shown must be a line it prints, in
  that order; `...` on a line of its own stands for lines left out, and inside a line for any text;
* every `lumbar-kb` command line in a ```text block, or written inline, must parse;
* YAML snippets that are patients or scenarios are evaluated, rule snippets must be the bundled rule they
  quote, and JSON snippets must parse;
* every relative link must resolve, to a file and to a heading of it;
* the figures the pages state are checked against the code that sets them, and the contract tables (the fact
  vocabulary, the conclusion codes, the decision rows' columns) against the knowledge base and the code.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from lumbar_kb.clinic.service.cards import SUMMARY_MAX
from lumbar_kb.cohort.decisions import COLUMNS
from lumbar_kb.cohort.output import ROW_GROUP_ROWS
from lumbar_kb.engine import logic
from lumbar_kb.engine.loader import cache
from lumbar_kb.engine.outputs import STALE_AFTER_S
from lumbar_kb.engine.source import Limits
from lumbar_kb.main import build_parser, main

from .conftest import ROOT
from .test_readme import README, assert_commands_parse, blocks, run_in_a_fresh_clone, shown_commands

pytestmark = pytest.mark.heavy  # started first: see tests/conftest.py

DOCS = ROOT / "docs"
PAGES = ["authors", "board", "analysts", "clinic", "security-and-limits", "benchmarks"]
AUDIENCES = ["authors", "board", "analysts", "clinic"]
# each audience's deeper pages, linked from its page ("See also")
DEEPER = {
    "authors": ["clinical-coherence.md"],
    "board": ["board-release-gate.md"],
    "analysts": ["analysts-guide.md"],
    "clinic": ["clinic-cds-hooks-conformance.md", "fhir-cpg.md"],
}
ACTIVATE = "source .venv/bin/activate\n"


def page(name: str) -> Path:
    return DOCS / f"{name}.md"


def documents() -> list[Path]:
    return [README] + [page(name) for name in PAGES]


def label(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def runnable_blocks(path: Path) -> list[tuple[str, str, int]]:
    return [b for b in blocks(path.read_text(encoding="utf-8")) if b[0] in ("sh", "python")]


# ---- the pages' commands run ------------------------------------------------------------------------------------
def test_every_audience_page_has_commands_to_run():
    for name in AUDIENCES:
        assert runnable_blocks(page(name)), f"docs/{name}.md has no ```sh or ```python block"


@pytest.mark.parametrize("name", [n for n in PAGES if runnable_blocks(page(n))])
def test_every_sh_and_python_block_of_a_page_runs_in_a_fresh_clone(tmp_path, name):
    run_in_a_fresh_clone(tmp_path, runnable_blocks(page(name)), f"docs/{name}.md", prelude=ACTIVATE)


# ---- console blocks: a command and what it prints ---------------------------------------------------------------
def console_blocks(path: Path) -> list[tuple[str, list[str], int]]:
    found = []
    for lang, body, line in blocks(path.read_text(encoding="utf-8")):
        if lang == "console":
            first, *shown = body.rstrip("\n").splitlines()
            assert first.startswith("$ lumbar-kb "), f"{label(path)} line {line}: a console block starts `$ lumbar-kb`"
            found.append((first.removeprefix("$ "), shown, line))
    return found


def unmatched(shown: list[str], printed: list[str]) -> str | None:
    """The first shown line not found, in order, among the printed ones (None when all are)."""
    at = 0
    for want in shown:
        if want.strip() == "...":
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in want.rstrip().split("...")))
        while at < len(printed) and not pattern.fullmatch(printed[at].rstrip()):
            at += 1
        if at == len(printed):
            return want
        at += 1
    return None


def test_the_console_matcher_keeps_order_and_wildcards():
    printed = ["alpha 1", "beta 2", "gamma 3"]
    assert unmatched(["alpha ...", "...", "gamma 3"], printed) is None
    assert unmatched(["gamma 3", "alpha 1"], printed) == "alpha 1"
    assert unmatched(["beta 20"], printed) == "beta 20"


def test_console_blocks_show_what_the_commands_print(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    checked = 0
    ran: dict[str, tuple[int, str, str]] = {}  # a command shown twice is run once
    for path in documents():
        for cmd, shown, line in console_blocks(path):
            if cmd not in ran:
                capsys.readouterr()
                code = main(shlex.split(cmd)[1:])
                ran[cmd] = (code, *capsys.readouterr())
            code, out, err = ran[cmd]
            where = f"{label(path)} line {line}: `{cmd}`"
            assert code == 0, f"{where} exits {code}:\n{err}"
            missing = unmatched(shown, (out + err).splitlines())
            assert missing is None, (
                f"{where} no longer prints (in this order):\n{missing}\n--- it prints ---\n{out}{err}"
            )
            checked += 1
    assert checked >= 4  # the README's patient, check's counts and notes, test's coverage, the graph's patient


# ---- blocks not run, and commands written inline ----------------------------------------------------------------
def test_commands_shown_in_the_pages_parse():
    for name in PAGES:
        path = page(name)
        assert_commands_parse(shown_commands(path.read_text(encoding="utf-8")), label(path))


def test_patient_rule_and_scenario_snippets_are_valid(tmp_path, capsys, kb):
    names = {f.name for f in kb.input_facts} | {"id", "note"}
    bundled_rules = [
        rule
        for file in sorted((ROOT / "knowledge" / "lumbar_mass" / "rules").glob("*.yaml"))
        for rule in yaml.safe_load(file.read_text())["rules"]
    ]
    patients = scenarios = quoted = 0
    for path in documents():
        for i, (lang, body, line) in enumerate(blocks(path.read_text(encoding="utf-8"))):
            if lang != "yaml":
                continue
            where = f"{label(path)} line {line}"
            data = yaml.safe_load(body)
            if isinstance(data, dict) and {"name", "patient", "expect"} <= set(data):
                folder = tmp_path / f"scenarios-{path.stem}-{i}"
                folder.mkdir()
                (folder / "snippet.yaml").write_text(body)
                code = main(["test", "--scenarios", str(folder)])
                scenarios += 1
            elif isinstance(data, dict) and data and set(data) <= names:
                (tmp_path / "patient.yaml").write_text(body)
                code = main(["evaluate", str(tmp_path / "patient.yaml")])
                patients += 1
            elif isinstance(data, dict) and isinstance(data.get("rules"), list):
                for quoted_rule in data["rules"]:
                    assert quoted_rule in bundled_rules, f"{where}: rule {quoted_rule.get('id')} is not as bundled"
                    quoted += 1
                continue
            else:
                continue
            out, err = capsys.readouterr()
            assert code == 0, f"{where}: this snippet fails:\n{body}\n{out}{err}"
    assert patients + scenarios >= 1 and scenarios >= 1 and quoted >= 1


def test_json_snippets_parse():
    for path in documents():
        for lang, body, line in blocks(path.read_text(encoding="utf-8")):
            if lang == "json":
                try:
                    json.loads(body)
                except json.JSONDecodeError as exc:
                    pytest.fail(f"{label(path)} line {line}: invalid JSON ({exc})")


# ---- links ------------------------------------------------------------------------------------------------------
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's ids for a Markdown file's headings (outside fenced blocks)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    found = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_every_relative_link_resolves():
    checked = 0
    for path in [README, *sorted(DOCS.glob("*.md"))]:  # every page, the deeper and generated ones too
        text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            where = f"{label(path)}: ({target})"
            assert resolved.exists(), f"{where} does not exist"
            assert resolved.is_relative_to(ROOT), where
            if anchor:
                assert resolved.suffix == ".md" and anchor in anchors(resolved), f"{where}: no such heading"
            checked += 1
    assert checked >= 40


def test_every_audience_page_links_its_deeper_pages():
    for audience, deeper in DEEPER.items():
        text = page(audience).read_text(encoding="utf-8")
        for name in deeper:
            assert (DOCS / name).is_file() and f"]({name}" in text, (audience, name)


def test_the_link_check_catches_a_broken_link(tmp_path):
    """Guards the slugs: a heading with code and punctuation gives GitHub's id."""
    doc = tmp_path / "x.md"
    doc.write_text("## The decision rows (`--out FILE`: `.jsonl`, `.csv` or `.parquet`)\n\n## check, test, explain\n")
    assert anchors(doc) == {"the-decision-rows---out-file-jsonl-csv-or-parquet", "check-test-explain"}


def test_each_audience_page_has_a_see_also_line():
    for name in AUDIENCES:
        assert "\nSee also: " in page(name).read_text(encoding="utf-8"), name


# ---- figures checked against the code that sets them ------------------------------------------------------------
def table_rows(text: str, heading: str) -> list[list[str]]:
    section = text[text.index(heading) :]
    table = section[section.index("\n|") + 1 :].split("\n\n", 1)[0]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in table.splitlines()[2:]]


def test_the_limits_table_gives_the_defaults_in_force():
    text = page("security-and-limits").read_text(encoding="utf-8")
    rows = {row[0]: row[1] for row in table_rows(text, "## Reading files")}
    defaults = Limits()
    for field in ("max_values", "max_aliases", "max_depth", "max_int_digits", "max_string", "max_errors"):
        [row] = [value for name, value in rows.items() if f"(`{field}`)" in name]
        assert row == f"{getattr(defaults, field):,}", field
    assert rows["file size (`max_bytes`)"] == f"{defaults.max_bytes // 1024} KiB"
    assert rows["alternatives one rule's condition compiles to"] == str(logic.MAX_ALTERNATIVES)
    assert rows["conditions nested in conditions"] == str(logic.MAX_CONDITION_DEPTH)
    assert f"once it is {STALE_AFTER_S // 60} minutes old" in text
    assert f"The newest {cache.KEPT} entries are kept" in text


def test_the_long_runs_are_described_with_the_makefiles_defaults():
    makefile = (ROOT / "Makefile").read_text()
    default = dict(re.findall(r"^(\w+) \?= (\d+)$", makefile, re.M))
    bench = page("benchmarks").read_text(encoding="utf-8")
    security = page("security-and-limits").read_text(encoding="utf-8")
    assert f"with {int(default['SOAK']):,} examples each" in bench
    assert f"`FUZZ_RUNS={default['FUZZ_RUNS']}` inputs" in security
    assert f"`FUZZ_EXAMPLES={default['FUZZ_EXAMPLES']}` examples each" in security
    assert f"{int(default['COHORT_PATIENTS']):,} patients in the cohort benchmark" in bench


def test_the_defaults_the_pages_state_are_the_codes():
    parser = build_parser()
    cohort = parser._subparsers._group_actions[0].choices["cohort"]  # type: ignore[union-attr]
    [chunk] = [a for a in cohort._actions if a.dest == "chunk_size"]
    analysts = page("analysts").read_text(encoding="utf-8")
    assert f"(`--chunk-size`, default {chunk.default:,})" in analysts
    assert f"in row groups of {ROW_GROUP_ROWS:,} rows" in analysts
    assert f"A card's `summary` is at most {SUMMARY_MAX} characters" in page("clinic").read_text(encoding="utf-8")


def test_the_benchmarks_goals_are_the_ones_they_print():
    source = {path.name: path.read_text() for path in (ROOT / "benchmarks").glob("bench_*.py")}
    rows = {row[0]: row[2] for row in table_rows(page("benchmarks").read_text(encoding="utf-8"), "## The benchmarks")}
    assert set(rows) == {f"`benchmarks/{name}`" for name in source}  # every benchmark, and only those
    engine = source["bench_engine.py"]
    assert "[goal: >= 8,000]" in engine and "[goal: within 3x]" in engine and "[goal: < 5 MB]" in engine
    assert (
        rows["`benchmarks/bench_engine.py`"]
        == ">= 8,000 patients/s on one core, within 3x of the reference, RSS growth < 5 MB"
    )
    assert (
        "(goal: under 10 s)" in source["bench_author.py"]
        and rows["`benchmarks/bench_author.py`"] == "the loop under 10 s"
    )
    service = rows["`benchmarks/bench_service.py`"]
    assert f'GOAL = "{service}"' in source["bench_service.py"] and "{GOAL}" in source["bench_service.py"]
    make = (ROOT / "Makefile").read_text()
    ran = re.findall(r"benchmarks/(bench_\w+\.py)", make[make.index("\nbench:") :].split("\n\n")[0])
    assert sorted(ran) == sorted(source), "make bench runs every benchmark"
    count = {5: "five", 6: "six", 7: "seven", 8: "eight"}[len(source)]
    assert f"`make bench` runs the {count} below" in page("benchmarks").read_text(encoding="utf-8")


# ---- the contract tables ----------------------------------------------------------------------------------------
def test_the_authors_page_lists_every_input_fact_with_its_type_and_alarm(kb):
    text = page("authors").read_text(encoding="utf-8")
    for fact in kb.input_facts:
        kind = "bool" if fact.type == "bool" else ", ".join(fact.values)
        alarm = "yes" if fact.alarm else ""
        row = f"| `{fact.name}` | {kind} | {alarm} |".replace("|  |", "| |")
        assert row in text.replace("|  |", "| |"), fact.name
    listed = re.findall(r"^\| `(\w+)` \| (?:bool|[a-z_, ]+) \|", text[text.index("## The fact vocabulary") :], re.M)
    assert len(set(listed) & {f.name for f in kb.input_facts}) == len(kb.input_facts)


def test_the_clinic_page_names_every_conclusion_code(kb):
    result = page("clinic").read_text(encoding="utf-8")
    result = result[result.index("## The result") :].split("\n## ", 1)[0]
    for kind in ("action", "warning", "differential"):
        for code in kb.catalog[kind]:
            assert f"`{code}`" in result, code


def test_the_analysts_page_lists_the_cohort_decision_columns_in_order():
    text = page("analysts").read_text(encoding="utf-8")
    table = text[text.index("## The decision rows") :].split("\n\n", 2)[1]
    listed = [name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split(" | ")[0])]
    assert listed == [*COLUMNS, "changes"]  # `changes` only with --compare-kb


def test_the_clinic_page_describes_every_key_of_the_result(evaluator):
    result = page("clinic").read_text(encoding="utf-8")
    rows = table_rows(result, "## The result")
    described = {key for row in rows for key in re.findall(r"`(\w+)`", row[0])}
    keys = set(evaluator.evaluate({"palpable_mass": True}).to_dict())
    assert described == keys
