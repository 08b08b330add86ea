"""Easel's VolcEngine client against the stand-in on a real port: results, every fault as a clear error that says
whether to retry, and the pacing that keeps polls under the account's rate."""
from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image

from generation.volcengine import client as volc
from generation.volcengine.client import VolcClient, VolcError
from generation.volcengine.pacing import Backoff, FollowTimeout, RateLimit, follow
from tests.conftest import free_port

REQ_KEY = "jimeng_t2i_v40"


def make_client(standin, **overrides) -> VolcClient:
    settings = {"access_key_id": standin.access_key_id, "secret_access_key": standin.secret_access_key,
                "host": standin.host, "scheme": "http", "timeout": 5.0, **overrides}
    return VolcClient(**settings)


def run(client: VolcClient, task_id: str, **options) -> volc.Result:
    return follow(client, REQ_KEY, task_id, deadline=time.monotonic() + 15,
                  backoff=Backoff(first=0.05, longest=0.2), **options)


def test_submit_and_follow_to_the_pictures(volc_standin):
    client = make_client(volc_standin)
    task_id = client.submit(REQ_KEY, {"prompt": "a lighthouse at dusk", "width": 640, "height": 384, "seed": 3})
    first = client.result(REQ_KEY, task_id)
    assert first.running and first.images == [] and first.failure() is None
    seen = []
    result = run(client, task_id, on_poll=lambda r: seen.append(r.status))
    assert result.status == "done" and not result.running and result.failure() is None
    [png] = result.images
    assert Image.open(io.BytesIO(png)).size == (640, 384)
    assert set(seen) <= {"in_queue", "generating"}
    # Fetched by URL instead, the same picture.
    assert client.result(REQ_KEY, task_id, return_url=True).images == [png]
    assert volc_standin.stats()["submissions"] == 1


def test_a_wrong_secret_is_an_auth_failure_that_never_shows_the_secret(volc_standin):
    client = make_client(volc_standin, secret_access_key="s3cret-that-is-wrong")
    with pytest.raises(VolcError) as caught:
        client.submit(REQ_KEY, {"prompt": "x"})
    error = caught.value
    assert (error.kind, error.retryable, error.maybe_accepted, error.code) == (
        volc.AUTH, False, False, "SignatureDoesNotMatch")
    assert error.message.msgid.startswith("VolcEngine refused the backend's access key")
    assert error.request_id
    assert "s3cret" not in str(error) + repr(client)


def test_clients_of_two_accounts_keep_their_own_keys(volc_standin):
    # The SDK's VisualService is a singleton; each client must still sign with its own key pair.
    good = make_client(volc_standin)
    bad = make_client(volc_standin, access_key_id="AKLTother")
    with pytest.raises(VolcError):
        bad.submit(REQ_KEY, {"prompt": "x"})
    assert good.submit(REQ_KEY, {"prompt": "x"}).isdigit()
    with pytest.raises(VolcError) as caught:
        bad.submit(REQ_KEY, {"prompt": "x"})
    assert caught.value.code == "InvalidAccessKey"


@pytest.mark.parametrize("fault, kind, retryable, msgid", [
    ("refuse_prompt_next", volc.CONTENT_REFUSED, False, "VolcEngine's content moderation refused the prompt"),
    ("quota_next", volc.QUOTA, False, "the VolcEngine account has no quota left"),
    ("throttle_next", volc.THROTTLED, True, "VolcEngine is busy"),
])
def test_submit_refusals_are_clear_and_say_whether_to_retry(volc_standin, fault, kind, retryable, msgid):
    volc_standin.faults(**{fault: True})
    with pytest.raises(VolcError) as caught:
        make_client(volc_standin).submit(REQ_KEY, {"prompt": "x"})
    error = caught.value
    assert (error.kind, error.retryable, error.maybe_accepted) == (kind, retryable, False)
    assert error.message.msgid.startswith(msgid)
    assert volc_standin.stats()["submissions"] == 0


def test_bad_parameters_are_not_retried(volc_standin):
    with pytest.raises(VolcError) as caught:
        make_client(volc_standin).submit(REQ_KEY, {"prompt": "x", "width": 64})
    assert (caught.value.kind, caught.value.retryable, caught.value.code) == (volc.BAD_PARAMS, False, 50215)
    assert "Input invalid for this service." in str(caught.value)


def test_server_errors_are_retryable_and_follow_polls_through_them(volc_standin):
    client = make_client(volc_standin)
    volc_standin.faults(server_error_next=1)
    with pytest.raises(VolcError) as caught:
        client.submit(REQ_KEY, {"prompt": "x"})
    assert (caught.value.kind, caught.value.retryable, caught.value.maybe_accepted) == (volc.SERVER, True, False)
    task_id = client.submit(REQ_KEY, {"prompt": "x"})
    volc_standin.faults(server_error_next=3)
    assert run(client, task_id).status == "done"
    assert volc_standin.stats()["calls"]["CVSync2AsyncGetResult"] >= 4


