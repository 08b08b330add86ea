"""HTTP and WebSocket routes of the demo engine, the app factory and the command-line entry point.

Every route is served both at ``/x`` and ``/api/x`` like ComfyUI. Response bodies, status codes and the odd
corners (empty 200s, ``{}`` for unknown ids, the text/plain 500) follow the ComfyUI 0.3.64 captures. The
``/demo/...`` routes are the engine's own test controls and do not exist on a real ComfyUI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import uuid
from typing import Any

from aiohttp import web

from . import nodes, system
from .engine import Executor, Stats
from .options import EngineOptions, build_parser, options_from_args
from .prompt_queue import PromptQueue
from .sockets import Client, SocketHub
from .validation import validate_prompt
from .views import upload_image, view_file

log = logging.getLogger(__name__)

#: aiohttp's body for an unhandled exception, which is what ComfyUI clients see for a malformed prompt.
INTERNAL_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"
MAX_UPLOAD_SIZE = 104857600

ENGINE = web.AppKey("engine", "Engine")


class Engine:
    """The state shared by the routes: options, queue, sockets, executor and the listening-site controller."""

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self.hub = SocketHub()
        self.queue = PromptQueue(self.broadcast_status)
        self.stats = Stats()
        self.executor = Executor(options, self.hub, self.queue, self.stats)
        self.number = 0  # ComfyUI's prompt counter: advances on every POST /prompt
        self.site: SiteController | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def broadcast_status(self) -> None:
        await self.hub.send("status", {"status": self.queue.status()}, None)

    def count_submission(self, prompt_id: str) -> None:
        """``/demo/stats``: how often each prompt id was POSTed (lets tests prove a retry did not resubmit)."""
        self.stats.submissions[prompt_id] = self.stats.submissions.get(prompt_id, 0) + 1

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class SiteController:
    """Owns the TCP listener so the ``refuse_connections_for`` fault can stop and restart it."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self.runner, self.host, self.port = runner, host, port
        self.site: web.TCPSite | None = None
        self.refusing_until = 0.0

    async def start(self) -> int:
        self.site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        await self.site.start()
        server = self.site._server  # noqa: SLF001 - the only way to learn the port picked for port 0
        self.port = server.sockets[0].getsockname()[1] if server is not None and server.sockets else self.port
        return self.port

    async def refuse_for(self, seconds: float) -> None:
        """Stop listening (new connections are refused; open ones stay), then listen again on the same port."""
        loop = asyncio.get_running_loop()
        self.refusing_until = loop.time() + seconds
        if self.site is not None:
            await self.site.stop()
            self.site = None
        # Idle keep-alive connections would otherwise keep serving pooled clients through the "outage": drop
        # them. Connections busy with a request (the one that asked for this, open websockets) are left alone.
        if self.runner.server is not None:
            for connection in self.runner.server.connections:
                if getattr(connection, "_current_request", None) is None:
                    connection.force_close()
        await asyncio.sleep(seconds)
        await self.start()
        self.refusing_until = 0.0


def _engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


async def _json_or(request: web.Request, default: Any) -> Any:
    """The JSON body, or ``default`` when there is none or it is not JSON (ComfyUI's lenient handlers)."""
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return default


def _internal_error() -> web.Response:
    return web.Response(status=500, text=INTERNAL_ERROR_TEXT, content_type="text/plain")


# --- prompts and queue --------------------------------------------------------------------------------------------

async def post_prompt(request: web.Request) -> web.Response:
    engine = _engine(request)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _internal_error()
    if engine.options.faults.reject_next_submit:
        engine.options.faults.reject_next_submit = False
        if isinstance(body, dict) and "prompt_id" in body:
            engine.count_submission(str(body["prompt_id"]))
        return _internal_error()
    hang, engine.options.faults.hang_next_submit = engine.options.faults.hang_next_submit, 0.0
    try:
        response = await _accept_prompt(engine, body)
        if hang:
            await asyncio.sleep(hang)  # queued already: only the answer is late
        return response
    except Exception:  # noqa: BLE001 - a prompt that is not a dict of dicts crashes ComfyUI the same way
        # Debug level only: a parent process may never drain our stderr pipe.
        log.debug("POST /prompt failed", exc_info=True)
        return _internal_error()


