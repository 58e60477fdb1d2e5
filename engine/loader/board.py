"""`board.yaml`: who may sign the knowledge base off, and how many distinct signers a release needs.

    quorum: 2
    members:
      - name: Dr A. Example
        public_key: ed25519:<base64 of the 32-byte raw public key>

Only public keys live here (a member's private key never enters the knowledge base). The file is hashed into
the knowledge base's identity, so a changed board is a changed knowledge base. A knowledge base without the
file has no board: nothing it records can count as signed, and its honest status is "submitted".
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from lumbar_kb.engine.errors import KnowledgeBaseError, Problem

FILE_NAME = "board.yaml"
KEY_PREFIX = "ed25519:"


@dataclass(frozen=True)
class Board:
    quorum: int
    members: dict  # name -> 32 raw public-key bytes

    @property
    def size(self) -> int:
        return len(self.members)


def encode_key(raw: bytes) -> str:
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def decode_key(text: str) -> bytes | None:
    if not text.startswith(KEY_PREFIX):
        return None
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def load_board(root: Path | str) -> Board | None:
    """The board of the knowledge base in `root`, or None when it has no board.yaml."""
    from lumbar_kb.engine.loader.files import read_contained
    from lumbar_kb.engine.loader.schema import schema_problems
    from lumbar_kb.engine.source import DocumentError

    path = Path(root) / FILE_NAME
    if not os.path.lexists(path):
        return None
    try:
        data, pos = read_contained(Path(root), path)
    except DocumentError as exc:
        raise KnowledgeBaseError(exc.problem) from None
    if not isinstance(data, dict):
        raise KnowledgeBaseError(Problem("must be a mapping at the top", file=pos.file, line=1))
    problems = schema_problems(data, "board", pos)
    if problems:
        raise KnowledgeBaseError(problems)
    members: dict[str, bytes] = {}
    seen_keys: dict[bytes, str] = {}
    for i, m in enumerate(data["members"]):
        if not m["name"].strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in m["name"]):
            problems.append(pos.problem(("members", i, "name"), "a name must be printable text"))
        raw = decode_key(m["public_key"])
        if raw is None:
            problems.append(pos.problem(("members", i, "public_key"), "not an ed25519:<base64 32-byte key>"))
            continue
        if m["name"] in members:
            problems.append(pos.problem(("members", i, "name"), "a member named twice"))
        if raw in seen_keys:
            problems.append(pos.problem(("members", i, "public_key"), f"the key of {seen_keys[raw]} again"))
        members[m["name"]] = raw
        seen_keys[raw] = m["name"]
    if not problems and data["quorum"] > len(members):
        problems.append(pos.problem(("quorum",), f"a quorum of {data['quorum']} from {len(members)} member(s)"))
    if problems:
        raise KnowledgeBaseError(problems)
    return Board(int(data["quorum"]), members)