def test_a_refused_picture_is_a_content_refusal_when_polled(volc_standin):
    client = make_client(volc_standin)
    volc_standin.faults(refuse_output_next=True)
    task_id = client.submit(REQ_KEY, {"prompt": "x"})
    with pytest.raises(VolcError) as caught:
        run(client, task_id)
    assert (caught.value.kind, caught.value.code) == (volc.CONTENT_REFUSED, 50511)
    assert caught.value.message.msgid.startswith("VolcEngine's content moderation refused the generated picture")


def test_expired_and_unknown_tasks_end_with_a_reason(volc_standin):
    client = make_client(volc_standin)
    volc_standin.faults(expire_next=True)
    expired = run(client, client.submit(REQ_KEY, {"prompt": "x"}))
    assert expired.status == "expired" and expired.images == []
    assert expired.failure().msgid == "the VolcEngine task expired before its pictures were fetched"
    unknown = client.result(REQ_KEY, "1111111111111111111")
    assert unknown.status == "not_found" and not unknown.running
    assert unknown.failure().msgid.startswith("VolcEngine no longer knows this task")


def test_an_unreachable_service_is_retryable_and_surely_not_submitted():
    client = VolcClient(access_key_id="a", secret_access_key="b", host=f"127.0.0.1:{free_port()}", scheme="http",
                        timeout=2)
    with pytest.raises(VolcError) as caught:
        client.submit(REQ_KEY, {"prompt": "x"})
    assert (caught.value.kind, caught.value.retryable, caught.value.maybe_accepted) == (volc.UNREACHABLE, True, False)


def test_a_lost_submit_answer_may_have_created_the_task(volc_standin):
    # The answer is late, not the work: the stand-in has the task although the client gave up.
    volc_standin.faults(delay=1.5)
    with pytest.raises(VolcError) as caught:
        make_client(volc_standin, timeout=0.5).submit(REQ_KEY, {"prompt": "x"})
    assert (caught.value.kind, caught.value.retryable, caught.value.maybe_accepted) == (volc.UNREACHABLE, True, True)
    time.sleep(1.2)
    assert volc_standin.stats()["submissions"] == 1


def test_follow_gives_up_at_the_deadline(volc_standin):
    volc_standin.faults(generate_seconds=30)
    client = make_client(volc_standin)
    task_id = client.submit(REQ_KEY, {"prompt": "x"})
    started = time.monotonic()
    with pytest.raises(FollowTimeout):
        follow(client, REQ_KEY, task_id, deadline=started + 0.6, backoff=Backoff(first=0.1, longest=0.2))
    assert time.monotonic() - started < 1.0


def test_follow_never_polls_faster_than_the_rate(volc_standin):
    volc_standin.faults(generate_seconds=1.2)
    client = make_client(volc_standin)
    task_id = client.submit(REQ_KEY, {"prompt": "x"})
    started = time.monotonic()
    # The backoff alone would poll every 10 ms; the limit allows 5 a second.
    follow(client, REQ_KEY, task_id, deadline=started + 10, backoff=Backoff(first=0.01, factor=1, longest=0.01),
           limit=RateLimit(5))
    elapsed = time.monotonic() - started
    polls = volc_standin.stats()["calls"]["CVSync2AsyncGetResult"]
    assert polls <= elapsed * 5 + 1


def test_backoff_grows_to_its_longest_and_resets():
    backoff = Backoff(first=1, factor=2, longest=5)
    assert [backoff.next() for _ in range(5)] == [1, 2, 4, 5, 5]
    backoff.reset()
    assert backoff.next() == 1
    with pytest.raises(ValueError):
        Backoff(first=0)


def test_rate_limit_spaces_calls_on_a_clock():
    now = [100.0]
    slept = []
    limit = RateLimit(2, clock=lambda: now[0], sleep=slept.append)
    assert [limit.wait() for _ in range(3)] == [0.0, 0.5, 1.0]
    now[0] += 5  # idle time is not saved up for a burst
    assert [limit.wait(), limit.wait()] == [0.0, 0.5]
    assert slept == [0.5, 1.0, 0.5]


def test_rate_limit_holds_across_threads():
    limit = RateLimit(50)
    stamps = []
    lock = threading.Lock()

    def worker():
        for _ in range(5):
            limit.wait()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps.sort()
    # 20 calls at 50 a second: at least 19 intervals of 20 ms (a little slack for the clock).
    assert stamps[-1] - stamps[0] >= 19 * 0.02 - 0.01


def test_the_messages_read_in_chinese(volc_standin):
    from django.utils import translation

    volc_standin.faults(quota_next=True)
    with pytest.raises(VolcError) as caught:
        make_client(volc_standin).submit(REQ_KEY, {"prompt": "x"})
    message = caught.value.message
    with translation.override("zh-hans"):
        shown = translation.gettext(message.msgid) % message.params
    assert shown.startswith("火山引擎账号的额度已用完") and "50400" in shown
