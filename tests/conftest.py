import shutil
from pathlib import Path

import pytest

from lumbar_kb.engine.api import Evaluator
from lumbar_kb.engine.loader import default_kb_dir, load
from lumbar_kb.engine.reference import ReferenceEvaluator

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kb():
    return load()


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
