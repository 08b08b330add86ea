"""Signed webhooks for task outcomes (Standard Webhooks style).

When a task ends, one `WebhookDelivery` row is stored per (task, outcome, retry round)
and a django-q2 job POSTs it to the task's callback URL, signed with the secret of
the API token the task was created with. The row is the truth: attempts, the last
answer and the time of the next attempt live on it, so a lost job is picked up again
by `webhook_retry_due` (run every minute on a django-q2 schedule).

Callback URLs are user input that makes the server open connections, so they are
checked against SSRF both when a task is created and right before each attempt, and
each attempt connects to the very address that was checked (see `_post_pinned`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urljoin, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from .models import TERMINAL_STATUSES, GenerationTask, WebhookDelivery

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
USER_AGENT = "Easel-Webhooks/1.0 (+https://github.com/easel; self-hosted image studio)"
MAX_URL_LENGTH = 500  # the model fields' max_length
# A delivery job may sleep and try again in-process while the next backoff is at most
# EASEL_WEBHOOK_INLINE_RETRY_MAX seconds (default 30; 0 turns it off); longer waits are
# left to `webhook_retry_due`, so a worker is never parked for long. In total a job
# never sleeps more than this (well below the cluster's job timeout).
INLINE_RETRY_BUDGET = 60.0
# How long an attempt holds its delivery: `webhook_retry_due` leaves it alone meanwhile.
ATTEMPT_LEASE = timedelta(seconds=60)
# How much of a failed answer's body is kept on the row, for the owner to read.
ERROR_BODY_LIMIT = 500


def _setting(name: str, default):
    return getattr(settings, name, default)


def _allow_private() -> bool:
    return bool(_setting("EASEL_WEBHOOK_ALLOW_PRIVATE", False))


def max_attempts() -> int:
    return max(1, int(_setting("EASEL_WEBHOOK_MAX_ATTEMPTS", 6)))


def backoff_delay(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: base, 2×base, 4×base… capped."""
    base = float(_setting("EASEL_WEBHOOK_BACKOFF_BASE", 5))
    cap = float(_setting("EASEL_WEBHOOK_BACKOFF_MAX", 3600))
    return min(cap, base * (2 ** max(0, attempts - 1)))


def _timeout() -> float:
    return float(_setting("EASEL_WEBHOOK_TIMEOUT", 10))


# --- URL checks -------------------------------------------------------------------


class WebhookUrlRefused(ValidationError):
    """The URL is not allowed (as opposed to a host that merely failed to resolve now)."""


@dataclass(frozen=True)
class _Target:
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


def _target(url: str) -> _Target:
    """Parse and resolve a callback URL, refusing anything the server must not call.

    Raises WebhookUrlRefused for a URL that is not allowed and plain ValidationError
    when the host cannot be resolved (which may be temporary).
    """
    url = (url or "").strip()
    if not url:
        raise WebhookUrlRefused(_("Enter a callback URL."), code="invalid")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlRefused(
            _("The callback URL is too long (at most %(n)d characters).") % {"n": MAX_URL_LENGTH}, code="invalid"
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
            _("The callback URL's host %(host)s could not be found.") % {"host": hostname}, code="unresolvable"
        ) from None
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = sockaddr[0].split("%", 1)[0]  # drop an IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ValidationError(
            _("The callback URL's host %(host)s could not be found.") % {"host": hostname}, code="unresolvable"
        )
    if not _allow_private():
        # Every address must be public: a host with one public and one internal
        # address could otherwise be steered to the internal one.
        for address in addresses:
            if _address_refused(ipaddress.ip_address(address)):
                raise WebhookUrlRefused(
                    _("The callback URL points to a private or reserved network address (%(address)s); "
                      "Easel only calls public addresses.") % {"address": address},
                    code="forbidden_address",
                )

    netloc = parts.netloc  # no user info here (refused above)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return _Target(
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
    _target(url)


# --- signing ----------------------------------------------------------------------


