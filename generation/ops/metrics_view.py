"""`GET /metrics`: the Prometheus scrape, behind a bearer token and/or an address allow-list.

Off unless `EASEL_METRICS_TOKEN` or `EASEL_METRICS_ALLOW` is set: then the path answers
404 like any unknown one, so a studio that never asked for metrics shows none. The
numbers say how busy the studio is and who generates most, which is for its operators.

- A token: the scraper sends `Authorization: Bearer <token>`, compared in constant
  time; a missing or wrong one is answered 401 with `WWW-Authenticate: Bearer`.
- An allow-list: the client's address (read as the API's throttles read it, so
  `EASEL_NUM_PROXIES` trusted proxies' X-Forwarded-For count, and a client's own header
  never does) must be in one of the networks; any other address is answered 403.
- Both set: both must pass.
"""
from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import Http404, HttpResponse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client.exposition import choose_encoder
from rest_framework.throttling import BaseThrottle

from .metrics import registry


@lru_cache(maxsize=8)
def _networks(values: tuple[str, ...]) -> tuple:
    # settings.py refused an entry that is no address or network at start-up.
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def client_address(request) -> str:
    """The client's IP, behind the trusted proxies only (DRF's rule, settings NUM_PROXIES)."""
    return BaseThrottle().get_ident(request) or ""


def address_allowed(address: str, allow: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in _networks(tuple(allow)))


def _bearer(request) -> str | None:
    scheme, _sep, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def token_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@never_cache
@require_GET
def metrics(request):
    token, allow = settings.EASEL_METRICS_TOKEN, settings.EASEL_METRICS_ALLOW
    if not token and not allow:
        raise Http404
    if allow and not address_allowed(client_address(request), allow):
        return HttpResponse(_("This address may not read the metrics.") + "\n", status=403,
                            content_type="text/plain; charset=utf-8")
    if token and not token_matches(_bearer(request), token):
        response = HttpResponse(_("Send the metrics token in the Authorization header (Bearer).") + "\n", status=401,
                                content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    encoder, content_type = choose_encoder(request.META.get("HTTP_ACCEPT", ""))
    return HttpResponse(encoder(registry), content_type=content_type)
