"""The VolcEngine stand-in, driven over a real port by the official ``volcengine`` SDK, as Easel's client will be.

Each test states what a client of the real visual API relies on: the envelope, the task states, the pictures, the
gateway's signature check, and each fault the stand-in can inject.
"""
from __future__ import annotations

import ast
import base64
import io
import json
import time

import pytest
import requests
from PIL import Image
from volcengine.auth.SignerV4 import SignerV4
from volcengine.base.Request import Request
from volcengine.Credentials import Credentials
from volcengine.visual.VisualService import VisualService

REQ_KEY = "jimeng_t2i_v40"


@pytest.fixture
def sdk(volc_standin):
    """The SDK's own visual service, pointed at the stand-in (host, scheme, key pair), as its docs show."""
    service = VisualService()
    service.set_host(volc_standin.host)
    service.set_scheme("http")
    service.set_ak(volc_standin.access_key_id)
    service.set_sk(volc_standin.secret_access_key)
    return service


def sdk_error(call, *args) -> dict:
    """The body of an error answer: the SDK raises it as ``Exception("b'<body>'")``."""
    with pytest.raises(Exception) as caught:
        call(*args)
    return json.loads(ast.literal_eval(str(caught.value)))


def signed_post(standin, action: str, body: bytes, *, secret: str | None = None, send: bytes | None = None):
    """A request signed by the SDK's SignerV4 and sent with requests, to see the HTTP status too (the SDK hides it).
    ``send`` posts other bytes than the signed ones."""
    request = Request()
    request.set_schema("http")
    request.set_method("POST")
    request.set_host(standin.host)
    request.set_path("/")
    request.set_query({"Action": action, "Version": "2022-08-31"})
    request.set_headers({"Host": standin.host, "Content-Type": "application/json"})
    request.body = body
    credentials = Credentials(standin.access_key_id, secret or standin.secret_access_key, "cv", "cn-north-1")
    SignerV4.sign(request, credentials)
    return requests.post(request.build(), headers=request.headers, data=send if send is not None else body, timeout=10)


def submit(sdk, **params) -> str:
    answer = sdk.cv_sync2async_submit_task({"req_key": REQ_KEY, "prompt": "a red fox in snow", **params})
    assert answer["code"] == 10000 and answer["message"] == "Success", answer
    assert answer["data"]["task_id"].isdigit() and len(answer["data"]["task_id"]) == 19
    assert len(answer["request_id"]) == 34 and "time_elapsed" in answer
    return answer["data"]["task_id"]


def poll(sdk, task_id: str, *, return_url: bool = False, until=("done", "not_found", "expired")) -> tuple[dict, list]:
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = sdk.cv_sync2async_get_result(
            {"req_key": REQ_KEY, "task_id": task_id, "req_json": json.dumps({"return_url": return_url})})
        assert answer["code"] == 10000, answer
        if not seen or seen[-1] != answer["data"]["status"]:
            seen.append(answer["data"]["status"])
        if answer["data"]["status"] in until:
            return answer, seen
        time.sleep(0.03)
    raise AssertionError(f"still {seen} after 10 s")


def test_submit_poll_done_and_decode_the_picture(sdk, volc_standin):
    task_id = submit(sdk, width=512, height=640, seed=7)
    answer, seen = poll(sdk, task_id)
    assert seen == ["in_queue", "generating", "done"]
    assert answer["data"]["image_urls"] is None
    [encoded] = answer["data"]["binary_data_base64"]
    png = base64.b64decode(encoded)
    picture = Image.open(io.BytesIO(png))
    assert (picture.format, picture.size) == ("PNG", (512, 640))
    # The same prompt and seed draw the same placeholder; another seed another one.
    again, _ = poll(sdk, submit(sdk, width=512, height=640, seed=7))
    other, _ = poll(sdk, submit(sdk, width=512, height=640, seed=8))
    assert again["data"]["binary_data_base64"] == [encoded] != other["data"]["binary_data_base64"]
    assert volc_standin.stats()["submissions"] == 3


