"""ComfyClient and ComfySocket against a local aiohttp server replaying the captures."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
from pathlib import Path

import pytest
from aiohttp import web

from generation.comfy import PromptTracker
from generation.comfy.client import (
    ComfyClient,
    ComfyNotFound,
    ComfyPromptRejected,
    ComfyProtocolError,
    ComfySocketClosed,
    ComfyUnreachable,
)
from generation.comfy.events import Event, Preview, TextFrame
from tests.conftest import COMFYUI_CAPTURES


def _captures() -> Path:
    return COMFYUI_CAPTURES


class FakeComfy:
    """Replays captured bodies and status codes; records what the client sent."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str, object]] = []
        self.prompt_response: tuple[int, str, object] = (200, "application/json", {})
        self.combo_shape = False
        self.ws_received: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def load(self, name: str):
        return json.loads((self.root / name).read_text())

    # -- lifecycle --
    def start(self) -> FakeComfy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        r = app.router
        r.add_get("/system_stats", self._file("system_stats.json"))
        r.add_get("/object_info", self._file("object_info_core.json"))
        r.add_get("/object_info/{cls}", self.object_info)
        r.add_post("/prompt", self.prompt)
        r.add_get("/history/{pid}", self.history)
        r.add_get("/queue", self._file("queue_running_with_pending.json"))
        r.add_post("/queue", self.empty_post)
        r.add_post("/interrupt", self.empty_post)
        r.add_get("/view", self.view)
        r.add_post("/upload/image", self.upload)
        r.add_get("/ws", self.ws)
        r.add_get("/prefixed/ws", self.ws)
        r.add_get("/prefixed/system_stats", self._file("system_stats.json"))
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- handlers --
    def _file(self, name: str):
        async def handler(req: web.Request) -> web.Response:
            return web.json_response(self.load(name))

        return handler

    async def object_info(self, req: web.Request) -> web.Response:
        cls = req.match_info["cls"]
        core = self.load("object_info_core.json")
        if cls not in core:
            return web.json_response({})  # what ComfyUI does for unknown classes
        if self.combo_shape and cls == "CheckpointLoaderSimple":
            names = core[cls]["input"]["required"]["ckpt_name"][0]
            core[cls]["input"]["required"]["ckpt_name"] = ["COMBO", {"options": names, "tooltip": "x"}]
        return web.json_response({cls: core[cls]})

    async def prompt(self, req: web.Request) -> web.Response:
        self.requests.append(("POST", "/prompt", await req.json()))
        status, ctype, body = self.prompt_response
        if ctype == "application/json":
            return web.json_response(body, status=status)
        return web.Response(status=status, text=body, content_type=ctype)

    async def history(self, req: web.Request) -> web.Response:
        pid = req.match_info["pid"]
        for name in ("history_one.json", "history_failed.json", "history_interrupted.json"):
            data = self.load(name)
            if pid in data:
                return web.json_response(data)
        return web.json_response({})  # pending, running or unknown id

    async def empty_post(self, req: web.Request) -> web.Response:
        self.requests.append(("POST", req.path, await req.json()))
        return web.Response(status=200)

    async def view(self, req: web.Request) -> web.Response:
        self.requests.append(("GET", "/view", dict(req.query)))
        if req.query.get("filename") == "flaky.png":
            return web.Response(status=503)
        if req.query.get("filename") != "ComfyUI_00013_.png":
            return web.Response(status=404)
        data = (self.root / "ws_preview_frame_type4.bin").read_bytes()  # any large payload
        return web.Response(body=data, content_type="image/png")

    async def upload(self, req: web.Request) -> web.Response:
        form = await req.post()
        if "image" not in form:
            return web.Response(status=400)
        part = form["image"]
        self.requests.append(
            ("POST", "/upload/image", {
                "filename": part.filename,
                "bytes": part.file.read(),
                "type": form.get("type"),
                "subfolder": form.get("subfolder"),
                "overwrite": form.get("overwrite"),
            })
        )
        cases = self.load("upload_image_response.json")["cases"]
        return web.json_response(cases[0]["response"]["body"])

    async def ws(self, req: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(req)
        client_id = req.query.get("clientId", "")
        if client_id == "drop":
            await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "drop"}})
            await ws.close()
            return ws
        bins = {
            1: (self.root / "ws_preview_frame_type1.bin").read_bytes(),
            3: (self.root / "ws_text_frame_type3.bin").read_bytes(),
            4: (self.root / "ws_preview_frame_type4.bin").read_bytes(),
        }
        await ws.send_bytes(b"\0\0\0\x63unknown-event")  # must be skipped by recv()
        for line in (self.root / f"ws_{client_id}_trace.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec["kind"] == "binary":
                await ws.send_bytes(bins[rec["data"]["event_type"]])
            else:
                await ws.send_str(json.dumps(rec["data"]))
        async for msg in ws:  # record client frames; keep the socket open until it closes
            if msg.type == web.WSMsgType.TEXT:
                self.ws_received.append(msg.data)
        return ws


@pytest.fixture(scope="module")
def server():
    srv = FakeComfy(_captures()).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server) -> ComfyClient:
    server.requests.clear()
    server.prompt_response = (200, "application/json", {})
    server.combo_shape = False
    return ComfyClient(server.url + "/", timeout=5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- HTTP ------------------------------------------------------------------------


def test_base_url_and_system_stats(client, server):
    assert client.base_url == server.url
    stats = client.system_stats()
    assert stats["system"]["comfyui_version"] == "0.3.64"


def test_object_info_and_checkpoints_both_shapes(client, server):
    assert "KSampler" in client.object_info()
    assert list(client.object_info("KSampler")) == ["KSampler"]
    assert client.object_info("NoSuchNode") == {}
    assert client.checkpoints() == ["random-sd15-b.safetensors", "random-sd15.safetensors"]
    server.combo_shape = True
    assert client.checkpoints() == ["random-sd15-b.safetensors", "random-sd15.safetensors"]


def test_submit_ok(client, server):
    ok = server.load("post_prompt_ok.json")
    server.prompt_response = (200, "application/json", ok["response"]["body"])
    graph = ok["request"]["json"]["prompt"]
    body = client.submit(prompt=graph, prompt_id="my-id", client_id="cid", extra_data={"extra_pnginfo": {"a": 1}})
    assert body["number"] == 38
    _, _, sent = server.requests[-1]
    assert sent == {"prompt": graph, "prompt_id": "my-id", "client_id": "cid", "extra_data": {"extra_pnginfo": {"a": 1}}}


def test_submit_rejected_400_and_500(client, server):
    invalid = server.load("post_prompt_invalid.json")["cases"][0]["response"]
    server.prompt_response = (400, "application/json", invalid["body"])
    with pytest.raises(ComfyPromptRejected) as info:
        client.submit(prompt={}, prompt_id="p", client_id="c")
    exc = info.value
    assert exc.status == 400 and exc.body == invalid["body"]
    assert exc.error["type"] == "prompt_outputs_failed_validation"
    assert set(exc.node_errors) == {"4"}

    malformed = server.load("post_prompt_malformed.json")["cases"][3]["response"]
    server.prompt_response = (500, "text/plain", malformed["body"])
    with pytest.raises(ComfyPromptRejected) as info:
        client.submit(prompt={}, prompt_id="p", client_id="c")
    assert info.value.status == 500 and info.value.body.startswith("500 Internal Server Error")
    assert info.value.error is None and info.value.node_errors == {}


def test_submit_partial_valid_200_is_rejected(client, server):
    partial = server.load("post_prompt_partial_valid.json")["response"]
    server.prompt_response = (200, "application/json", partial["body"])
    with pytest.raises(ComfyPromptRejected) as info:
        client.submit(prompt={}, prompt_id="p", client_id="c")
    assert info.value.status == 200 and "11" in info.value.node_errors
    # The pruned prompt was queued anyway: it is withdrawn (targeted, never global).
    pid = partial["body"]["prompt_id"]
    assert server.requests[1:] == [("POST", "/queue", {"delete": [pid]}), ("POST", "/interrupt", {"prompt_id": pid})]


def test_submit_gateway_error_is_unreachable(client, server):
    server.prompt_response = (502, "text/plain", "bad gateway")
    with pytest.raises(ComfyUnreachable):
        client.submit(prompt={}, prompt_id="p", client_id="c")
    server.prompt_response = (200, "text/html", "<html>")
    with pytest.raises(ComfyProtocolError):
        client.submit(prompt={}, prompt_id="p", client_id="c")


def test_history(client):
    entry = client.history("ca60c976-345e-48cd-9ef7-8181fa8afa04")
    assert entry["status"]["status_str"] == "success"
    assert client.history("still-running") is None
    t = PromptTracker("24fc9bae-63a7-4394-bd65-00d96d8c677f")
    t.apply_history(client.history(t.prompt_id))
    assert t.outcome == "interrupted"


def test_queue_and_queue_state(client):
    q = client.queue()
    assert len(q["queue_pending"]) == 3
    assert client.queue_state("b55bf106-320f-4343-ad64-1c3dee701dfe") == "running"
    assert client.queue_state("a473e563-103e-4361-8d8f-a5d0a1b77d91") == "pending"
    assert client.queue_state("unknown") is None


def test_delete_and_targeted_interrupt(client, server):
    client.delete_from_queue(["a", "b"])
    client.delete_from_queue([])  # nothing sent
    client.interrupt("p1")
    assert server.requests == [("POST", "/queue", {"delete": ["a", "b"]}), ("POST", "/interrupt", {"prompt_id": "p1"})]
    with pytest.raises(ValueError):
        client.interrupt("")


def test_download(client, server):
    buf = io.BytesIO()
    n = client.download({"filename": "ComfyUI_00013_.png", "subfolder": "", "type": "output"}, buf)
    expected = (server.root / "ws_preview_frame_type4.bin").read_bytes()
    assert n == len(expected) and buf.getvalue() == expected
    assert server.requests[-1][2] == {"filename": "ComfyUI_00013_.png", "subfolder": "", "type": "output"}
    with pytest.raises(ComfyNotFound):
        client.download({"filename": "gone.png", "subfolder": "", "type": "temp"}, io.BytesIO())
    with pytest.raises(ComfyUnreachable):
        client.download({"filename": "flaky.png", "subfolder": "", "type": "output"}, io.BytesIO())
    # The connection cut mid-answer is not kept for the next call.
    assert client.system_stats()["system"]["comfyui_version"] == "0.3.64"


def test_upload_image(client, server):
    result = client.upload_image(name="capture_upload.png", fileobj=io.BytesIO(b"PNGDATA"), subfolder="sub", overwrite=True)
    assert result == {"name": "capture_upload.png", "subfolder": "", "type": "input"}
    sent = server.requests[-1][2]
    assert sent == {
        "filename": "capture_upload.png", "bytes": b"PNGDATA", "type": "input", "subfolder": "sub", "overwrite": "true",
    }


def test_connection_refused_is_unreachable():
    client = ComfyClient(f"http://127.0.0.1:{closed_port()}", timeout=2)
    with pytest.raises(ComfyUnreachable):
        client.system_stats()
    with pytest.raises(ComfyUnreachable):
        client.submit(prompt={}, prompt_id="p", client_id="c")
    with pytest.raises(ComfyUnreachable):
        client.open_socket("x", timeout=2)


def test_timeout_is_unreachable():
    # A listening socket that never answers: the read times out.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        client = ComfyClient(f"http://127.0.0.1:{s.getsockname()[1]}", timeout=0.3)
        with pytest.raises(ComfyUnreachable):
            client.queue()


# ---- websocket -------------------------------------------------------------------


def test_ws_url():
    assert ComfyClient("http://h:8188/").ws_url("a b") == "ws://h:8188/ws?clientId=a%20b"
    assert ComfyClient("https://h/comfy").ws_url("x") == "wss://h/comfy/ws?clientId=x"


def drain(sock) -> list:
    items = []
    while (item := sock.recv(timeout=0.5)) is not None:
        items.append(item)
    return items


def test_socket_replays_txt2img_trace(client, server):
    server.ws_received.clear()
    with client.open_socket("txt2img", timeout=5) as sock:
        items = drain(sock)
    # feature_flags is sent first so previews come as type 4 (with prompt_id).
    assert server.ws_received, "client sent no feature_flags frame"
    assert json.loads(server.ws_received[0]) == {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
    trace = (server.root / "ws_txt2img_trace.jsonl").read_text().splitlines()
    assert len(items) == len(trace)  # the unknown binary frame was skipped
    assert isinstance(items[0], Event) and items[0].data["sid"] == "49e3620dd3a643bfacdc51df77b8cdfc"
    previews = [i for i in items if isinstance(i, Preview)]
    assert len(previews) == 2 and all(p.image_format == "jpeg" for p in previews)
    tracker = PromptTracker("ca60c976-345e-48cd-9ef7-8181fa8afa04")
    for item in items:
        tracker.feed(item)
    assert tracker.done and tracker.outcome == "success" and tracker.preview is previews[-1]
    assert tracker.images[0]["filename"] == "ComfyUI_00013_.png"


def test_socket_type4_and_text_frames(client):
    with client.open_socket("txt2img_preview_metadata", timeout=5) as sock:
        items = drain(sock)
    previews = [i for i in items if isinstance(i, Preview)]
    assert previews and previews[0].prompt_id == "f6c702ea-48e7-43e0-b560-136139f5c2d7"
    with client.open_socket("text_frame", timeout=5) as sock:
        items = drain(sock)
    assert TextFrame("2", "width: 64, height: 48\n batch size: 1") in items


def test_socket_without_feature_flags(client, server):
    server.ws_received.clear()
    with client.open_socket("cached", timeout=5, preview_metadata=False) as sock:
        assert isinstance(sock.recv(timeout=2), Event)
        sock.recv(timeout=0.3)
    assert server.ws_received == []


def test_socket_recv_timeout_returns_none(client):
    with client.open_socket("cached", timeout=5) as sock:
        drain(sock)
        assert sock.recv(timeout=0.1) is None


def test_socket_closed_by_server(client):
    with client.open_socket("drop", timeout=5) as sock:
        first = sock.recv(timeout=2)
        assert isinstance(first, Event) and first.type == "status"
        with pytest.raises(ComfySocketClosed):
            for _ in range(5):
                sock.recv(timeout=2)


def test_base_url_with_path_prefix(server):
    # ComfyUI behind a reverse proxy under a path: HTTP and /ws both keep the prefix.
    client = ComfyClient(server.url + "/prefixed/", timeout=5)
    assert client.system_stats()["system"]["comfyui_version"] == "0.3.64"
    with client.open_socket("cached", timeout=5) as sock:
        assert isinstance(sock.recv(timeout=2), Event)


# --- one connection pool per thread and backend -----------------------------------------

def test_clients_of_one_backend_share_their_thread_s_connections_and_no_other():
    first, again = ComfyClient("http://gpu-1.invalid:8188"), ComfyClient("http://gpu-1.invalid:8188/")
    other_backend = ComfyClient("http://gpu-2.invalid:8188")
    assert first.http is again.http
    assert other_backend.http is not first.http
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(ComfyClient("http://gpu-1.invalid:8188").http))
    thread.start()
    thread.join()
    assert elsewhere[0] is not first.http  # connections are never shared between threads


def test_the_environment_s_proxies_still_apply_read_once_per_backend(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "gpu-local.invalid,.lan")
    assert ComfyClient("http://gpu-far.invalid:8188").http.proxy == "http://proxy.invalid:3128"
    assert ComfyClient("http://gpu-local.invalid:8188").http.proxy is None
    assert ComfyClient("http://gpu-3.lan:8188").http.proxy is None


def test_a_call_goes_through_the_environment_s_proxy(monkeypatch, demo_engine):
    # The proxy is a demo engine too (a plain HTTP proxy is sent the whole URL, which
    # aiohttp routes by its path): the call reaches the backend only through it.
    monkeypatch.setenv("HTTP_PROXY", demo_engine.url)
    client = ComfyClient("http://gpu-behind-proxy.invalid:8188", timeout=5)
    assert client.http.proxy == demo_engine.url
    assert client.system_stats()["system"]["comfyui_version"] == "0.3.64"


def test_a_kept_connection_to_a_restarted_backend_is_replaced(demo_engine):
    client = ComfyClient(demo_engine.url, timeout=5)
    assert client.system_stats()
    demo_engine.stop()  # its end of the kept connection closes with it
    demo_engine.start()
    assert ComfyClient(demo_engine.url, timeout=5).system_stats()
