"""Signed webhooks for task outcomes: signing, retries, SSRF refusals, idempotency, the API.

The HTTP side is real: a receiver listens on a local port and records what arrives.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from accounts.models import ApiToken
from generation.models import GenerationTask, TaskStatus, WebhookDelivery
from generation.webhooks.delivery import webhook_deliver, webhook_retry_due
from generation.webhooks.services import webhook_enqueue_for_task
from generation.webhooks.signing import webhook_sign
from generation.webhooks.targets import callback_url_validate

pytestmark = [pytest.mark.django_db]


# --- a real receiver --------------------------------------------------------------


class Receiver:
    """An HTTP server on a free local port that records requests and can fail N times."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail_times = 0
        self.fail_status = 500
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                     "body": body, "at": time.monotonic()}
                )
                if receiver.fail_times > 0:
                    receiver.fail_times -= 1
                    status, reply = receiver.fail_status, b"receiver is down"
                else:
                    status, reply = 200, b"ok"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/easel?src=test"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def allow_private(settings):
    settings.EASEL_WEBHOOK_ALLOW_PRIVATE = True
    settings.EASEL_WEBHOOK_BACKOFF_BASE = 0.05


@pytest.fixture
def queued(monkeypatch):
    """Records django-q2 enqueues instead of writing them to the broker."""
    calls: list[tuple] = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: calls.append(args))
    return calls


@pytest.fixture
def fake_dns(monkeypatch):
    """Host names under .test resolve to what the test says; others resolve for real."""
    real = socket.getaddrinfo
    answers: dict[str, list[str]] = {}
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if isinstance(host, str) and host in answers:
            lookups.append(host)
            queue = answers[host]
            address = queue.pop(0) if len(queue) > 1 else queue[0]
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return {"answers": answers, "lookups": lookups}


def _user_with_token(make_user, api_client_for, username=None):
    user = make_user(username)
    client = api_client_for(user)
    token = ApiToken.objects.filter(user=user).latest("created")
    return user, client, token


def _task(user, token, url, status=TaskStatus.COMPLETED, **extra) -> GenerationTask:
    return GenerationTask.objects.create(
        user=user, prompt="a lighthouse at dusk", model_name="demo-sd15", width=64, height=64, steps=4, cfg=7,
        sampler="euler", scheduler="normal", seed=42, status=status, callback_url=url, api_token=token,
        completed_at=timezone.now() if status != TaskStatus.PENDING else None, **extra,
    )