def test_return_url_gives_a_link_to_the_same_picture(sdk):
    task_id = submit(sdk, width=256, height=256, seed=1)
    by_url, _ = poll(sdk, task_id, return_url=True)
    inline, _ = poll(sdk, task_id)
    [url] = by_url["data"]["image_urls"]
    assert by_url["data"]["binary_data_base64"] is None
    response = requests.get(url, timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    assert response.content == base64.b64decode(inline["data"]["binary_data_base64"][0])


def test_a_wrong_secret_is_refused_by_the_gateway(sdk, volc_standin):
    sdk.set_sk("not-the-secret")
    body = sdk_error(sdk.cv_sync2async_submit_task, {"req_key": REQ_KEY, "prompt": "x"})
    meta = body["ResponseMetadata"]
    assert meta["Error"]["Code"] == "SignatureDoesNotMatch" and meta["Error"]["CodeN"] == 100010
    assert (meta["Action"], meta["Version"], meta["Service"], meta["Region"]) == (
        "CVSync2AsyncSubmitTask", "2022-08-31", "cv", "cn-north-1")
    assert volc_standin.stats()["submissions"] == 0
    response = signed_post(volc_standin, "CVSync2AsyncSubmitTask", b'{"req_key": "jimeng_t2i_v40", "prompt": "x"}',
                           secret="wrong")
    assert response.status_code == 401


def test_an_unknown_access_key_and_a_missing_signature_are_refused(sdk, volc_standin):
    sdk.set_ak("AKLTsomeoneelse")
    body = sdk_error(sdk.cv_sync2async_submit_task, {"req_key": REQ_KEY, "prompt": "x"})
    assert body["ResponseMetadata"]["Error"]["Code"] == "InvalidAccessKey"
    response = requests.post(f"{volc_standin.url}/?Action=CVSync2AsyncSubmitTask&Version=2022-08-31",
                             json={"req_key": REQ_KEY, "prompt": "x"}, timeout=5)
    assert response.status_code == 401
    assert response.json()["ResponseMetadata"]["Error"]["Code"] == "MissingAuthenticationToken"


def test_a_body_changed_after_signing_is_refused(volc_standin):
    signed = b'{"req_key": "jimeng_t2i_v40", "prompt": "a cat"}'
    assert signed_post(volc_standin, "CVSync2AsyncSubmitTask", signed).status_code == 200
    tampered = signed_post(volc_standin, "CVSync2AsyncSubmitTask", signed,
                           send=b'{"req_key": "jimeng_t2i_v40", "prompt": "a dog"}')
    assert tampered.status_code == 401
    assert tampered.json()["ResponseMetadata"]["Error"]["Code"] == "SignatureDoesNotMatch"


def test_an_unknown_action_is_refused(volc_standin):
    response = signed_post(volc_standin, "CVProcess", b"{}")
    assert response.status_code == 404
    assert response.json()["ResponseMetadata"]["Error"]["Code"] == "InvalidActionOrVersion"


@pytest.mark.parametrize("params", [
    {"req_key": "no_such_model", "prompt": "x"},
    {"req_key": REQ_KEY, "prompt": ""},
    {"req_key": REQ_KEY, "prompt": "x" * 801},
    {"req_key": REQ_KEY, "prompt": "x", "width": 100},
    {"req_key": REQ_KEY, "prompt": "x", "height": 5000},
    {"req_key": REQ_KEY, "prompt": "x", "seed": "seven"},
])
def test_bad_parameters_get_the_invalid_input_code(sdk, volc_standin, params):
    body = sdk_error(sdk.cv_sync2async_submit_task, params)
    assert (body["code"], body["message"], body["data"]) == (50215, "Input invalid for this service.", None)
    assert signed_post(volc_standin, "CVSync2AsyncSubmitTask", json.dumps(params).encode()).status_code == 400


def test_an_unknown_task_id_is_not_found(sdk):
    answer, _ = poll(sdk, "1234567890123456789")
    assert answer["data"] == {"binary_data_base64": None, "image_urls": None, "status": "not_found"}


@pytest.mark.parametrize("fault, status, code, message", [
    ("refuse_prompt_next", 400, 50412, "Text Risk Not Pass"),
    ("quota_next", 403, 50400, "Access Denied: account has no quota left for this service"),
    ("throttle_next", 429, 50429, "Request Has Reached API Limit, Please Try Later"),
])
def test_submit_faults_fire_once(sdk, volc_standin, fault, status, code, message):
    volc_standin.faults(**{fault: True})
    response = signed_post(volc_standin, "CVSync2AsyncSubmitTask", b'{"req_key": "jimeng_t2i_v40", "prompt": "x"}')
    assert response.status_code == status
    assert (response.json()["code"], response.json()["message"], response.json()["data"]) == (code, message, None)
    assert volc_standin.stats()["submissions"] == 0
    submit(sdk)  # one-shot: the next submit goes through
    assert volc_standin.faults()[fault] is False


def test_server_errors_answer_500_for_the_next_calls(sdk, volc_standin):
    volc_standin.faults(server_error_next=2)
    for _ in range(2):
        body = sdk_error(sdk.cv_sync2async_submit_task, {"req_key": REQ_KEY, "prompt": "x"})
        assert (body["code"], body["message"]) == (50500, "Internal Error")
    poll(sdk, submit(sdk))


def test_a_refused_output_fails_when_done(sdk, volc_standin):
    volc_standin.faults(refuse_output_next=True)
    task_id = submit(sdk)
    _, seen = poll(sdk, task_id, until=("in_queue", "generating"))  # it runs like any other
    time.sleep(0.4)
    body = sdk_error(sdk.cv_sync2async_get_result, {"req_key": REQ_KEY, "task_id": task_id})
    assert (body["code"], body["message"], body["data"]) == (50511, "Post Img Risk Not Pass", None)


def test_an_expiring_task_reports_expired(sdk, volc_standin):
    volc_standin.faults(expire_next=True)
    answer, seen = poll(sdk, submit(sdk))
    assert seen[-1] == "expired" and answer["data"]["binary_data_base64"] is None


def test_a_forgotten_task_runs_then_is_not_found_and_the_next_is_not(sdk, volc_standin):
    volc_standin.faults(forget_next=True)
    answer, seen = poll(sdk, submit(sdk))
    assert seen[-1] == "not_found" and seen[0] in ("in_queue", "generating")
    assert volc_standin.faults()["forget_next"] is False
    answer, seen = poll(sdk, submit(sdk))
    assert seen[-1] == "done"


def test_a_task_is_forgotten_after_its_time_to_live(volc_standin):
    volc_standin.stop()
    volc_standin.start("--task-ttl", "0.5")
    service = VisualService()
    service.set_host(volc_standin.host)
    service.set_scheme("http")
    service.set_ak(volc_standin.access_key_id)
    service.set_sk(volc_standin.secret_access_key)
    task_id = submit(service)
    poll(service, task_id, until=("done",))
    time.sleep(0.6)
    answer, _ = poll(service, task_id)
    assert answer["data"]["status"] == "not_found"


def test_slow_answers(sdk, volc_standin):
    volc_standin.faults(delay=0.5)
    started = time.monotonic()
    submit(sdk)
    assert time.monotonic() - started >= 0.5


def test_the_concurrency_limit(volc_standin):
    volc_standin.stop()
    volc_standin.start("--max-concurrent", "1", "--generate-seconds", "5")
    first = signed_post(volc_standin, "CVSync2AsyncSubmitTask", b'{"req_key": "jimeng_t2i_v40", "prompt": "x"}')
    second = signed_post(volc_standin, "CVSync2AsyncSubmitTask", b'{"req_key": "jimeng_t2i_v40", "prompt": "y"}')
    assert first.json()["code"] == 10000
    assert (second.status_code, second.json()["code"]) == (429, 50430)


def test_the_fault_controls_refuse_unknown_names_and_bad_values(volc_standin):
    assert requests.post(f"{volc_standin.url}/standin/faults", json={"explode": True}, timeout=5).status_code == 400
    assert requests.post(f"{volc_standin.url}/standin/faults", json={"delay": -1}, timeout=5).status_code == 400
    assert requests.post(f"{volc_standin.url}/standin/faults", json={"quota_next": "yes"}, timeout=5).status_code == 400
    assert requests.post(f"{volc_standin.url}/standin/faults", data=b"[", timeout=5).status_code == 400
