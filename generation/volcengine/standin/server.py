"""HTTP routes of the VolcEngine stand-in, the app factory and the command-line entry point.

``POST /?Action=CVSync2AsyncSubmitTask&Version=2022-08-31`` and ``...CVSync2AsyncGetResult...`` answer like the
visual API (the envelope ``code``, ``message``, ``data``, ``request_id``, ``status``, ``time_elapsed``) once the
gateway's part (signature, action) is satisfied. ``/standin/...`` routes are the stand-in's own controls and do
not exist on VolcEngine. The README beside this file lists what was matched and what could not be verified.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import signal
import sys
import time
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from . import signature
from .options import API_VERSION, MAX_SIDE, MIN_SIDE, REGION, SERVICE, StandinOptions, build_parser, options_from_args
from .tasks import Task, TaskTable

log = logging.getLogger(__name__)

SUBMIT, GET_RESULT = "CVSync2AsyncSubmitTask", "CVSync2AsyncGetResult"
SUCCESS = 10000
#: The business errors the stand-in answers, as (HTTP status, code, message) from the visual API's error table.
INVALID_INPUT = (400, 50215, "Input invalid for this service.")
TEXT_RISK = (400, 50412, "Text Risk Not Pass")
POST_IMAGE_RISK = (400, 50511, "Post Img Risk Not Pass")
QPS_LIMIT = (429, 50429, "Request Has Reached API Limit, Please Try Later")
CONCURRENT_LIMIT = (429, 50430, "Request Has Reached API Concurrent Limit, Please Try Later")
INTERNAL_ERROR = (500, 50500, "Internal Error")
#: Not in the public error table: what an account without quota gets could not be verified (see the README).
NO_QUOTA = (403, 50400, "Access Denied: account has no quota left for this service")
MAX_PROMPT_CHARS = 800

STANDIN = web.AppKey("standin", "Standin")


class Standin:
    """The state the routes share: options (with faults), the task table and counters tests read."""

    def __init__(self, options: StandinOptions) -> None:
        self.options = options
        self.tasks = TaskTable(options.task_ttl)
        self.stats: dict[str, Any] = {"submissions": 0, "calls": {}, "refused_signatures": 0}


def _standin(request: web.Request) -> Standin:
    return request.app[STANDIN]


def _request_id() -> str:
    # Shaped like the real ones ("20240720103939AF0029465CF6A74E51EC"): a UTC timestamp and 20 hex digits.
    return datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S") + secrets.token_hex(10).upper()


def _answer(started: float, status: int, code: int, message: str, data: Any) -> web.Response:
    elapsed = f"{(time.monotonic() - started) * 1000:.6f}ms"
    body = {"code": code, "data": data, "message": message, "request_id": _request_id(), "status": code,
            "time_elapsed": elapsed}
    return web.json_response(body, status=status)


def _error(started: float, error: tuple[int, int, str]) -> web.Response:
    status, code, message = error
    return _answer(started, status, code, message, None)


def _gateway_error(action: str, version: str, status: int, code: str, code_n: int, message: str) -> web.Response:
    body = {"ResponseMetadata": {"RequestId": _request_id(), "Action": action, "Version": version,
                                 "Service": SERVICE, "Region": REGION,
                                 "Error": {"CodeN": code_n, "Code": code, "Message": message}}}
    return web.json_response(body, status=status)


async def api(request: web.Request) -> web.Response:
    standin = _standin(request)
    started = time.monotonic()
    body = await request.read()
    faults = standin.options.faults
    if faults.delay:
        await asyncio.sleep(faults.delay)
    query = {key: request.rel_url.query.getall(key) for key in request.rel_url.query}
    action, version = request.rel_url.query.get("Action", ""), request.rel_url.query.get("Version", "")
    refusal = signature.check(
        method=request.method, path=request.rel_url.path, query=query, headers=request.headers, body=body,
        keys={standin.options.access_key_id: standin.options.secret_access_key}, region=REGION, service=SERVICE)
    if refusal is not None:
        standin.stats["refused_signatures"] += 1
        return _gateway_error(action, version, refusal.status, refusal.code, refusal.code_n, refusal.message)
    if action not in (SUBMIT, GET_RESULT) or version != API_VERSION:
        return _gateway_error(action, version, 404, "InvalidActionOrVersion", 100008,
                              f"Could not find operation {action} for version {version}")
    calls = standin.stats["calls"]
    calls[action] = calls.get(action, 0) + 1
    if faults.server_error_next:
        faults.server_error_next -= 1
        return _error(started, INTERNAL_ERROR)
    try:
        form = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        form = None
    if not isinstance(form, dict):
        return _error(started, INVALID_INPUT)
    handler = submit if action == SUBMIT else get_result
    return handler(standin, request, form, started)


def _int(form: dict, name: str, default: int) -> int | None:
    value = form.get(name, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def submit(standin: Standin, request: web.Request, form: dict, started: float) -> web.Response:
    faults, now = standin.options.faults, time.monotonic()
    req_key, prompt = form.get("req_key"), form.get("prompt")
    width, height, seed = _int(form, "width", 1024), _int(form, "height", 1024), _int(form, "seed", -1)
    if (req_key not in standin.options.req_keys or not isinstance(prompt, str) or not prompt.strip()
            or len(prompt) > MAX_PROMPT_CHARS or width is None or height is None or seed is None
            or not MIN_SIDE <= width <= MAX_SIDE or not MIN_SIDE <= height <= MAX_SIDE):
        return _error(started, INVALID_INPUT)
    if faults.take("quota_next"):
        return _error(started, NO_QUOTA)
    if faults.take("refuse_prompt_next"):
        return _error(started, TEXT_RISK)
    if faults.take("throttle_next"):
        return _error(started, QPS_LIMIT)
    limit = standin.options.max_concurrent
    if limit and standin.tasks.running(now) >= limit:
        return _error(started, CONCURRENT_LIMIT)
    task = Task(task_id=standin.tasks.new_id(), req_key=req_key, prompt=prompt,
                seed=seed if seed >= 0 else secrets.randbelow(2**31), width=width, height=height, submitted=now,
                generate_seconds=faults.generate_seconds, refuse_output=faults.take("refuse_output_next"),
                expire=faults.take("expire_next"), forget=faults.take("forget_next"))
    standin.tasks.add(task)
    standin.stats["submissions"] += 1
    return _answer(started, 200, SUCCESS, "Success", {"task_id": task.task_id})


def get_result(standin: Standin, request: web.Request, form: dict, started: float) -> web.Response:
    req_key, task_id = form.get("req_key"), form.get("task_id")
    if not isinstance(req_key, str) or not isinstance(task_id, str):
        return _error(started, INVALID_INPUT)
    req_json: Any = {}
    if form.get("req_json"):
        try:
            req_json = json.loads(form["req_json"]) if isinstance(form["req_json"], str) else None
        except json.JSONDecodeError:
            req_json = None
        if not isinstance(req_json, dict):
            return _error(started, INVALID_INPUT)
    now = time.monotonic()
    task = standin.tasks.get(task_id, now)
    if task is None or task.req_key != req_key:
        return _answer(started, 200, SUCCESS, "Success",
                       {"binary_data_base64": None, "image_urls": None, "status": "not_found"})
    status = task.status(now)
    if status == "done" and task.refuse_output:
        return _error(started, POST_IMAGE_RISK)
    data: dict[str, Any] = {"binary_data_base64": None, "image_urls": None, "status": status}
    if status == "done":
        if req_json.get("return_url"):
            data["image_urls"] = [str(request.url.origin().join(
                request.app.router["standin-image"].url_for(task_id=task.task_id)))]
        else:
            data["binary_data_base64"] = [task.base64()]
    return _answer(started, 200, SUCCESS, "Success", data)


# --- the stand-in's own routes --------------------------------------------------------------------------------------

async def get_image(request: web.Request) -> web.Response:
    task = _standin(request).tasks.get(request.match_info["task_id"])
    if task is None or task.status(time.monotonic()) != "done" or task.refuse_output:
        return web.Response(status=404)
    return web.Response(body=task.png(), content_type="image/png")


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(_standin(request).options.faults.as_dict())


async def post_faults(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        return web.json_response({"error": "expected a JSON object"}, status=400)
    try:
        _standin(request).options.faults.update(body)
    except KeyError as ex:
        return web.json_response({"error": f"unknown fault {ex.args[0]!r}"}, status=400)
    except (TypeError, ValueError) as ex:
        return web.json_response({"error": str(ex)}, status=400)
    return await get_faults(request)


async def get_stats(request: web.Request) -> web.Response:
    standin = _standin(request)
    return web.json_response({**standin.stats, "running": standin.tasks.running(time.monotonic())})


def create_app(options: StandinOptions | None = None) -> web.Application:
    app = web.Application()
    app[STANDIN] = Standin(options or StandinOptions())
    app.router.add_route("*", "/", api)
    app.router.add_get("/standin/images/{task_id}.png", get_image, name="standin-image")
    app.router.add_get("/standin/faults", get_faults)
    app.router.add_post("/standin/faults", post_faults)
    app.router.add_get("/standin/stats", get_stats)
    return app


async def serve(options: StandinOptions) -> None:
    """Run until SIGINT/SIGTERM, printing the "listening" line a parent process waits for."""
    runner = web.AppRunner(create_app(options), handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, reuse_address=True)
    await site.start()
    server = site._server  # noqa: SLF001 - the only way to learn the port picked for port 0
    port = server.sockets[0].getsockname()[1] if server is not None and server.sockets else options.port
    print(f"volcengine stand-in listening on http://{options.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """``python -m generation.volcengine.standin [--port N] [--access-key-id AK --secret-access-key SK] [...]``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s volcengine-standin %(levelname)s %(message)s")
    try:
        asyncio.run(serve(options_from_args(args)))
    except KeyboardInterrupt:
        pass
