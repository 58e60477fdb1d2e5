import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

from lumbar_kb.engine.api import Evaluator
from lumbar_kb.engine.loader import default_kb_dir, load
from lumbar_kb.engine.reference import ReferenceEvaluator

ROOT = Path(__file__).resolve().parent.parent

# the on-disk cache of loaded knowledge bases is on, as users have it, in a folder of this run's own: made by the
# first pytest process, inherited by xdist's workers and by the commands the tests run, removed at the end. So each
# content is loaded in full once in a run (a knowledge base with a problem never is kept: its errors are always the
# loader's), and `make mutation`, one pytest per mutant, never reads a load another mutant made.
# tests/test_kb_cache.py tests that a kept load is the model a full load gives.
if "PYTEST_XDIST_WORKER" not in os.environ:
    os.environ["LUMBAR_KB_CACHE"] = tempfile.mkdtemp(prefix="lumbar-kb-tests-")
    atexit.register(shutil.rmtree, os.environ["LUMBAR_KB_CACHE"], True)


def pytest_collection_modifyitems(items):
    """The modules marked `heavy` (those holding tests of several seconds: the CPG engines, Chromium, the docs run
    in a fresh clone, Dask, servers) are put first, each kept whole, the rest after in their order: on two cores a
    long test left for the end of the run kept one worker busy while the other waited."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


# `make mutation` asks for the same examples on every run, so that a mutant is judged by the same tests
settings.register_profile("derandomize", derandomize=True)
if os.environ.get("LUMBAR_KB_DERANDOMIZE"):
    settings.load_profile("derandomize")


@pytest.fixture(scope="session", autouse=True)
def _the_shared_knowledge_base_is_left_as_loaded():
    """tests/bundled.py's knowledge base is shared by the modules that import it: none may change it."""
    yield
    from .bundled import DIGEST, KB, digest

    assert digest(KB) == DIGEST, "a test changed the shared knowledge base of tests/bundled.py"


@pytest.fixture(scope="session")
def kb():
    return load()


@pytest.fixture(scope="session")
def bundled_pack(tmp_path_factory, kb):
    """The review pack of the bundled knowledge base, written once per test process for the tests that only read it
    (a module fixture was built again each time a worker came back to its module)."""
    from lumbar_kb.visualize.review.content import build_pack
    from lumbar_kb.visualize.review.pack import write_pack

    out = tmp_path_factory.mktemp("bundled-pack")
    write_pack(build_pack(kb), out)
    return out


@pytest.fixture(scope="session")
def evaluator(kb):
    """One compiled engine for the whole run: durable-rules Hosts are built once per process by design."""
    return Evaluator(kb)


@pytest.fixture(scope="session")
def reference(kb):
    return ReferenceEvaluator(kb)


@pytest.fixture
def kb_copy(tmp_path):
    """A writable copy of the bundled knowledge base, for seeding defects."""
    target = tmp_path / "kb"
    shutil.copytree(default_kb_dir(), target)
    return target
