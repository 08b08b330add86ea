"""GET /api/v1/events: the signed-in user's task events as Server-Sent Events.

One stream carries every task of its user: created, queued (with the place in Easel's
queue), started, progress, preview (a URL to fetch, never the bytes), completed (the
images as the status endpoint lists them), failed (code, message), cancelled. Each event
has an `id:`; a client that reconnects with `Last-Event-ID` (EventSource does it by itself)
first gets what it missed, so it never loses how a task ended. A comment every
EASEL_EVENTS_KEEPALIVE_SECONDS keeps proxies from closing a quiet stream.

The view is async: under the ASGI server (config.asgi) an open stream holds no thread and
no database connection; the process's one `event_hub` reads new events for all of them.
Served by a WSGI server (or Django's test client) it answers what is already there after
`Last-Event-ID` and ends (the client's reconnect after `retry:` asks again), or 204 when
there is no id to start from, which tells an EventSource to stop and the page to poll.
"""
from __future__ import annotations

import asyncio
import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import translation
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.views import APIView

from accounts.authentication import TokenAuthentication
from config.api_errors import ApiError, error_body, error_response
from config.api_input import query_int
from config.concurrency import sync_slot

from ..events import events_for_user
from ..models import TaskEvent, TaskEventKind
from ..task_text import render
from ..outlook import NONE
from ..representation import outlook_answer
from .event_hub import CLOSED, TooManyStreams, hub, positions

RETRY_MS = 3000  # the `retry:` hint: how soon a client reconnects after the stream ends
BACKLOG_LIMIT = 500  # events sent after Last-Event-ID at most (a client away that long reloads)


# --- what one event says ------------------------------------------------------------


def event_text(event: TaskEvent, *, request, language: str, queue: dict | None = None) -> str:
    """One event in the stream's format, with absolute URLs and the reader's language."""
    data = dict(event.data)
    if event.kind == TaskEventKind.QUEUED:
        queue = queue or {}
        data.update(queue[event.task_id] if event.task_id in queue else getattr(event, "position", None)
                    or outlook_answer(NONE))
    elif event.kind == TaskEventKind.FAILED:
        with translation.override(language):
            data["message"] = render(data.pop("message_params", {}), data.get("message", ""))
    elif event.kind == TaskEventKind.PREVIEW:
        data["url"] = request.build_absolute_uri(data["url"])
    elif event.kind == TaskEventKind.COMPLETED:
        data["images"] = [
            {**image, "url": request.build_absolute_uri(image["url"]),
             "thumbnail_url": request.build_absolute_uri(image["thumbnail_url"])}
            for image in data.get("images", [])
        ]
    payload = json.dumps(data, separators=(",", ":"), default=str)
    return f"id: {event.pk}\nevent: {event.kind}\ndata: {payload}\n\n"


# --- who asks, and from where ------------------------------------------------------------


def _authenticate(request):
    """The API's own order: a token (`Authorization: Bearer …`), else the session. The user,
    or the error answer."""
    try:
        found = TokenAuthentication().authenticate(request)
    except exceptions.AuthenticationFailed as exc:
        return None, _unauthorized(exc)
    if found:
        return found[0], None
    user = request.user  # the session (AuthenticationMiddleware), read here in a thread
    if user.is_authenticated and user.is_active:
        return user, None
    return None, _unauthorized(exceptions.NotAuthenticated())


def _unauthorized(exc: exceptions.APIException) -> JsonResponse:
    # The body the rest of the API answers (config.api_errors): DRF's code and message.
    response = JsonResponse(error_body(exc.get_codes(), str(exc.detail)), status=401)
    response["WWW-Authenticate"] = "Bearer"
    return response


def _resume_from(request) -> int | None:
    """Where the client left off: the `Last-Event-ID` header (a reconnecting EventSource),
    else `?last_event_id=` (a page starting where its rendering stopped); None: from now."""
    header = request.headers.get("Last-Event-ID")
    if header not in (None, ""):
        return query_int({"Last-Event-ID": header.strip()}, "Last-Event-ID", minimum=0)
    return query_int(request.GET, "last_event_id", minimum=0)


def _start(request):
    """Everything the stream needs from the database before it starts, in one thread."""
    try:
        return _started(request)
    finally:
        _let_go(request)


def _let_go(request) -> None:
    # The request's thread keeps its connection until the response ends, which for a
    # stream is when the viewer leaves: given back now, the stream reads no more itself.
    if isinstance(request, ASGIRequest):
        for connection in connections.all(initialized_only=True):
            connection.close()


def _started(request):
    user, refusal = _authenticate(request)
    if refusal is not None:
        return None, None, [], {}, refusal
    try:
        after = _resume_from(request)
    except ApiError as exc:
        return None, None, [], {}, JsonResponse(error_body(exc.code, exc.detail, exc.fields), status=400)
    backlog = events_for_user(user_id=user.pk, after=after, limit=BACKLOG_LIMIT) if after is not None else []
    return user, after, backlog, positions(backlog), None


# --- the view -------------------------------------------------------------------------


