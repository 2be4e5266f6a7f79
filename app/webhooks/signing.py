"""Delivery signatures: HMAC-SHA256 with the webhook's secret over `<timestamp>.<body>`.

Headers: `X-Conduit-Timestamp: <unix seconds>` and `X-Conduit-Signature: sha256=<hex>`. A
receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares in constant
time, and refuses timestamps too far from its clock (replays)."""

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "X-Conduit-Signature"
TIMESTAMP_HEADER = "X-Conduit-Timestamp"


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(secret: str, timestamp: int, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
