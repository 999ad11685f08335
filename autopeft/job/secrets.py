"""Credentials in store URIs: masked before a URI is stored, logged, exported or printed."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK = "***"
SECRET_PARAMETER = re.compile(r"token|password|passwd|pwd|secret|key|signature|sig|credential|auth", re.IGNORECASE)


def mask_uri(uri: str | None) -> str | None:
    """``uri`` fit to show: its user and password, and any token-like query parameter, replaced by ***."""
    if not uri or "://" not in uri:
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret = any(SECRET_PARAMETER.search(k) for k, _ in pairs)
    if netloc == parts.netloc and not secret:
        return uri
    query = urlencode([(k, MASK if SECRET_PARAMETER.search(k) else v) for k, v in pairs], safe="*") if secret else parts.query
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """(``uri`` without its user and password, user, password)."""
    parts = urlsplit(uri)
    if "://" not in uri or parts.username is None:
        return uri, None, None
    host = parts.netloc.rsplit("@", 1)[1]
    return uri.replace(parts.netloc, host, 1), parts.username, parts.password
