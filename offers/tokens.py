"""Session tokens: the shopper's signed, expiring credential for one session of one site."""

from __future__ import annotations

import secrets

from django.core import signing

_SALT = "liveoffers.session-token"


def new_session_id() -> str:
    return secrets.token_urlsafe(12)


def issue_token(session_id: str, site_key: str) -> str:
    return signing.dumps([session_id, site_key], salt=_SALT, compress=False)


def read_token(token: str | None, site_key: str, *, max_age: int) -> str | None:
    """The session a token names, or None when it is missing, forged, expired or for another site."""
    if not token or len(token) > 512:
        return None
    try:
        value = signing.loads(token, salt=_SALT, max_age=max_age)
    except signing.BadSignature:  # SignatureExpired is a BadSignature
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(part, str) for part in value)
        or value[1] != site_key
    ):
        return None
    return str(value[0])
