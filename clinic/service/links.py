"""Signed, expiring links to a card's explanation: `/explanations/{uuid}?expires=T&signature=S`, where S is an
HMAC-SHA256 over the card's uuid and T with a secret the service keeps in its store (random, made on first
start, shared by the workers). Nobody without the secret can make a link, a link stops working at T, and a
card's uuid alone (random too) opens nothing."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from urllib.parse import quote


def signature(secret: bytes, card: str, expires: int) -> str:
    return hmac.new(secret, f"explanation|{card}|{expires}".encode(), hashlib.sha256).hexdigest()


def signed_url(base_url: str, secret: bytes, card: str, ttl: float, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl)
    return (
        f"{base_url.rstrip('/')}/explanations/{quote(card, safe='')}"
        f"?expires={expires}&signature={signature(secret, card, expires)}"
    )


def valid(secret: bytes, card: str, expires: str | None, sig: str | None, now: float | None = None) -> str | None:
    """None when the link is good, else why it is refused. Only what `signed_url` writes is read: an expiry of
    ASCII digits (`str.isdigit` takes "²", which `int` refuses) and a signature of lowercase hex."""
    if not expires or not sig or not re.fullmatch(r"[0-9]{1,12}", expires) or not re.fullmatch(r"[0-9a-f]{64}", sig):
        return "the link is not signed: open it from the card"
    if not hmac.compare_digest(signature(secret, card, int(expires)), sig):
        return "the link's signature is not valid"
    if int(expires) < (time.time() if now is None else now):
        return "the link has expired: open the card again"
    return None