async def _accept_prompt(engine: Engine, body: Any) -> web.Response:
    if isinstance(body, dict) and "number" in body:
        number: float = float(body["number"])
    else:
        number = engine.number
        if isinstance(body, dict) and body.get("front"):
            number = -number
        engine.number += 1

    if not isinstance(body, dict) or "prompt" not in body:
        error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                 "extra_info": {}}
        return web.json_response({"error": error, "node_errors": {}}, status=400)

    prompt = body["prompt"]
    prompt_id = str(body.get("prompt_id", uuid.uuid4()))
    engine.count_submission(prompt_id)
    result = validate_prompt(engine.options, prompt)
    extra_data = dict(body.get("extra_data") or {})
    if "client_id" in body:
        extra_data["client_id"] = body["client_id"]
    if not result.ok:
        return web.json_response({"error": result.error, "node_errors": result.node_errors}, status=400)
    await engine.queue.put([number, prompt_id, prompt, extra_data, result.outputs])
    return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response(_engine(request).queue.status())


async def get_queue(request: web.Request) -> web.Response:
    return web.json_response(_engine(request).queue.snapshot())


async def post_queue(request: web.Request) -> web.Response:
    engine = _engine(request)
    body = await _json_or(request, {})
    if isinstance(body, dict):
        if body.get("clear"):
            await engine.queue.wipe()
        for prompt_id in body.get("delete") or []:
            await engine.queue.delete(prompt_id)
    return web.Response(status=200)


async def post_interrupt(request: web.Request) -> web.Response:
    engine = _engine(request)
    body = await _json_or(request, {})
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    engine.executor.interrupt(prompt_id)
    return web.Response(status=200)


async def get_history(request: web.Request) -> web.Response:
    query = request.rel_url.query
    max_items = int(query["max_items"]) if "max_items" in query else None
    offset = int(query["offset"]) if "offset" in query else -1
    return web.json_response(_engine(request).queue.get_history(max_items=max_items, offset=offset))


async def get_history_item(request: web.Request) -> web.Response:
    return web.json_response(_engine(request).queue.get_history(request.match_info["prompt_id"]))


async def post_history(request: web.Request) -> web.Response:
    engine = _engine(request)
    body = await _json_or(request, {})
    if isinstance(body, dict):
        if body.get("clear"):
            engine.queue.wipe_history()
        for prompt_id in body.get("delete") or []:
            engine.queue.delete_history(prompt_id)
    return web.Response(status=200)


# --- node and model info ------------------------------------------------------------------------------------------

async def get_object_info(request: web.Request) -> web.Response:
    return web.json_response(nodes.object_info(_engine(request).options))


async def get_object_info_node(request: web.Request) -> web.Response:
    return web.json_response(nodes.object_info(_engine(request).options, request.match_info["node_class"]))


async def get_models(request: web.Request) -> web.Response:
    return web.json_response(list(system.MODEL_FOLDERS))


async def get_models_folder(request: web.Request) -> web.Response:
    folder = request.match_info["folder"]
    if folder not in system.MODEL_FOLDERS:
        return web.Response(status=404)
    options = _engine(request).options
    # Only the folders the engine's nodes read have entries; the rest are empty, as on a fresh ComfyUI.
    listed = {"checkpoints": options.checkpoints, "loras": options.loras, "upscale_models": options.upscale_models,
              "vae": options.vaes}
    return web.json_response(list(listed.get(folder, ())))


async def get_embeddings(request: web.Request) -> web.Response:
    return web.json_response([])


async def get_features(request: web.Request) -> web.Response:
    return web.json_response(system.server_features())


async def get_system_stats(request: web.Request) -> web.Response:
    return web.json_response(system.system_stats())


async def get_view(request: web.Request) -> web.StreamResponse:
    return await view_file(_engine(request).options, request)


async def post_upload_image(request: web.Request) -> web.Response:
    return await upload_image(_engine(request).options, request)


# --- websocket ----------------------------------------------------------------------------------------------------

async def websocket(request: web.Request) -> web.WebSocketResponse:
    engine = _engine(request)
    ws = web.WebSocketResponse(max_msg_size=MAX_UPLOAD_SIZE)
    await ws.prepare(request)
    sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
    client = Client(sid, ws)
    engine.hub.register(client)
    try:
        await engine.hub.send_to(client, "status", {"status": engine.queue.status(), "sid": sid})
        # A client reconnecting while its prompt runs learns the current node (no prompt_id, as in ComfyUI).
        if engine.executor.current_client_id == sid and engine.executor.last_node_id is not None:
            await engine.hub.send_to(client, "executing", {"node": engine.executor.last_node_id})
        first = True
        async for message in ws:
            if message.type.name != "TEXT":
                continue
            try:
                data = json.loads(message.data)
            except json.JSONDecodeError:
                data = None
            # Only the very first text frame may negotiate features; everything else is ignored.
            if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                flags = data.get("data")
                client.feature_flags = flags if isinstance(flags, dict) else {}
                await engine.hub.send_to(client, "feature_flags", system.server_features())
            first = False
    finally:
        engine.hub.unregister(client)
    return ws


