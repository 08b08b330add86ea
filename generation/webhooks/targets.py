"""Callback URLs are user input that makes the server open connections, so each one is
checked against SSRF when it is set (a task's, a token's default) and again right before
every attempt; the attempt then connects to the very address checked
(`generation.webhooks.delivery`).

Refused: schemes other than http(s), credentials in the URL, bad ports, and hosts that
resolve to loopback, private, link-local (cloud metadata), unique-local, multicast,
unspecified or reserved addresses, unless `EASEL_WEBHOOK_ALLOW_PRIVATE`.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

MAX_URL_LENGTH = 500  # the model fields' max_length


class WebhookUrlRefused(ValidationError):
    """The URL is not allowed (as opposed to a host that merely failed to resolve now)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    host_header: str
    path: str  # path and query, as sent in the request line
    addresses: tuple[str, ...]  # the checked IPs, in the resolver's order


def _address_refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        ip = mapped
    return (
        ip.is_loopback
        or ip.is_private  # RFC 1918, fc00::/7 (unique-local), 169.254/16 and more
        or ip.is_link_local  # 169.254/16 (cloud metadata), fe80::/10
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        # Anything else not routable on the public internet (100.64/10, 192.0.0/24…).
        or not ip.is_global
    )


def target_resolve(url: str) -> Target:
    """Parse and resolve a callback URL, refusing anything the server must not call.

    Raises WebhookUrlRefused for a URL that is not allowed and plain ValidationError
    when the host cannot be resolved (which may be temporary). Each error carries its
    message id and parameters apart (lazy message, `params`), so it is shown in the
    reader's language, and a delivery can store it translatable (webhooks.delivery).
    """
    url = (url or "").strip()
    if not url:
        raise WebhookUrlRefused(_("Enter a callback URL."), code="invalid")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlRefused(
            _("The callback URL is too long (at most %(n)d characters)."), code="invalid", params={"n": MAX_URL_LENGTH}
        )
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise WebhookUrlRefused(_("The callback URL must not contain spaces or control characters."), code="invalid")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookUrlRefused(
            _("The callback URL's port must be a number between 1 and 65535."), code="invalid"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookUrlRefused(_("The callback URL must start with http:// or https://."), code="invalid")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise WebhookUrlRefused(
            _("The callback URL must not contain a user name or password; "
              "verify the webhook signature instead."),
            code="invalid",
        )
    hostname = parts.hostname
    if not hostname:
        raise WebhookUrlRefused(_("The callback URL must name a host."), code="invalid")
    if port is not None and not 1 <= port <= 65535:
        raise WebhookUrlRefused(
            _("The callback URL's port must be a number between 1 and 65535."), code="invalid"
        )
    try:
        host = hostname.encode("idna").decode("ascii") if not _is_ip(hostname) else hostname
    except UnicodeError:
        raise WebhookUrlRefused(_("The callback URL's host name is not valid."), code="invalid") from None
    port = port or (443 if scheme == "https" else 80)

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise ValidationError(
            _("The callback URL's host %(host)s could not be found."), code="unresolvable", params={"host": hostname}
        ) from None
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = sockaddr[0].split("%", 1)[0]  # drop an IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ValidationError(
            _("The callback URL's host %(host)s could not be found."), code="unresolvable", params={"host": hostname}
        )
    if not settings.EASEL_WEBHOOK_ALLOW_PRIVATE:
        # Every address must be public: a host with one public and one internal
        # address could otherwise be steered to the internal one.
        for address in addresses:
            if _address_refused(ipaddress.ip_address(address)):
                raise WebhookUrlRefused(
                    _("The callback URL points to a private or reserved network address (%(address)s); "
                      "Easel only calls public addresses."),
                    code="forbidden_address", params={"address": address},
                )

    netloc = parts.netloc  # no user info here (refused above)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(
        scheme=scheme, host=host, port=port, host_header=netloc, path=path, addresses=tuple(addresses)
    )


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def callback_url_validate(url: str) -> None:
    """Raise ValidationError unless `url` is an http(s) URL Easel may POST webhooks to.

    Refuses other schemes, credentials in the URL, bad ports, and hosts that resolve to
    loopback, private, link-local (cloud metadata), unique-local, multicast,
    unspecified or reserved addresses, unless settings.EASEL_WEBHOOK_ALLOW_PRIVATE.
    """
    target_resolve(url)
