"""Bad input gets a clear error, never a 500: deep JSON, huge integers, big uploads, long URIs.

Each refusal is checked where it happens: the JSON parser, the query parameters and the
ids in paths, the upload handler while a body streams (a real stream, made as the server
reads it), and the URI limit in-process and through a real gunicorn started with
deploy/gunicorn.conf.py.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.http import JsonResponse
from django.urls import path
from rest_framework.test import APIClient

from config.parsers import MAX_JSON_DEPTH, json_too_deep
from config.uploads import MULTIPART_ALLOWANCE, upload_too_large_message
from config.urls import handler404, handler500, urlpatterns as real_urlpatterns  # noqa: F401
from generation.models import SourceImage, WebhookDelivery
from tests.conftest import ROOT, free_port, wait_for

HUGE = "99999999999999999999"  # 67 bits
INT64_MAX = 2**63 - 1


def _errors_logged(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


# --- 1. deeply nested JSON ------------------------------------------------------------

NESTED = "[" * 3000 + "]" * 3000  # about 6 KB


@pytest.mark.django_db
@pytest.mark.parametrize("method,url,signed_in", [
    ("post", "/api/v1/auth/login", False),
    ("post", "/api/v1/auth/register", False),
    ("post", "/api/v1/generation/create-async", True),
    ("post", "/api/v1/auth/tokens", True),
    ("put", "/api/v1/webhooks/default", True),
])
def test_deeply_nested_json_is_a_400_with_the_error_body(method, url, signed_in, make_user, api_client_for,
                                                         caplog):
    client = api_client_for(make_user()) if signed_in else APIClient()
    for body in (NESTED, '{"username": "ann", "password": ' + NESTED + "}"):
        response = getattr(client, method)(url, data=body, content_type="application/json")
        assert response.status_code == 400, response.content[:300]
        error = response.json()["error"]
        assert error["code"] == "parse_error"
        assert str(MAX_JSON_DEPTH) in error["message"]
    assert not _errors_logged(caplog)


@pytest.mark.django_db
def test_json_nested_within_the_limit_reaches_the_view():
    body = json.dumps({"username": "ann", "password": [[["x"]]]})
    response = APIClient().post("/api/v1/auth/login", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"password": ["Not a valid string."]}


def test_nesting_is_counted_outside_strings_and_up_to_the_limit():
    assert not json_too_deep("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert json_too_deep("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert json_too_deep('{"a": ' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1))
    # Brackets inside strings (escaped quotes too) are text, not nesting.
    assert not json_too_deep(json.dumps({"prompt": "[" * 500 + '"{' * 100}))
    assert json_too_deep('{"a": "\\"[", "b": ' + "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1) + "}")
    # Many lists side by side are not deep.
    assert not json_too_deep(json.dumps([[i] for i in range(1000)]))


@pytest.mark.django_db
def test_a_body_that_is_not_text_in_its_charset_is_a_400():
    response = APIClient().post("/api/v1/auth/login", data=b'{"username": "\xff"}',
                                content_type="application/json; charset=utf-8")
    assert response.status_code == 400 and response.json()["error"]["code"] == "parse_error"


@pytest.mark.django_db
def test_json_values_have_the_types_the_schema_gives_them(make_user, api_client_for, catalog):
    client = api_client_for(make_user())
    response = client.post("/api/v1/auth/tokens", {"name": 0}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"name": ["Not a valid string."]}
    for steps in ("8", True, 8.5):
        response = client.post("/api/v1/generation/create-async", {"prompt": "a fox", "steps": steps}, format="json")
        assert response.status_code == 400 and list(response.json()["error"]["fields"]) == ["steps"], steps
    # 8.0 is an integer to JSON Schema; null stays the field's to judge.
    response = client.post("/api/v1/generation/create-async", {"prompt": "a fox", "steps": 8.0, "seed": None},
                           format="json")
    assert response.status_code == 202, response.content
    # A form body is all text, read as before.
    response = client.post("/api/v1/generation/create-async", {"prompt": "a fox", "steps": "8"})
    assert response.status_code == 202, response.content


# --- 2. integers beyond 64 bits ---------------------------------------------------------

INTEGER_PARAMETERS = [
    ("/api/v1/webhooks/deliveries", "task"),
    ("/api/v1/webhooks/deliveries", "page"),
    ("/api/v1/webhooks/deliveries", "page_size"),
    ("/api/v1/uploads", "page"),
    ("/api/v1/uploads", "page_size"),
    ("/api/v1/generation/history", "limit"),
    ("/api/v1/generation/history", "page_size"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("url,name", INTEGER_PARAMETERS)
def test_every_integer_query_parameter_is_checked_and_named(url, name, make_user, api_client_for, caplog):
    client = api_client_for(make_user())
    for value in (HUGE, str(INT64_MAX + 1), "-" + HUGE, "0", "-1", "abc", "1.5", "1.0", "1_0", " 7"):
        response = client.get(url, {name: value})
        assert response.status_code == 400, (name, value, response.content[:300])
        error = response.json()["error"]
        assert error["code"] == "invalid" and list(error["fields"]) == [name], (name, value, error)
    assert not _errors_logged(caplog)


@pytest.mark.django_db
@pytest.mark.parametrize("url,name", INTEGER_PARAMETERS)
def test_integer_query_parameters_in_range_or_empty_are_answered(url, name, make_user, api_client_for):
    client = api_client_for(make_user())
    # An empty value is the same as none; the largest id is simply not found.
    assert client.get(url, {name: ""}).status_code == 200
    assert client.get(url, {name: "1"}).status_code == 200
    expected = 404 if name == "page" else 200  # a page past the end
    assert client.get(url, {name: str(INT64_MAX)}).status_code == expected


@pytest.mark.django_db
def test_the_task_filter_still_filters(make_user, api_client_for, catalog):
    from generation.models import GenerationTask

    user = make_user()
    task = GenerationTask.objects.create(user=user, prompt="p", model_name="demo-sd15",
                                         checkpoint=catalog["checkpoint"], width=64, height=64, steps=4, cfg=7,
                                         sampler="euler", scheduler="normal", seed=1)
    WebhookDelivery.objects.create(user=user, task=task, event="task.completed", url="https://example.com/h",
                                   message_id="m1", payload={})
    client = api_client_for(user)
    assert client.get("/api/v1/webhooks/deliveries", {"task": task.pk}).json()["count"] == 1
    assert client.get("/api/v1/webhooks/deliveries", {"task": task.pk + 1}).json()["count"] == 0


@pytest.mark.django_db
def test_download_takes_yes_and_no_spellings_and_refuses_others(make_user, api_client_for, catalog):
    import io

    from django.core.files.base import ContentFile
    from PIL import Image

    from generation.models import GeneratedImage, GenerationTask, TaskStatus

    user = make_user()
    task = GenerationTask.objects.create(user=user, prompt="p", model_name="demo-sd15",
                                         checkpoint=catalog["checkpoint"], width=8, height=8, steps=4, cfg=7,
                                         sampler="euler", scheduler="normal", seed=1, status=TaskStatus.COMPLETED)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    image = GeneratedImage(task=task, index=0, width=8, height=8, seed=1, size_bytes=len(buffer.getvalue()))
    image.file.save("d.png", ContentFile(buffer.getvalue()), save=False)
    image.save()
    client = api_client_for(user)
    url = f"/api/v1/generation/images/{image.pk}/file"
    for value, disposition in (("1", "attachment"), ("TRUE", "attachment"), ("on", "attachment"),
                               ("0", "inline"), ("off", "inline"), ("", "inline")):
        response = client.get(url, {"download": value})
        assert response.status_code == 200 and response["Content-Disposition"].startswith(disposition), value
    response = client.get(url, {"download": "maybe"})
    assert response.status_code == 400 and list(response.json()["error"]["fields"]) == ["download"]


def _integer_path_operations(client) -> list[tuple[str, str]]:
    spec = client.get("/api/v1/schema/?format=json").json()
    operations = []
    for template, item in spec["paths"].items():
        for method, operation in item.items():
            names = [p["name"] for p in operation.get("parameters", [])
                     if p["in"] == "path" and p["schema"].get("type") == "integer"]
            if names:
                url = template
                for name in names:
                    url = url.replace("{" + name + "}", HUGE)
                operations.append((method, url))
    return operations


@pytest.mark.django_db
def test_every_id_in_an_api_path_beyond_64_bits_is_a_404_with_the_error_body(make_user, api_client_for, caplog):
    client = api_client_for(make_user())
    operations = _integer_path_operations(client)
    assert len(operations) >= 13
    for method, url in operations:
        response = getattr(client, method)(url)
        assert response.status_code == 404, (method, url, response.content[:300])
        assert response.json()["error"]["code"] == "not_found"
    assert not _errors_logged(caplog)


@pytest.mark.django_db
def test_every_id_in_a_page_path_beyond_64_bits_is_the_404_page(client, make_user, caplog):
    from generation.web.urls import urlpatterns as page_urls

    client.force_login(make_user())
    routes = [str(p.pattern) for p in page_urls if "<int:" in str(p.pattern)]
    assert len(routes) >= 10
    for route in routes:
        url = "/" + route.replace("<int:task_id>", HUGE).replace("<int:image_id>", HUGE) \
            .replace("<int:source_id>", HUGE).replace("<str:token>", "t")
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            assert response.status_code == 404, (method, url)
            assert response["Content-Type"].startswith("text/html")
    assert not _errors_logged(caplog)


def _deliveries_of_task(request, task_id: int):
    # A lookup through a related id, which Django does not guard against overflow: the
    # database driver would fail on a number beyond 64 bits.
    return JsonResponse({"count": WebhookDelivery.objects.filter(task_id=task_id).count()})


urlpatterns = [
    path("api/v1/test-deliveries-of/<int:task_id>", _deliveries_of_task),
    *real_urlpatterns,
]


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_no_view_sees_an_id_beyond_64_bits(client, caplog):
    assert client.get("/api/v1/test-deliveries-of/5").json() == {"count": 0}
    response = client.get(f"/api/v1/test-deliveries-of/{INT64_MAX}")
    assert response.status_code == 200
    response = client.get(f"/api/v1/test-deliveries-of/{HUGE}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert not _errors_logged(caplog)


# --- 3. uploads refused while they stream ----------------------------------------------

BOUNDARY = "----easel-test-boundary"


class StreamedBody:
    """A multipart body made while the server reads it (nothing is held in memory).

    Counts the bytes the server took, and at each read the size of the largest file in
    `watch` (the temporary upload folder), so a test sees what was written meanwhile.
    """

    def __init__(self, *, fields: dict[str, str], file_field: str, file_size: int, watch: Path | None = None):
        head = "".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        )
        head += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{file_field}"; filename="big.png"\r\n'
                 "Content-Type: image/png\r\n\r\n")
        self.head = head.encode()
        self.tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self.file_size = file_size
        self.length = len(self.head) + file_size + len(self.tail)
        self.position = 0
        self.watch = watch
        self.largest_written = 0

    def __len__(self) -> int:
        return self.length

    def _bytes_at(self, start: int, end: int) -> bytes:
        file_start, file_end = len(self.head), len(self.head) + self.file_size
        out = bytearray()
        if start < file_start:
            out += self.head[start:min(end, file_start)]
        if end > file_start and start < file_end:
            out += b"\x89" * (min(end, file_end) - max(start, file_start))
        if end > file_end:
            out += self.tail[max(start, file_end) - file_end:end - file_end]
        return bytes(out)

    def read(self, size: int = -1) -> bytes:
        if self.watch is not None:
            sizes = [f.stat().st_size for f in self.watch.iterdir() if f.is_file()]
            self.largest_written = max([self.largest_written, *sizes])
        end = self.length if size is None or size < 0 else min(self.length, self.position + size)
        data = self._bytes_at(self.position, end)
        self.position = end
        return data

    def readline(self, size: int = -1) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n") and self.position < self.length and (size < 0 or len(line) < size):
            line += self.read(1)
        return bytes(line)


def _post_streamed(client, url: str, body: StreamedBody, **headers):
    return client.request(
        REQUEST_METHOD="POST", PATH_INFO=url, CONTENT_TYPE=f"multipart/form-data; boundary={BOUNDARY}",
        CONTENT_LENGTH=str(len(body)), **{"wsgi.input": body}, **headers,
    )


class Uploads:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.written = 0  # the most bytes any temporary upload file was given


@pytest.fixture
def small_limits(settings, tmp_path, monkeypatch):
    """A 200 KB upload limit; every upload over 1 KB goes to a temporary file in a folder
    the test watches, and the bytes handed to that file are counted."""
    from django.core.files.uploadhandler import TemporaryFileUploadHandler

    settings.EASEL_MAX_UPLOAD_BYTES = 200 * 1024
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    uploads = Uploads(tmp_path)
    receive = TemporaryFileUploadHandler.receive_data_chunk

    def counted(handler, raw_data, start):
        uploads.written = max(uploads.written, start + len(raw_data))
        return receive(handler, raw_data, start)

    monkeypatch.setattr(TemporaryFileUploadHandler, "receive_data_chunk", counted)
    return uploads


@pytest.mark.django_db
def test_an_api_upload_declared_over_the_limit_is_413_before_it_is_read(small_limits, make_user, api_client_for):
    from django.test import Client

    from accounts.services import token_create

    _, token = token_create(user=make_user())
    body = StreamedBody(fields={}, file_field="image", file_size=300 * 1024 * 1024, watch=small_limits.tmp)
    response = _post_streamed(Client(), "/api/v1/uploads", body, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert body.position == 0 and small_limits.written == 0
    assert not SourceImage.objects.exists()


@pytest.mark.django_db
def test_an_api_upload_over_the_limit_is_stopped_while_it_streams(small_limits, settings, make_user):
    from django.test import Client

    from accounts.services import token_create

    _, token = token_create(user=make_user())
    limit = settings.EASEL_MAX_UPLOAD_BYTES
    # Within the allowance for the form around it, so only the file's own size gives it away.
    body = StreamedBody(fields={}, file_field="image", file_size=limit + MULTIPART_ALLOWANCE // 2,
                        watch=small_limits.tmp)
    response = _post_streamed(Client(), "/api/v1/uploads", body, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_large" and error["fields"] == {"image": [upload_too_large_message()]}
    assert 0 < small_limits.written <= limit  # the temporary file stopped at the limit
    assert body.largest_written <= limit
    assert not list(small_limits.tmp.iterdir())  # and went with its handler
    assert not SourceImage.objects.exists()


@pytest.mark.django_db
def test_the_generate_page_stops_a_big_picture_while_it_streams_and_keeps_the_fields(small_limits, settings,
                                                                                  catalog, make_user, client):
    client.force_login(make_user())
    limit = settings.EASEL_MAX_UPLOAD_BYTES
    fields = {"prompt": "a lighthouse at dusk", "model": "demo-sd15", "size": "512x512", "steps": "4",
              "cfg": "7", "sampler": "euler", "scheduler": "normal", "batch_size": "1",
              "template": "img2img-basic"}
    body = StreamedBody(fields=fields, file_field="source_file", file_size=300 * 1024 * 1024, watch=small_limits.tmp)
    response = _post_streamed(client, "/", body)
    assert response.status_code == 200
    page = response.content.decode()
    assert upload_too_large_message() in page
    assert "a lighthouse at dusk" in page  # what was typed is still there
    assert 0 < small_limits.written <= limit and body.largest_written <= limit
    assert body.position < limit + 2 * MULTIPART_ALLOWANCE  # the other 300 MB were never read
    assert not list(small_limits.tmp.iterdir())
    from generation.models import GenerationTask

    assert not GenerationTask.objects.exists()


@pytest.mark.django_db
def test_a_picture_under_the_limit_still_goes_through_the_handler(small_limits, make_user, api_client_for):
    import io

    from PIL import Image

    client = api_client_for(make_user())
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(buffer, "PNG")
    buffer.name = "noise.png"
    buffer.seek(0)
    response = client.post("/api/v1/uploads", {"image": buffer}, format="multipart")
    assert response.status_code == 201, response.content
    assert SourceImage.objects.count() == 1


# --- 4. URIs too long --------------------------------------------------------------------


def _padded(url: str, length: int) -> str:
    return url + "x" * (length - len(url))


@pytest.mark.django_db
def test_a_uri_over_the_limit_is_414_with_the_error_body_under_api(client, settings):
    limit = settings.EASEL_MAX_URI_LENGTH
    assert client.get(_padded("/api/v1/health/live?pad=", limit)).status_code == 200
    for method in ("get", "post", "delete"):
        response = getattr(client, method)(_padded("/api/v1/models?q=", limit + 1))
        assert response.status_code == 414
        error = response.json()["error"]
        assert error["code"] == "uri_too_long" and str(limit) in error["message"]


@pytest.mark.django_db
def test_a_uri_over_the_limit_is_a_readable_414_page_elsewhere(client, settings):
    settings.EASEL_MAX_URI_LENGTH = 300
    response = client.get(_padded("/history/?q=", 301))
    assert response.status_code == 414 and response["Content-Type"].startswith("text/html")
    assert "This address is too long" in response.content.decode()
    response = client.get(_padded("/history/?q=", 301), HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "地址太长" in response.content.decode()


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory):
    """The web app under gunicorn with deploy/gunicorn.conf.py, as `manage.py studio` runs it."""
    data = tmp_path_factory.mktemp("gunicorn")
    (data / "tmp").mkdir()
    port = free_port()
    env = {**os.environ, "EASEL_HOST": "127.0.0.1", "EASEL_PORT": str(port), "WEB_CONCURRENCY": "1",
           "EASEL_DATA_DIR": str(data), "TMPDIR": str(data / "tmp"),
           # Its control socket elsewhere: the temporary folder must hold only what uploads write.
           "GUNICORN_CONTROL_SOCKET": str(data / "gunicorn.ctl")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py", "config.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def answered():
        # A busy machine may take a while to boot the worker: any request error is "not yet".
        assert proc.poll() is None, f"gunicorn exited with {proc.returncode}"
        try:
            return requests.get(f"{base}/api/v1/health/live", timeout=5).status_code
        except requests.RequestException:
            return None

    try:
        assert wait_for(answered, timeout=90, interval=0.2, message="gunicorn") == 200
        yield {"url": base, "tmp": data / "tmp"}
    finally:
        proc.terminate()
        proc.wait(20)


def test_gunicorn_lets_a_long_uri_through_to_the_error_body(gunicorn):
    from django.conf import settings

    limit = settings.EASEL_MAX_URI_LENGTH
    base = gunicorn["url"]
    response = requests.get(_padded(f"{base}/api/v1/health/live?pad=", len(base) + limit + 1000), timeout=30)
    assert response.status_code == 414
    assert response.json()["error"]["code"] == "uri_too_long"
    response = requests.get(_padded(f"{base}/accounts/login/?next=", len(base) + limit + 1000), timeout=30)
    assert response.status_code == 414 and "This address is too long" in response.text
    assert requests.get(_padded(f"{base}/api/v1/health/live?pad=", len(base) + limit), timeout=30).status_code == 200


def test_gunicorn_refuses_an_upload_declared_too_large_without_reading_it(gunicorn):
    body = StreamedBody(fields={}, file_field="image", file_size=30 * 1024 * 1024)
    response = requests.post(f"{gunicorn['url']}/api/v1/uploads", data=body, timeout=60,
                             headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert not list(gunicorn["tmp"].iterdir())
