"""The service's one SQLite file (stdlib sqlite3): cards issued, clinicians' feedback on them, used JWT ids and
the secret that signs explanation links.

Cards are recorded when issued (uuid, the rules behind them, the knowledge-base hash, the client that received
them and the suggestions they carried) so feedback, which names only the card's uuid, joins back to the rules:
`override_rates(path)` gives, per rule, how often its cards were accepted or overridden and why, for the review
pack and the cohort report. A card's row is written once and never replaced (its uuid is random). One
connection per thread: safe across threads and across worker processes sharing the file.

The file holds clinical facts and record ids: it is created 0600 (its -wal and -shm files take the same mode
from it) in a folder created 0700, and an existing store with wider permissions is narrowed to 0600.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS cards (
    uuid TEXT PRIMARY KEY, service TEXT NOT NULL, hook_instance TEXT NOT NULL, rules TEXT NOT NULL,
    kb_sha256 TEXT NOT NULL, urgency TEXT NOT NULL, issued_at REAL NOT NULL, explanation TEXT NOT NULL,
    client TEXT NOT NULL DEFAULT '', suggestions TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, card TEXT NOT NULL, service TEXT NOT NULL, outcome TEXT NOT NULL,
    reason_code TEXT, reason_display TEXT, user_comment TEXT, accepted_suggestions TEXT NOT NULL,
    outcome_timestamp TEXT, received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS used_tokens (
    iss TEXT NOT NULL, jti TEXT NOT NULL, exp REAL NOT NULL, PRIMARY KEY (iss, jti)
);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
ADDED_COLUMNS = {  # columns added since the first release: an older store gets them on opening
    "client": "TEXT NOT NULL DEFAULT ''",
    "suggestions": "TEXT NOT NULL DEFAULT '[]'",
}


def private_file(path: Path) -> None:
    """Create `path` 0600 (its folder 0700) if it does not exist; narrow an existing file to 0600."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CardRow:
    """A card as issued: its uuid, the rules behind it and the explanation its link renders."""

    uuid: str
    service: str
    hook_instance: str
    rules: list
    kb_sha256: str
    urgency: str
    explanation: str
    client: str = ""
    suggestions: Sequence[str] = field(default_factory=tuple)


class Store:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        private_file(self.path)
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(cards)")}
            for column, decl in ADDED_COLUMNS.items():
                if column not in have:
                    db.execute(f"ALTER TABLE cards ADD COLUMN {column} {decl}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One connection per thread, kept; each use is one transaction. WAL with synchronous=NORMAL: a
        commit is not fsynced on its own (a power cut may lose the last moments), a crash loses nothing."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, check_same_thread=True)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        with db:
            yield db

    # -- cards ------------------------------------------------------------------------------------------
    def record_card(
        self,
        uuid: str,
        service: str,
        hook_instance: str,
        rules: list,
        kb_sha256: str,
        urgency: str,
        text: str,
        client: str = "",
        suggestions: list | tuple = (),
    ) -> None:
        """Record a card issued; a uuid seen before is refused (sqlite3.IntegrityError), never replaced."""
        self.record_cards([CardRow(uuid, service, hook_instance, rules, kb_sha256, urgency, text, client, suggestions)])

    def record_cards(self, rows: Sequence[CardRow]) -> None:
        """Record the cards of one hook call in one transaction (all or none); a uuid seen before is refused
        (sqlite3.IntegrityError), never replaced."""
        now = time.time()
        with self._connect() as db:
            db.executemany(
                "INSERT INTO cards (uuid, service, hook_instance, rules, kb_sha256, urgency, issued_at, explanation, "
                "client, suggestions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.uuid,
                        r.service,
                        r.hook_instance,
                        json.dumps(r.rules),
                        r.kb_sha256,
                        r.urgency,
                        now,
                        r.explanation,
                        r.client,
                        json.dumps(list(r.suggestions)),
                    )
                    for r in rows
                ],
            )

    def card(self, uuid: str) -> dict | None:
        keys = (
            "uuid",
            "service",
            "hook_instance",
            "rules",
            "kb_sha256",
            "urgency",
            "issued_at",
            "explanation",
            "client",
            "suggestions",
        )
        with self._connect() as db:
            row = db.execute(f"SELECT {', '.join(keys)} FROM cards WHERE uuid = ?", (uuid,)).fetchone()
        if row is None:
            return None
        out = dict(zip(keys, row, strict=True))
        out["rules"] = json.loads(out["rules"])
        out["suggestions"] = json.loads(out["suggestions"])
        return out

    # -- feedback ---------------------------------------------------------------------------------------
    def record_feedback(self, service: str, items: list[dict]) -> None:
        with self._connect() as db:
            db.executemany(
                "INSERT INTO feedback (card, service, outcome, reason_code, reason_display, user_comment, "
                "accepted_suggestions, outcome_timestamp, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        i["card"],
                        service,
                        i["outcome"],
                        i.get("reason_code"),
                        i.get("reason_display"),
                        i.get("user_comment"),
                        json.dumps(i.get("accepted_suggestions", [])),
                        i.get("outcome_timestamp"),
                        time.time(),
                    )
                    for i in items
                ],
            )

    # -- JWT replay -------------------------------------------------------------------------------------
    def use_token(self, iss: str, jti: str, exp: float) -> bool:
        """Record a token id; False when it was used before (a replay)."""
        now = time.time()
        with self._connect() as db:
            db.execute("DELETE FROM used_tokens WHERE exp < ?", (now - 600,))
            try:
                db.execute("INSERT INTO used_tokens VALUES (?, ?, ?)", (iss, jti, exp))
            except sqlite3.IntegrityError:
                return False
        return True

    # -- secrets ----------------------------------------------------------------------------------------
    def secret(self, name: str) -> bytes:
        """A random 32-byte secret kept in the store, made on first use; every worker sharing the file gets the
        same one (the first to insert wins)."""
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO secrets VALUES (?, ?)", (name, secrets.token_bytes(32)))
            (value,) = db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return bytes(value)


def override_rates(path: Path | str) -> dict[str, dict]:
    """Per rule: cards issued, feedback received, accepted, overridden, the override rate and the reasons.

    A card stands for every rule behind it, so one override counts for each of them. A card counts once: when
    feedback on it came several times (the spec allows it), its latest outcome is the one counted, so repeated
    posts cannot skew the rate. The rate is overridden / (accepted + overridden), None while there is no
    feedback."""
    db = sqlite3.connect(Path(path), timeout=10)
    try:
        cards = {uuid: json.loads(rules) for uuid, rules in db.execute("SELECT uuid, rules FROM cards")}
        rows = db.execute("SELECT card, outcome, reason_code, reason_display FROM feedback ORDER BY id").fetchall()
    finally:
        db.close()
    latest = {card: (outcome, code, display) for card, outcome, code, display in rows}
    out: dict[str, dict] = {}

    def entry(rule: str) -> dict:
        return out.setdefault(rule, {"cards": 0, "accepted": 0, "overridden": 0, "override_rate": None, "reasons": {}})

    for rules in cards.values():
        for rule in rules:
            entry(rule)["cards"] += 1
    for card, (outcome, code, display) in latest.items():
        for rule in cards.get(card, ()):
            e = entry(rule)
            if outcome == "accepted":
                e["accepted"] += 1
            elif outcome == "overridden":
                e["overridden"] += 1
                reason = display or code or "no reason given"
                e["reasons"][reason] = e["reasons"].get(reason, 0) + 1
    for e in out.values():
        answered = e["accepted"] + e["overridden"]
        e["override_rate"] = e["overridden"] / answered if answered else None
    return dict(sorted(out.items()))
