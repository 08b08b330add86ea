"""Sending webhook deliveries: one signed POST per attempt, retried with backoff.

Each attempt is claimed with a conditional UPDATE on the row's attempt counter, checks
the URL again (DNS may have changed since it was set) and connects to the address it
checked (`_post_pinned`), so DNS rebinding cannot steer it to an internal host.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import F, Q
from django.utils import timezone, translation
from django.utils.translation import gettext_noop

from ..models import WebhookDelivery
from ..task_text import Text, text
from .services import delivery_enqueue
from .signing import payload_bytes, webhook_sign
from .targets import Target, WebhookUrlRefused, target_resolve

logger = logging.getLogger(__name__)

USER_AGENT = "Easel-Webhooks/1.0 (+https://github.com/easel; self-hosted image studio)"
# A delivery job may sleep and try again in-process while the next backoff is at most
# EASEL_WEBHOOK_INLINE_RETRY_MAX seconds (default 30; 0 turns it off); longer waits are
# left to `webhook_retry_due`, so a worker is never parked for long. In total a job
# never sleeps more than this (well below the cluster's job timeout).
INLINE_RETRY_BUDGET = 60.0
# How long an attempt holds its delivery: `webhook_retry_due` leaves it alone meanwhile.
ATTEMPT_LEASE = timedelta(seconds=60)
# How much of a failed answer's body is kept on the row, for the owner to read.
ERROR_BODY_LIMIT = 500


def max_attempts() -> int:
    return max(1, int(settings.EASEL_WEBHOOK_MAX_ATTEMPTS))


def backoff_delay(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: base, 2×base, 4×base… capped."""
    base = float(settings.EASEL_WEBHOOK_BACKOFF_BASE)
    cap = float(settings.EASEL_WEBHOOK_BACKOFF_MAX)
    return min(cap, base * (2 ** max(0, attempts - 1)))


class _Unsendable(Exception):
    """This delivery can never succeed (no secret, refused URL): fail it now."""


@dataclass
class _Answer:
    status: int | None = None
    # Stored in English with its message id, shown to staff in their language (task_text).
    error: Text | str = ""


# What the receiver said, by whether its answer was a redirect and came with a body
# (the body is the receiver's own words, kept as it wrote them).
_REFUSED = {
    (False, False): gettext_noop("The receiver answered HTTP %(status)d."),
    (False, True): gettext_noop("The receiver answered HTTP %(status)d. %(body)s"),
    (True, False): gettext_noop("The receiver answered HTTP %(status)d. Redirects are not followed."),
    (True, True): gettext_noop("The receiver answered HTTP %(status)d. Redirects are not followed. %(body)s"),
}


def _validation_text(exc: ValidationError) -> Text:
    """A callback URL's refusal (webhooks.targets) as a translatable message: its message
    id is the lazy message read with no language active."""
    error = exc.error_list[0]
    with translation.override(None):
        msgid = str(error.message)
    return text(msgid, **(error.params or {}))


def _post_pinned(target: Target, *, body: bytes, headers: dict[str, str]) -> _Answer:
    """POST to the address that was just checked, never to a fresh DNS answer.

    urllib3 is given the IP as the host, with the original name in the Host header,
    as the TLS SNI name and as the name the certificate must match. So a DNS answer
    that changes between the check and the connection (DNS rebinding) cannot steer
    the request elsewhere. No proxies (environment ones are ignored), no redirects.
    """
    timeout = float(settings.EASEL_WEBHOOK_TIMEOUT)
    last_error: Text | None = None
    for address in target.addresses:
        kwargs = {
            "timeout": urllib3.Timeout(connect=min(5.0, timeout), read=timeout),
            "retries": False,
            "maxsize": 1,
        }
        if target.scheme == "https":
            # An install whose receivers use an internal CA can point at its bundle.
            ca_bundle = settings.EASEL_WEBHOOK_CA_BUNDLE
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
            error: Text | str = ""
            if not 200 <= response.status < 300:
                body = excerpt.decode("utf-8", "replace").strip()
                msgid = _REFUSED[(300 <= response.status < 400, bool(body))]
                error = text(msgid, status=response.status, body=body) if body else text(msgid, status=response.status)
            return _Answer(status=response.status, error=error)
        except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as exc:
            # This address is unreachable; the host may have another one.
            last_error = text(gettext_noop("Could not connect: %(error)s"), error=exc)
            continue
        except urllib3.exceptions.HTTPError as exc:
            return _Answer(error=text(gettext_noop("The request failed: %(error)s"), error=exc))
        finally:
            pool.close()
    return _Answer(error=last_error or text(gettext_noop("Could not connect.")))


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
            raise _Unsendable(text(
                gettext_noop("The API token this task was created with has been deleted, so there is no secret "
                             "to sign the webhook with. Unsigned webhooks are never sent.")
            ))
        try:
            # Checked again now: the URL was fine at creation, but DNS may have changed.
            target = target_resolve(delivery.url)
        except WebhookUrlRefused as exc:
            raise _Unsendable(_validation_text(exc)) from None
        except ValidationError as exc:  # not resolvable right now: worth retrying
            answer = _Answer(error=_validation_text(exc))
        else:
            body = payload_bytes(delivery.payload)
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
        answer = _Answer(error=exc.args[0])

    done = timezone.now()
    error = answer.error
    fields = {
        "last_status_code": answer.status,
        "last_error": str(error)[:2000],
        "last_error_params": error.stored() if isinstance(error, Text) else {},
    }
    if answer.status is not None and 200 <= answer.status < 300:
        fields.update(state=WebhookDelivery.State.DELIVERED, delivered_at=done, next_attempt_at=None, last_error="",
                      last_error_params={})
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
    inline_max = float(settings.EASEL_WEBHOOK_INLINE_RETRY_MAX)
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
        delivery_enqueue(delivery_id)
    return len(ids)