async def event_stream(request):
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse(error_body("method_not_allowed", str(exceptions.MethodNotAllowed.default_detail
                                                                      .format(method=request.method))), status=405)
        response["Allow"] = "GET, HEAD"
        return response
    async with sync_slot():  # config.concurrency: a burst of connects opens few DB connections
        user, _after, backlog, queue, refusal = await sync_to_async(_start)(request)
    if refusal is not None:
        return refusal
    language = translation.get_language() or settings.LANGUAGE_CODE
    head = f"retry: {RETRY_MS}\n\n"
    if not isinstance(request, ASGIRequest) or request.method == "HEAD":
        if _after is None:
            # No stream here (a WSGI server): 204 tells an EventSource to stop reconnecting,
            # and the task page polls instead, at once.
            return _headers(HttpResponse(status=204))
        # What is there after the client's last id, then the client reconnects.
        body = head + "".join(event_text(e, request=request, language=language, queue=queue) for e in backlog)
        return _headers(HttpResponse(body, content_type="text/event-stream; charset=utf-8"))
    try:
        subscription = await hub.subscribe(user.pk, limit=settings.EASEL_EVENTS_STREAMS_PER_USER)
    except TooManyStreams:
        # A browser gives up on a refused EventSource: its page polls instead (task.js).
        response = JsonResponse(error_body("too_many_streams", str(_(
            "You have too many event streams open; close some tabs or follow your tasks by polling."))),
            status=429)
        response["Retry-After"] = str(RETRY_MS // 1000 * 10)
        return response
    # Read once more now that the hub hands over everything newer: what was committed
    # between the first read and the subscription would be lost otherwise.
    if _after is not None:
        last = backlog[-1].pk if backlog else _after
        async with sync_slot():
            more, more_queue = await sync_to_async(_more)(request, user.pk, last)
        backlog += more
        queue.update(more_queue)
    return _headers(StreamingHttpResponse(
        _events(subscription, backlog, queue, head=head, request=request, language=language),
        content_type="text/event-stream; charset=utf-8",
    ))


def _more(request, user_id: int, after: int):
    try:
        rows = events_for_user(user_id=user_id, after=after, limit=BACKLOG_LIMIT)
        return rows, positions(rows)
    finally:
        _let_go(request)


def _headers(response):
    response["Cache-Control"] = "no-cache, no-store"
    # nginx and other proxies must pass each event on at once, not buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response


async def _events(subscription, backlog: list[TaskEvent], queue: dict, *, head: str, request, language: str):
    keepalive = settings.EASEL_EVENTS_KEEPALIVE_SECONDS
    try:
        yield head
        sent = set()
        for event in backlog:
            sent.add(event.pk)
            yield event_text(event, request=request, language=language, queue=queue)
        newest = max(sent, default=0)
        while True:
            try:
                item = await asyncio.wait_for(subscription.queue.get(), keepalive)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is CLOSED:
                return
            if item.pk in sent:
                continue
            if sent and item.pk > newest:
                sent.clear()  # past the backlog: nothing can come twice any more
            # (The hub put the queue position on a `queued` row when it read it.)
            yield event_text(item, request=request, language=language)
    finally:
        subscription.close()


class EventStreamApi(APIView):
    """For the schema only: the URL routes to `event_stream` (async, outside DRF)."""

    @extend_schema(
        operation_id="events_stream",
        summary="Your task events (Server-Sent Events)",
        description=(
            "A `text/event-stream` of every task of the caller, pushed as they change: `created`, `queued` "
            "(`position` in the caller's view of the fair queue, `estimated_start_at` and `estimated_finish_at` "
            "from measured run times, null when unknown; as the queue moves, the status endpoint says the "
            "current ones), `started`, `progress` (`value`, `max`, `fraction`, `node`), `preview` "
            "(`url` of the latest frame), `completed` (`images` as in the status endpoint, `result_id`), `failed` "
            "(`code`, `message`), `cancelled`. Each event's `data` is JSON with `task_id` and has an `id:`; "
            "reconnect with the `Last-Event-ID` header (an integer; browsers send it) to get what was missed: "
            "endings are kept for "
            "`EASEL_EVENTS_KEEP_SECONDS`, progress only a minute. A comment line every 15 seconds keeps the "
            "connection open; `retry:` says when to reconnect. Token or session auth. A user may hold "
            "`EASEL_EVENTS_STREAMS_PER_USER` streams (default 10) per web process; one more is refused with 429 "
            "`too_many_streams`."
        ),
        parameters=[
            # (The `Last-Event-ID` header is described above, not declared: a declared header
            # would have every other header called "unexpected" by the schema's readers.)
            OpenApiParameter("last_event_id", {"type": "integer", "minimum": 0},
                             description="Start after this event id, as the `Last-Event-ID` header does "
                                         "(which wins when both are sent)."),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="The events."),
            204: OpenApiResponse(description="This server cannot hold a stream open (a WSGI server) and there is "
                                             "nothing after `Last-Event-ID`: poll the status endpoint instead."),
            400: error_response(400),
            401: error_response(401),
            429: error_response(429),
        },
        tags=["events"],
    )
    def get(self, request):  # pragma: no cover - never routed
        raise NotImplementedError


# drf-spectacular lists a URL whose view names an APIView class (as `as_view()` does).
event_stream.cls = EventStreamApi
event_stream.initkwargs = {}
