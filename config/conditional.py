"""Conditional GETs for what clients poll: a weak ETag on the answer, 304 Not Modified with
no body when the client's `If-None-Match` names it (RFC 9110 §13.1.2: weak comparison).

Django's `ConditionalGetMiddleware` would hash every body after the view made it; these
views make their ETag from what their answer is made of, before making it. Imports no app.
"""
from __future__ import annotations

from django.http import HttpResponseNotModified
from django.utils.http import parse_etags


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def etag_matches(request, etag: str) -> bool:
    """Does the request's `If-None-Match` name this ETag (or `*`)?"""
    header = request.META.get("HTTP_IF_NONE_MATCH")
    if not header:
        return False
    tags = parse_etags(header)
    if tags == ["*"]:
        return True
    ours = _opaque(etag)
    return any(_opaque(tag) == ours for tag in tags)


def not_modified(etag: str, *, cache_control: str, vary: str = "") -> HttpResponseNotModified:
    """The 304: no body, the ETag and the caching headers the 200 would have carried."""
    response = HttpResponseNotModified()
    response["ETag"] = etag
    response["Cache-Control"] = cache_control
    if vary:
        response["Vary"] = vary
    return response