def _enqueue(task, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return webhook_enqueue_for_task(task_id=task.pk)


# --- signing and the payload ------------------------------------------------------


def test_delivery_is_signed_so_the_client_can_verify_it_with_the_secret_from_the_api(
    allow_private, receiver, queued, make_user, api_client_for, django_capture_on_commit_callbacks
):
    user, client, token = _user_with_token(make_user, api_client_for)
    secret = client.get("/api/v1/webhooks/secret").json()["secret"]
    task = _task(user, token, receiver.url)

    delivery = _enqueue(task, django_capture_on_commit_callbacks)
    assert queued == [("generation.jobs.webhook_deliver", delivery.pk)]
    webhook_deliver(delivery.pk)

    assert len(receiver.requests) == 1
    sent = receiver.requests[0]
    assert sent["path"] == "/hooks/easel?src=test"
    headers = sent["headers"]
    assert headers["content-type"] == "application/json"
    assert "Easel" in headers["user-agent"]
    assert headers["webhook-id"] == f"msg_task{task.pk}_completed_0"
    # An independent Standard Webhooks verifier.
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + sent["body"]
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(headers["webhook-signature"], expected)
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    # A different secret does not verify.
    other = hmac.new(b"x" * 32, signed, hashlib.sha256).digest()
    assert headers["webhook-signature"] != "v1," + base64.b64encode(other).decode()

    body = json.loads(sent["body"])
    assert body["type"] == "task.completed"
    assert body["data"]["id"] == task.pk and body["data"]["status"] == "completed"
    assert body["data"]["prompt"] == "a lighthouse at dusk"
    assert "timestamp" in body

    delivery.refresh_from_db()
    assert delivery.state == WebhookDelivery.State.DELIVERED
    assert delivery.attempts == 1 and delivery.last_status_code == 200
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None


def test_a_real_delivery_passes_the_standard_webhooks_librarys_own_verifier(
    allow_private, receiver, queued, make_user, api_client_for, django_capture_on_commit_callbacks
):
    """What a receiver built on the `standardwebhooks` package does with Easel's deliveries."""
    from standardwebhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError

    user, client, token = _user_with_token(make_user, api_client_for)
    secret = client.get("/api/v1/webhooks/secret").json()["secret"]
    task = _task(user, token, receiver.url)
    webhook_deliver(_enqueue(task, django_capture_on_commit_callbacks).pk)
    sent = receiver.requests[0]

    # The secret exactly as the API shows it (whsec_...), the headers as they arrived.
    payload = Webhook(secret).verify(sent["body"], sent["headers"])
    assert payload["type"] == "task.completed" and payload["data"]["id"] == task.pk
    # The library refuses a changed body, another secret, and an old replay.
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(sent["body"].replace(b"lighthouse", b"lightbulb!"), sent["headers"])
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"y" * 32).decode()).verify(sent["body"], sent["headers"])
    stale = {**sent["headers"], "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(sent["body"], stale)


def test_webhook_sign_matches_the_standard_webhooks_reference_vector():
    # The example from the Standard Webhooks specification.
    signature = webhook_sign(
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        message_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_failed_and_cancelled_tasks_send_their_own_event(
    allow_private, receiver, queued, make_user, api_client_for, django_capture_on_commit_callbacks
):
    user, _client, token = _user_with_token(make_user, api_client_for)
    failed = _task(user, token, receiver.url, status=TaskStatus.FAILED, error_message="ComfyUI ran out of memory")
    cancelled = _task(user, token, receiver.url, status=TaskStatus.CANCELLED)
    for task in (failed, cancelled):
        webhook_deliver(_enqueue(task, django_capture_on_commit_callbacks).pk)
    bodies = [json.loads(r["body"]) for r in receiver.requests]
    assert [b["type"] for b in bodies] == ["task.failed", "task.cancelled"]
    assert bodies[0]["data"]["error_message"] == "ComfyUI ran out of memory"


# --- retries ----------------------------------------------------------------------


def test_a_500_is_retried_with_growing_backoff_until_it_succeeds(
    allow_private, receiver, queued, make_user, api_client_for, django_capture_on_commit_callbacks
):
    user, _client, token = _user_with_token(make_user, api_client_for)
    receiver.fail_times = 2
    delivery = _enqueue(_task(user, token, receiver.url), django_capture_on_commit_callbacks)

    webhook_deliver(delivery.pk)  # short backoffs are retried inside the job

    assert len(receiver.requests) == 3
    first, second, third = (r["at"] for r in receiver.requests)
    assert second - first >= 0.05 and third - second >= 0.1  # base, then 2 × base
    # Every attempt is the same message with the same bytes (re-signed per timestamp).
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
    assert len({r["body"] for r in receiver.requests}) == 1
    delivery.refresh_from_db()
    assert delivery.state == WebhookDelivery.State.DELIVERED
    assert delivery.attempts == 3 and delivery.last_status_code == 200 and delivery.last_error == ""


def test_a_long_backoff_is_recorded_and_left_to_the_schedule(
    allow_private, settings, receiver, queued, make_user, api_client_for, django_capture_on_commit_callbacks
):
    settings.EASEL_WEBHOOK_BACKOFF_BASE = 120  # beyond what a job sleeps through
    user, _client, token = _user_with_token(make_user, api_client_for)
    receiver.fail_times = 1
    delivery = _enqueue(_task(user, token, receiver.url), django_capture_on_commit_callbacks)

    before = timezone.now()
    webhook_deliver(delivery.pk)
    delivery.refresh_from_db()
    assert len(receiver.requests) == 1
    assert delivery.state == WebhookDelivery.State.PENDING
    assert delivery.attempts == 1 and delivery.last_status_code == 500
    assert "500" in delivery.last_error and "receiver is down" in delivery.last_error
    assert before + timedelta(seconds=119) <= delivery.next_attempt_at <= timezone.now() + timedelta(seconds=121)

    # Not due yet: neither the schedule nor a stray job sends it.
    queued.clear()
    assert webhook_retry_due() == 0
    webhook_deliver(delivery.pk)
    assert len(receiver.requests) == 1

    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert webhook_retry_due() == 1
    assert queued == [("generation.jobs.webhook_deliver", delivery.pk)]
    webhook_deliver(delivery.pk)
    delivery.refresh_from_db()
    assert len(receiver.requests) == 2
    assert delivery.state == WebhookDelivery.State.DELIVERED and delivery.attempts == 2


def test_delivery_fails_for_good_after_the_last_attempt(
    allow_private, settings, receiver, queued, make_user, api_client_for, django_capture_on_commit_callbacks
):
    settings.EASEL_WEBHOOK_MAX_ATTEMPTS = 3
    settings.EASEL_WEBHOOK_BACKOFF_BASE = 0.01
    user, _client, token = _user_with_token(make_user, api_client_for)
    receiver.fail_times = 100
    delivery = _enqueue(_task(user, token, receiver.url), django_capture_on_commit_callbacks)

    webhook_deliver(delivery.pk)
    delivery.refresh_from_db()
    assert len(receiver.requests) == 3
    assert delivery.state == WebhookDelivery.State.FAILED
    assert delivery.attempts == 3 and delivery.last_status_code == 500 and delivery.next_attempt_at is None

    webhook_deliver(delivery.pk)  # a redelivered job changes nothing
    assert webhook_retry_due() == 0
    assert len(receiver.requests) == 3


def test_redirects_are_not_followed(allow_private, receiver, queued, make_user, api_client_for,
                                    django_capture_on_commit_callbacks, settings):
    settings.EASEL_WEBHOOK_MAX_ATTEMPTS = 1
    user, _client, token = _user_with_token(make_user, api_client_for)
    receiver.fail_times, receiver.fail_status = 1, 302
    delivery = _enqueue(_task(user, token, receiver.url), django_capture_on_commit_callbacks)
    webhook_deliver(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.state == WebhookDelivery.State.FAILED and delivery.last_status_code == 302
    assert len(receiver.requests) == 1


def test_a_deleted_token_means_no_secret_and_nothing_unsigned_is_sent(
    allow_private, receiver, queued, make_user, api_client_for, django_capture_on_commit_callbacks
):
    user, _client, token = _user_with_token(make_user, api_client_for)
    delivery = _enqueue(_task(user, token, receiver.url), django_capture_on_commit_callbacks)
    token.delete()

    webhook_deliver(delivery.pk)
    delivery.refresh_from_db()
    assert receiver.requests == []
    assert delivery.state == WebhookDelivery.State.FAILED and delivery.attempts == 1
    assert "token" in delivery.last_error and "deleted" in delivery.last_error


# --- idempotency ------------------------------------------------------------------


def test_enqueue_is_idempotent_per_task_outcome_and_retry_round(
    allow_private, receiver, queued, make_user, api_client_for, django_capture_on_commit_callbacks
):
    user, _client, token = _user_with_token(make_user, api_client_for)
    task = _task(user, token, receiver.url, status=TaskStatus.FAILED)

    first = _enqueue(task, django_capture_on_commit_callbacks)
    again = _enqueue(task, django_capture_on_commit_callbacks)
    assert first.pk == again.pk
    assert WebhookDelivery.objects.count() == 1 and len(queued) == 1

    # The owner retried the task and it ended again: that is a new event.
    GenerationTask.objects.filter(pk=task.pk).update(retries=1, status=TaskStatus.COMPLETED)
    retried = _enqueue(task, django_capture_on_commit_callbacks)
    assert retried.pk != first.pk and retried.event == "task.completed"
    assert retried.message_id == f"msg_task{task.pk}_completed_1"
    assert WebhookDelivery.objects.count() == 2 and len(queued) == 2


def test_nothing_is_enqueued_for_running_tasks_or_tasks_without_a_callback(
    allow_private, queued, make_user, api_client_for, django_capture_on_commit_callbacks, receiver
):
    user, _client, token = _user_with_token(make_user, api_client_for)
    assert _enqueue(_task(user, token, receiver.url, status=TaskStatus.PENDING), django_capture_on_commit_callbacks) is None
    assert _enqueue(_task(user, token, ""), django_capture_on_commit_callbacks) is None
    assert webhook_enqueue_for_task(task_id=999999) is None
    assert WebhookDelivery.objects.count() == 0 and queued == []


# --- SSRF -------------------------------------------------------------------------

REFUSED_URLS = [
    "http://127.0.0.1:{port}/hook",
    "http://localhost:{port}/hook",
    "http://10.0.0.1/hook",
    "http://192.168.1.1/hook",
    "http://172.16.5.4/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/hook",
    "http://[fd00::1]/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://0.0.0.0:{port}/hook",
    "http://224.0.0.1/hook",
    "http://loopback.test:{port}/hook",
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "http://user:pass@example.com/hook",
    "http://example.com:0/hook",
    "http://example.com:70000/hook",
    "http:///no-host",
]


@pytest.fixture
def ssrf_setup(settings, fake_dns, receiver):
    settings.EASEL_WEBHOOK_ALLOW_PRIVATE = False
    fake_dns["answers"]["loopback.test"] = ["127.0.0.1"]
    fake_dns["answers"]["example.com"] = ["93.184.215.14"]  # no real DNS needed
    return receiver


def _create_api_takes_callback_url() -> bool:
    from generation.api.tasks import TaskCreateInput

    return "callback_url" in TaskCreateInput().fields


@pytest.mark.xfail(
    not _create_api_takes_callback_url(), strict=True,
    reason="generation.api.tasks.TaskCreateInput does not accept callback_url yet (the lead wires it)",
)
@pytest.mark.parametrize("template", REFUSED_URLS)
def test_create_refuses_callback_urls_to_internal_or_odd_targets(
    template, ssrf_setup, catalog, make_user, api_client_for
):
    client = api_client_for(make_user())
    url = template.format(port=ssrf_setup.port)
    response = client.post(
        "/api/v1/generation/create-async", {"prompt": "a fox", "callback_url": url}, format="json"
    )
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["fields"]["callback_url"]
    assert GenerationTask.objects.count() == 0


@pytest.mark.parametrize("template", REFUSED_URLS)
def test_callback_url_validate_refuses_internal_or_odd_targets(template, ssrf_setup):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as caught:
        callback_url_validate(template.format(port=ssrf_setup.port))
    assert caught.value.messages[0]


def test_public_https_and_http_urls_are_accepted(ssrf_setup):
    callback_url_validate("https://example.com/hooks/easel")
    callback_url_validate("http://example.com:8080/hooks?a=1")


@pytest.mark.parametrize("template", REFUSED_URLS)
def test_delivery_time_refuses_internal_targets_and_sends_nothing(
    template, ssrf_setup, queued, make_user, api_client_for
):
    user, _client, token = _user_with_token(make_user, api_client_for)
    # Stored as if it had been allowed earlier (say, before a setting changed).
    delivery = WebhookDelivery.objects.create(
        user=user, api_token=token, event="task.completed", url=template.format(port=ssrf_setup.port),
        message_id="msg_ssrf", payload={"type": "task.completed"}, next_attempt_at=timezone.now(),
    )
    webhook_deliver(delivery.pk)
    delivery.refresh_from_db()
    assert ssrf_setup.requests == []
    assert delivery.state == WebhookDelivery.State.FAILED and delivery.attempts == 1
    assert delivery.last_error


def test_dns_rebinding_after_create_is_caught_at_delivery(
    ssrf_setup, fake_dns, catalog, queued, make_user, api_client_for, django_capture_on_commit_callbacks
):
    from generation.services import generation_create

    user, _client, token = _user_with_token(make_user, api_client_for)
    url = f"http://rebind.test:{ssrf_setup.port}/hook"
    # Public when the task is created, loopback by the time it ends.
    fake_dns["answers"]["rebind.test"] = ["93.184.215.14", "127.0.0.1"]
    task = generation_create(user=user, prompt="a fox", callback_url=url, api_token=token)
    GenerationTask.objects.filter(pk=task.pk).update(status=TaskStatus.COMPLETED, completed_at=timezone.now())

    delivery = _enqueue(task, django_capture_on_commit_callbacks)
    webhook_deliver(delivery.pk)
    delivery.refresh_from_db()
    assert ssrf_setup.requests == []
    assert delivery.state == WebhookDelivery.State.FAILED
    assert "127.0.0.1" in delivery.last_error


def test_the_connection_goes_to_the_checked_address_with_the_original_host_header(
    allow_private, fake_dns, receiver, queued, make_user, api_client_for, django_capture_on_commit_callbacks
):
    fake_dns["answers"]["hooks.test"] = ["127.0.0.1"]
    user, _client, token = _user_with_token(make_user, api_client_for)
    delivery = _enqueue(_task(user, token, f"http://hooks.test:{receiver.port}/in"), django_capture_on_commit_callbacks)
    fake_dns["lookups"].clear()

    webhook_deliver(delivery.pk)
    assert len(receiver.requests) == 1
    assert receiver.requests[0]["headers"]["host"] == f"hooks.test:{receiver.port}"
    # Resolved once (the check) and connected to that answer: no second lookup to race.
    assert fake_dns["lookups"] == ["hooks.test"]


def test_https_is_pinned_too_with_sni_and_certificate_checked_for_the_url_host(
    allow_private, settings, fake_dns, tmp_path, queued, make_user, api_client_for,
    django_capture_on_commit_callbacks,
):
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=hooks.test", "-addext", "subjectAltName=DNS:hooks.test"],
        check=True, capture_output=True,
    )
    receiver = Receiver()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server_names: list[str] = []
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    settings.EASEL_WEBHOOK_CA_BUNDLE = str(cert)
    settings.EASEL_WEBHOOK_MAX_ATTEMPTS = 1
    fake_dns["answers"]["hooks.test"] = ["127.0.0.1"]
    try:
        user, _client, token = _user_with_token(make_user, api_client_for)
        good = _enqueue(_task(user, token, f"https://hooks.test:{receiver.port}/in"),
                        django_capture_on_commit_callbacks)
        webhook_deliver(good.pk)
        good.refresh_from_db()
        assert good.state == WebhookDelivery.State.DELIVERED
        assert server_names and set(server_names) == {"hooks.test"}
        assert receiver.requests[0]["headers"]["host"] == f"hooks.test:{receiver.port}"

        # The same server under a name its certificate does not carry: refused, nothing sent.
        wrong = _enqueue(_task(user, token, f"https://127.0.0.1:{receiver.port}/in"),
                         django_capture_on_commit_callbacks)
        webhook_deliver(wrong.pk)
        wrong.refresh_from_db()
        assert wrong.state == WebhookDelivery.State.FAILED and wrong.last_status_code is None
        assert "127.0.0.1" in wrong.last_error
        assert len(receiver.requests) == 1
    finally:
        receiver.stop()


# --- the API ----------------------------------------------------------------------


def test_deliveries_list_is_owner_scoped_newest_first_and_filterable(
    allow_private, receiver, queued, make_user, api_client_for, django_capture_on_commit_callbacks,
    django_assert_num_queries,
):
    alice, alice_client, alice_token = _user_with_token(make_user, api_client_for, "alice")
    bob, bob_client, bob_token = _user_with_token(make_user, api_client_for, "bob")
    a1 = _enqueue(_task(alice, alice_token, receiver.url), django_capture_on_commit_callbacks)
    a2 = _enqueue(_task(alice, alice_token, receiver.url, status=TaskStatus.FAILED),
                  django_capture_on_commit_callbacks)
    b1 = _enqueue(_task(bob, bob_token, receiver.url), django_capture_on_commit_callbacks)

    # The token (with its user), count, page: independent of how many deliveries there are.
    with django_assert_num_queries(3):
        body = alice_client.get("/api/v1/webhooks/deliveries").json()
    assert body["count"] == 2
    assert [d["id"] for d in body["results"]] == [a2.pk, a1.pk]
    assert body["results"][0]["event"] == "task.failed" and body["results"][0]["state"] == "pending"
    assert "payload" not in body["results"][0]

    body = alice_client.get(f"/api/v1/webhooks/deliveries?task={a1.task_id}").json()
    assert [d["id"] for d in body["results"]] == [a1.pk]
    assert alice_client.get(f"/api/v1/webhooks/deliveries?task={b1.task_id}").json()["count"] == 0
    response = alice_client.get("/api/v1/webhooks/deliveries?task=abc")
    assert response.status_code == 400 and "task" in response.json()["error"]["fields"]

    detail = alice_client.get(f"/api/v1/webhooks/deliveries/{a1.pk}")
    assert detail.status_code == 200 and detail.json()["payload"]["type"] == "task.completed"
    assert bob_client.get(f"/api/v1/webhooks/deliveries/{a1.pk}").status_code == 404
    assert alice_client.get(f"/api/v1/webhooks/deliveries/{b1.pk}").json()["error"]["code"] == "not_found"

    staff = make_user("staffer", is_staff=True)
    assert api_client_for(staff).get(f"/api/v1/webhooks/deliveries/{a1.pk}").status_code == 200
    assert api_client_for(staff).get("/api/v1/webhooks/deliveries").json()["count"] == 0


def test_secret_belongs_to_the_calling_token_and_needs_one(make_user, api_client_for):
    from rest_framework.test import APIClient

    user, client, token = _user_with_token(make_user, api_client_for)
    other_client = api_client_for(user)  # a second token of the same user
    first = client.get("/api/v1/webhooks/secret").json()["secret"]
    second = other_client.get("/api/v1/webhooks/secret").json()["secret"]
    assert first == token.webhook_secret and first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32

    session = APIClient()
    session.force_login(user)
    response = session.get("/api/v1/webhooks/secret")
    assert response.status_code == 400 and response.json()["error"]["code"] == "token_required"
    assert APIClient().get("/api/v1/webhooks/secret").status_code == 401


def test_default_callback_url_is_validated_set_and_cleared(settings, fake_dns, make_user, api_client_for):
    settings.EASEL_WEBHOOK_ALLOW_PRIVATE = False
    fake_dns["answers"]["hooks.example.com"] = ["93.184.215.14"]
    _user, client, token = _user_with_token(make_user, api_client_for)

    response = client.put("/api/v1/webhooks/default", {"url": "https://hooks.example.com/easel"}, format="json")
    assert response.status_code == 200 and response.json()["webhook_url"] == "https://hooks.example.com/easel"
    token.refresh_from_db()
    assert token.webhook_url == "https://hooks.example.com/easel"
    assert client.get("/api/v1/webhooks/secret").json()["webhook_url"] == "https://hooks.example.com/easel"

    response = client.put("/api/v1/webhooks/default", {"url": "http://169.254.169.254/"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["fields"]["url"]
    token.refresh_from_db()
    assert token.webhook_url == "https://hooks.example.com/easel"

    response = client.put("/api/v1/webhooks/default", {"url": ""}, format="json")
    assert response.status_code == 200 and response.json()["webhook_url"] is None
    token.refresh_from_db()
    assert token.webhook_url == ""


def test_the_token_default_url_is_used_for_tasks_created_with_it(
    allow_private, receiver, catalog, queued, make_user, api_client_for, django_capture_on_commit_callbacks
):
    from generation.services import generation_create

    user, _client, token = _user_with_token(make_user, api_client_for)
    token.webhook_url = receiver.url
    token.save()
    task = generation_create(user=user, prompt="a fox", api_token=token)
    assert task.callback_url == receiver.url
    GenerationTask.objects.filter(pk=task.pk).update(status=TaskStatus.COMPLETED, completed_at=timezone.now())
    webhook_deliver(_enqueue(task, django_capture_on_commit_callbacks).pk)
    assert len(receiver.requests) == 1


# --- a lost finishing job -----------------------------------------------------------


def test_the_sweep_creates_the_webhook_a_lost_finishing_job_never_made(
    allow_private, receiver, queued, make_user, api_client_for, django_capture_on_commit_callbacks,
):
    """The webhook of a finished task is created by its `generation_finished` job; when
    that job is lost (a killed worker, a cut connection), the tick's sweep makes it."""
    from generation.webhooks.services import webhooks_sweep

    user, _client, token = _user_with_token(make_user, api_client_for)
    lost = _task(user, token, receiver.url)
    GenerationTask.objects.filter(pk=lost.pk).update(completed_at=timezone.now() - timedelta(minutes=5))
    sent = _task(user, token, receiver.url)
    GenerationTask.objects.filter(pk=sent.pk).update(completed_at=timezone.now() - timedelta(minutes=5))
    _enqueue(sent, django_capture_on_commit_callbacks)
    just_now = _task(user, token, receiver.url)  # its own job may still be on the way
    no_url = _task(user, token, "")
    GenerationTask.objects.filter(pk=no_url.pk).update(completed_at=timezone.now() - timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks_sweep() == 1
    assert set(WebhookDelivery.objects.values_list("task_id", flat=True)) == {lost.pk, sent.pk}
    assert not WebhookDelivery.objects.filter(task=just_now).exists()
    # Idempotent: the next tick finds nothing missing.
    assert webhooks_sweep() == 0


def test_one_failing_step_of_the_tick_does_not_stop_the_others(monkeypatch, caplog):
    from generation import jobs

    ran = []
    monkeypatch.setattr(jobs, "backends_from_settings", lambda: ran.append("settings"))
    monkeypatch.setattr(jobs, "backends_health_check", lambda: [])
    monkeypatch.setattr(jobs, "catalog_sync", lambda backends: ran.append("sync"))

    def broken():
        raise RuntimeError("database went away")

    monkeypatch.setattr(jobs, "tasks_recover", broken)
    monkeypatch.setattr(jobs, "dispatch", lambda: ran.append("dispatch"))
    monkeypatch.setattr(jobs, "webhook_retry_due", lambda: ran.append("retries"))
    monkeypatch.setattr(jobs, "webhooks_sweep", lambda: ran.append("sweep"))
    monkeypatch.setattr(jobs, "roll_up", lambda: ran.append("rollup"))
    jobs.studio_tick()
    assert ran == ["settings", "sync", "dispatch", "retries", "sweep", "rollup"]
    assert "recovery failed" in caplog.text