def webhook_sign(*, secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `webhook-signature` value for one attempt."""
    raw = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    key = base64.b64decode(raw)
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _body(payload: dict) -> bytes:
    # Sorted keys and no spaces: the same bytes on every attempt and every database
    # (PostgreSQL's jsonb does not keep key order).
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --- creating deliveries ----------------------------------------------------------

EVENTS = {status: f"task.{status}" for status in TERMINAL_STATUSES}


class _PublicBase:
    """Stands in for a request so the serializer writes absolute URLs when it can."""

    def __init__(self, base: str):
        self.base = base.rstrip("/") + "/"

    def build_absolute_uri(self, path: str) -> str:
        return urljoin(self.base, path.lstrip("/"))


def _task_payload(task: GenerationTask, event: str) -> dict:
    from rest_framework.renderers import JSONRenderer

    from .api import TaskSerializer

    base = _setting("EASEL_PUBLIC_URL", "")
    context = {"request": _PublicBase(base)} if base else {}
    data = TaskSerializer(task, context=context).data
    # Through DRF's encoder, so dates and decimals are exactly what the API shows.
    data = json.loads(JSONRenderer().render(data))
    when = task.completed_at or timezone.now()
    return {"type": event, "timestamp": when.isoformat().replace("+00:00", "Z"), "data": data}


def webhook_enqueue_for_task(*, task_id: int) -> WebhookDelivery | None:
    """Store and queue the webhook for a task that has ended; None when there is none to send.

    Idempotent: the message id is derived from the task, its outcome and its retry
    round, so calling this again (a redelivered job) returns the existing delivery.
    """
    task = (
        GenerationTask.objects.select_related("api_token").prefetch_related("images").filter(pk=task_id).first()
    )
    if task is None or task.status not in TERMINAL_STATUSES or not task.callback_url:
        return None
    event = EVENTS[task.status]
    message_id = f"msg_task{task.pk}_{task.status}_{task.retries}"
    existing = WebhookDelivery.objects.filter(message_id=message_id).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                user_id=task.user_id,
                task=task,
                api_token=task.api_token,
                event=event,
                url=task.callback_url,
                message_id=message_id,
                payload=_task_payload(task, event),
                # Due now: if the enqueue below is lost, the schedule still sends it.
                next_attempt_at=timezone.now(),
            )
    except IntegrityError:  # a concurrent call stored it first
        return WebhookDelivery.objects.get(message_id=message_id)
    delivery_id = delivery.pk
    transaction.on_commit(lambda: _enqueue(delivery_id))
    return delivery


def _enqueue(delivery_id: int) -> None:
    from django_q.tasks import async_task

    async_task("generation.webhooks.webhook_deliver", delivery_id, group="webhooks")


# --- delivering -------------------------------------------------------------------


class _Unsendable(Exception):
    """This delivery can never succeed (no secret, refused URL): fail it now."""


@dataclass
class _Answer:
    status: int | None = None
    error: str = ""


def _post_pinned(target: _Target, *, body: bytes, headers: dict[str, str]) -> _Answer:
    """POST to the address that was just checked, never to a fresh DNS answer.

    urllib3 is given the IP as the host, with the original name in the Host header,
    as the TLS SNI name and as the name the certificate must match. So a DNS answer
    that changes between the check and the connection (DNS rebinding) cannot steer
    the request elsewhere. No proxies (environment ones are ignored), no redirects.
    """
    import urllib3

    timeout = _timeout()
    last_error = ""
    for address in target.addresses:
        kwargs = {
            "timeout": urllib3.Timeout(connect=min(5.0, timeout), read=timeout),
            "retries": False,
            "maxsize": 1,
        }
        if target.scheme == "https":
            # An install whose receivers use an internal CA can point at its bundle.
            ca_bundle = _setting("EASEL_WEBHOOK_CA_BUNDLE", "")
            if not ca_bundle:
                try:
                    import certifi

                    ca_bundle = certifi.where()
                except ImportError:  # the system store then
                    pass
            if ca_bundle:
                kwargs["ca_certs"] = ca_bundle
            pool = urllib3.HTTPSConnectionPool(
                address, target.port, cert_reqs="CERT_REQUIRED", assert_hostname=target.host,
                server_hostname=target.host, **kwargs,
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, target.port, **kwargs)
        try:
            response = pool.urlopen(
                "POST", target.path, body=body, headers={"Host": target.host_header, **headers},
                redirect=False, preload_content=False, assert_same_host=False,
            )
            try:
                excerpt = response.read(ERROR_BODY_LIMIT, decode_content=False) if not 200 <= response.status < 300 else b""
            except Exception:  # the status is what counts; the body is a courtesy
                excerpt = b""
            finally:
                response.release_conn()
            error = ""
            if not 200 <= response.status < 300:
                error = _("The receiver answered HTTP %(status)d.") % {"status": response.status}
                if 300 <= response.status < 400:
                    error += " " + _("Redirects are not followed.")
                text = excerpt.decode("utf-8", "replace").strip()
                if text:
                    error += " " + text
            return _Answer(status=response.status, error=error)
        except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as exc:
            # This address is unreachable; the host may have another one.
            last_error = _("Could not connect: %(error)s") % {"error": exc}
            continue
        except urllib3.exceptions.HTTPError as exc:
            return _Answer(error=_("The request failed: %(error)s") % {"error": exc})
        finally:
            pool.close()
    return _Answer(error=last_error or _("Could not connect."))


def _attempt(delivery_id: int) -> float | None:
    """Make one attempt if the delivery is due. Returns seconds until the next one, or None.

    The attempt is claimed with a conditional UPDATE on the attempt counter, so two
    workers (the in-process retry and the schedule, or a redelivered job) never send
    the same attempt twice.
    """
    now = timezone.now()
    delivery = WebhookDelivery.objects.select_related("api_token").filter(pk=delivery_id).first()
    if delivery is None or delivery.state != WebhookDelivery.State.PENDING:
        return None
    if delivery.next_attempt_at and delivery.next_attempt_at > now:
        return (delivery.next_attempt_at - now).total_seconds()
    seen = delivery.attempts
    claimed = WebhookDelivery.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        pk=delivery_id, state=WebhookDelivery.State.PENDING, attempts=seen,
    ).update(attempts=F("attempts") + 1, next_attempt_at=now + ATTEMPT_LEASE)
    if not claimed:
        return None  # another worker has it
    attempts = seen + 1

    answer = _Answer()
    fatal = False
    try:
        token = delivery.api_token
        if token is None or not token.webhook_secret:
            raise _Unsendable(
                _("The API token this task was created with has been deleted, so there is no secret "
                  "to sign the webhook with. Unsigned webhooks are never sent.")
            )
        try:
            # Checked again now: the URL was fine at creation, but DNS may have changed.
            target = _target(delivery.url)
        except WebhookUrlRefused as exc:
            raise _Unsendable(" ".join(exc.messages)) from None
        except ValidationError as exc:  # not resolvable right now: worth retrying
            answer = _Answer(error=" ".join(exc.messages))
        else:
            body = _body(delivery.payload)
            timestamp = int(time.time())
            headers = {
                "webhook-id": delivery.message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": webhook_sign(
                    secret=token.webhook_secret, message_id=delivery.message_id, timestamp=timestamp, body=body
                ),
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            }
            answer = _post_pinned(target, body=body, headers=headers)
    except _Unsendable as exc:
        fatal = True
        answer = _Answer(error=str(exc))

    done = timezone.now()
    fields = {"last_status_code": answer.status, "last_error": answer.error[:2000]}
    if answer.status is not None and 200 <= answer.status < 300:
        fields.update(state=WebhookDelivery.State.DELIVERED, delivered_at=done, next_attempt_at=None, last_error="")
        delay = None
    elif fatal or attempts >= max_attempts():
        fields.update(state=WebhookDelivery.State.FAILED, next_attempt_at=None)
        delay = None
    else:
        delay = backoff_delay(attempts)
        fields.update(next_attempt_at=done + timedelta(seconds=delay))
    WebhookDelivery.objects.filter(pk=delivery_id, attempts=attempts).update(**fields)
    logger.info("webhook %s attempt %d: %s %s", delivery.message_id, attempts, answer.status, answer.error)
    return delay


def webhook_deliver(delivery_id: int) -> None:
    """django-q2 job: send one delivery, retrying in-process while the backoff is short.

    Longer backoffs end the job; `webhook_retry_due` enqueues it again when due.
    """
    inline_max = float(_setting("EASEL_WEBHOOK_INLINE_RETRY_MAX", 30))
    slept = 0.0
    while True:
        delay = _attempt(delivery_id)
        if delay is None or delay > inline_max or slept + delay > INLINE_RETRY_BUDGET:
            return
        time.sleep(max(0.0, delay))
        slept += delay


def webhook_retry_due() -> int:
    """Scheduled every minute: enqueue deliveries whose next attempt is due. Returns how many.

    Harmless to run on several hosts at once: each attempt is claimed by the job.
    """
    ids = list(
        WebhookDelivery.objects.filter(state=WebhookDelivery.State.PENDING, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:500]
    )
    for delivery_id in ids:
        _enqueue(delivery_id)
    return len(ids)


# --- reads and settings for the API -----------------------------------------------


def webhook_delivery_list(*, user, task_id: int | None = None):
    qs = WebhookDelivery.objects.filter(user=user)
    if task_id is not None:
        qs = qs.filter(task_id=task_id)
    return qs.order_by("-created_at", "-id")


def webhook_delivery_get(*, user, delivery_id: int) -> WebhookDelivery:
    """The delivery if the user owns it or is staff; Http404 otherwise (no existence leak)."""
    from django.http import Http404

    qs = WebhookDelivery.objects.all()
    if not user.is_staff:
        qs = qs.filter(user=user)
    delivery = qs.filter(pk=delivery_id).first()
    if delivery is None:
        raise Http404
    return delivery


def webhook_default_set(*, token, url: str) -> None:
    """Set (or clear, with a blank URL) the default callback of one API token."""
    url = (url or "").strip()
    if url:
        try:
            callback_url_validate(url)
        except ValidationError as exc:
            raise ValidationError({"url": exc.messages}) from None
    token.webhook_url = url
    token.save(update_fields=["webhook_url"])
