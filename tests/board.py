"""A medical board for tests: Ed25519 keys made by the real `board-key` code, in a temporary folder beside a
copy of the knowledge base (a private key is never committed), and board.yaml listing their public keys."""

from __future__ import annotations

from pathlib import Path

from lumbar_kb.engine.analysis.approvals import new_key

NAMES = ("Dr A", "Dr B", "Dr C")


def make_board(kb_dir: Path, quorum: int = 2, names: tuple[str, ...] = NAMES) -> dict[str, Path]:
    """Write board.yaml into `kb_dir`; the members' private key files, by name (outside the knowledge base)."""
    keys_dir = kb_dir.parent / "keys"
    keys_dir.mkdir(exist_ok=True)
    keys, lines = {}, [f"quorum: {quorum}", "members:"]
    for name in names:
        path = keys_dir / (name.replace(" ", "_") + ".pem")
        public = new_key(path)
        keys[name] = path
        lines.append(f'  - {{name: "{name}", public_key: "{public}"}}')
    (kb_dir / "board.yaml").write_text("\n".join(lines) + "\n")
    return keys