# --- test controls ------------------------------------------------------------------------------------------------

async def get_faults(request: web.Request) -> web.Response:
    engine = _engine(request)
    faults = engine.options.faults.as_dict()
    site = engine.site
    remaining = max(0.0, site.refusing_until - asyncio.get_running_loop().time()) if site else 0.0
    faults["refuse_connections_for"] = remaining if site and site.refusing_until else 0.0
    return web.json_response(faults)


async def post_faults(request: web.Request) -> web.Response:
    engine = _engine(request)
    body = await _json_or(request, None)
    if not isinstance(body, dict):
        return web.json_response({"error": "expected a JSON object"}, status=400)
    try:
        engine.options.faults.update(body)
    except KeyError as ex:
        return web.json_response({"error": f"unknown fault {ex.args[0]!r}"}, status=400)
    except (TypeError, ValueError) as ex:
        return web.json_response({"error": str(ex)}, status=400)
    refuse = engine.options.faults.refuse_connections_for
    engine.options.faults.refuse_connections_for = 0.0
    if refuse > 0 and engine.site is not None:
        # After this response has gone out: stop listening, wait, listen again.
        engine.spawn(engine.site.refuse_for(refuse))
    return await get_faults(request)


async def get_stats(request: web.Request) -> web.Response:
    engine = _engine(request)
    stats = engine.stats
    # `sockets`: the websockets open now, so tests can tell how many a client keeps.
    return web.json_response({"submissions": stats.submissions, "executed": stats.executed,
                              "sockets": sum(len(clients) for clients in engine.hub.open.values())})


ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/prompt", post_prompt),
    ("GET", "/prompt", get_prompt),
    ("GET", "/queue", get_queue),
    ("POST", "/queue", post_queue),
    ("POST", "/interrupt", post_interrupt),
    ("GET", "/history", get_history),
    ("GET", "/history/{prompt_id}", get_history_item),
    ("POST", "/history", post_history),
    ("GET", "/view", get_view),
    ("POST", "/upload/image", post_upload_image),
    ("GET", "/object_info", get_object_info),
    ("GET", "/object_info/{node_class}", get_object_info_node),
    ("GET", "/models", get_models),
    ("GET", "/models/{folder}", get_models_folder),
    ("GET", "/embeddings", get_embeddings),
    ("GET", "/features", get_features),
    ("GET", "/system_stats", get_system_stats),
    ("GET", "/ws", websocket),
    ("GET", "/demo/faults", get_faults),
    ("POST", "/demo/faults", post_faults),
    ("GET", "/demo/stats", get_stats),
]


def create_app(options: EngineOptions | None = None) -> web.Application:
    """Build the aiohttp application; the executor starts with the app and stops with it."""
    engine = Engine(options or EngineOptions())
    app = web.Application(client_max_size=MAX_UPLOAD_SIZE)
    app[ENGINE] = engine
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
        if not path.startswith("/demo/"):
            app.router.add_route(method, "/api" + path, handler)

    async def executor_lifecycle(app: web.Application) -> Any:
        task = asyncio.create_task(engine.executor.run_forever())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def close_sockets(app: web.Application) -> None:
        # Websocket handlers never end on their own; close them first so shutdown does not wait for a timeout.
        clients = [c for sockets in engine.hub.open.values() for c in sockets]
        closing = [c.ws.close(code=1001, message=b"demo engine shutting down") for c in clients]
        if closing:
            await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=0.5)

    app.on_shutdown.append(close_sockets)
    app.cleanup_ctx.append(executor_lifecycle)
    return app


async def serve(options: EngineOptions) -> None:
    """Run until SIGINT/SIGTERM, printing the "listening" line a parent process waits for."""
    app = create_app(options)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    controller = SiteController(runner, options.host, options.port)
    app[ENGINE].site = controller
    port = await controller.start()
    print(f"demo engine listening on http://{options.host}:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # e.g. Windows
            pass
    if options.faults.refuse_connections_for > 0:
        seconds, options.faults.refuse_connections_for = options.faults.refuse_connections_for, 0.0
        app[ENGINE].spawn(controller.refuse_for(seconds))
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python -m generation.demo_engine [--port N] [...]``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s demo-engine %(levelname)s %(message)s")
    try:
        asyncio.run(serve(options_from_args(args)))
    except KeyboardInterrupt:
        pass
