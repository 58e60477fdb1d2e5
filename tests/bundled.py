"""The bundled knowledge base for the test modules that read it when they are imported (to parametrize, in
strategies): loaded once per test process. Each module loaded its own, twelve loads in every worker before a
test ran. Shared, so read-only: a test that changes a knowledge base loads or copies its own, and
tests/conftest.py fails the run if this one was changed."""

from __future__ import annotations

from lumbar_kb.engine.analysis.memo import digest
from lumbar_kb.engine.loader import load

KB = load()
DIGEST = digest(KB)
