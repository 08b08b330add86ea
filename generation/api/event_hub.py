"""One reader of task events per web process, shared by every stream that process serves.

A viewer costs a queue here, not a database connection nor a query: the hub reads "every
event after the last one seen" once per wake and hands each row to the streams of its
user. It wakes
- on PostgreSQL, on `NOTIFY easel_events` (sent by generation.events right after each
  change's transaction commits), on one listening connection of its own; and also
  every few seconds, in case a notification was lost with that connection;
- on SQLite, every EASEL_EVENTS_POLL_INTERVAL (0.5 s): one indexed query per tick.

Ids come from one sequence but transactions commit in any order: a row with a smaller id
may appear after a larger one. The hub keeps reading from below such a gap until it is
filled or is older than GAP_WAIT (a rolled-back transaction leaves a hole for ever), and
never hands a row over twice.

The hub lives in the server's event loop (uvicorn's, under the ASGI worker); its ORM reads
run in one thread of its own, which keeps one database connection. `config.shutdown` ends
every stream when the server stops, so a graceful stop does not wait for viewers.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connection

from config import shutdown

from ..events import CHANNEL, events_after, events_latest_id
from ..outlook import NONE, task_outlook
from ..representation import outlook_answer
from ..models import GenerationTask, TaskEvent, TaskEventKind

logger = logging.getLogger(__name__)

GAP_WAIT = 5.0  # seconds a missing id is waited for
QUEUE_SIZE = 1000  # events a slow stream may have waiting before it is closed (it reconnects)
PG_SAFETY_POLL = 5.0  # seconds between reads on PostgreSQL when no notification came
CLOSED = object()  # put on a queue: the stream ends
EVENTS_PER_READ = 1000


def positions(rows: list[TaskEvent]) -> dict[int, dict]:
    """The place in the queue and the estimated start and finish, now, of each task with a
    `queued` event among the rows (generation.outlook)."""
    ids = {row.task_id for row in rows if row.kind == TaskEventKind.QUEUED}
    if not ids:
        return {}
    columns = ("pk", "user_id", "status", "backend_id", "model_name", "started_at")
    return {task.pk: outlook_answer(task_outlook(task)) for task in GenerationTask.objects.filter(pk__in=ids).only(*columns)}


def _read_after(after: int) -> list[TaskEvent]:
    rows = events_after(after=after, limit=EVENTS_PER_READ)
    queue = positions(rows)
    for row in rows:
        if row.kind == TaskEventKind.QUEUED:
            row.position = queue.get(row.task_id, outlook_answer(NONE))
    return rows


class TooManyStreams(Exception):
    """The user holds as many streams in this process as one may."""


class Subscription:
    def __init__(self, hub: "EventHub", user_id: int):
        self.hub = hub
        self.user_id = user_id
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)

    def close(self) -> None:
        self.hub.unsubscribe(self)


class EventHub:
    def __init__(self):
        self.loop: asyncio.AbstractEventLoop | None = None
        self.streams: dict[int, set[Subscription]] = {}
        self.floor = 0  # every event with an id up to this one was handed over
        self.above: set[int] = set()  # ids above the floor already handed over
        self.gap_since: float | None = None
        self.ready: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.wake: asyncio.Event | None = None
        self.stopped = False
        self.reads = 0  # queries run (the tests and the benchmark read it)
        self.listening = False  # a LISTEN connection is open (PostgreSQL)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-events")

    # --- streams --------------------------------------------------------------------

    async def subscribe(self, user_id: int, *, limit: int = 0) -> Subscription:
        """A queue of this user's new events; returns once the hub reads, so whatever is
        committed after this call reaches the queue (the caller reads older ones itself).
        TooManyStreams when the user holds `limit` streams here already (0: no limit)."""
        self._ensure_running()
        await self.ready.wait()
        if limit and len(self.streams.get(user_id, ())) >= limit:
            raise TooManyStreams
        subscription = Subscription(self, user_id)
        if self.stopped:
            subscription.queue.put_nowait(CLOSED)
        self.streams.setdefault(user_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        streams = self.streams.get(subscription.user_id)
        if streams is not None:
            streams.discard(subscription)
            if not streams:
                del self.streams[subscription.user_id]

    @property
    def stream_count(self) -> int:
        return sum(len(s) for s in self.streams.values())

    def stop(self) -> None:
        """The server is stopping: every stream ends (clients reconnect elsewhere or later)."""
        self.stopped = True
        for streams in list(self.streams.values()):
            for subscription in list(streams):
                _put(subscription, CLOSED)
        if self.task is not None:
            self.task.cancel()

    # --- the reader -------------------------------------------------------------------

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self.task is not None and self.loop is loop and not self.task.done():
            return
        self.loop = loop
        self.ready = asyncio.Event()
        self.wake = asyncio.Event()
        self.task = loop.create_task(self._run(), name="easel-event-hub")

    async def _db(self, function, *args, **kwargs):
        def call():
            close_old_connections()  # a connection past its age or broken is replaced
            try:
                return function(*args, **kwargs)
            except Exception:
                connection.close()
                raise
        self.reads += 1
        return await self.loop.run_in_executor(self.executor, lambda: call())

    async def _run(self) -> None:
        while not self.stopped:
            try:
                self.floor = await self._db(events_latest_id)
                self.above.clear()
                self.ready.set()
                if connection.vendor == "postgresql":
                    await self._listen()
                else:
                    await self._poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event hub: reading events failed; trying again in 2 s", exc_info=True)
                await asyncio.sleep(2)

    async def _poll(self) -> None:
        interval = settings.EASEL_EVENTS_POLL_INTERVAL
        while not self.stopped:
            if self.streams:
                await self._read()
            await asyncio.sleep(interval)

    async def _listen(self) -> None:
        import psycopg

        params = connection.get_connection_params()
        for key in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(key, None)
        listener = await psycopg.AsyncConnection.connect(autocommit=True, **params)
        try:
            await listener.execute(f"LISTEN {CHANNEL}")
            self.listening = True
            # Whatever was committed while the connection was being opened.
            await self._read()
            reader = asyncio.ensure_future(self._notified(listener))
            try:
                while not self.stopped:
                    try:
                        await asyncio.wait_for(self.wake.wait(), PG_SAFETY_POLL)
                    except asyncio.TimeoutError:
                        pass
                    if reader.done():
                        reader.result()  # the connection broke: raise, and start again
                    self.wake.clear()
                    if self.streams:
                        await self._read()
            finally:
                reader.cancel()
        finally:
            self.listening = False
            await listener.close()

    async def _notified(self, listener) -> None:
        async for _notify in listener.notifies():
            # Several notifications before the hub wakes make one read.
            self.wake.set()

    async def _read(self) -> None:
        while True:
            floor = self.floor
            rows: list[TaskEvent] = await self._db(_read_after, floor)
            for row in rows:
                if row.id in self.above:
                    continue
                self.above.add(row.id)
                for subscription in list(self.streams.get(row.user_id, ())):
                    _put(subscription, row)
            self._advance()
            # A full batch: more are waiting (unless a gap holds the floor where it was).
            if len(rows) < EVENTS_PER_READ or self.floor == floor:
                return

    def _advance(self) -> None:
        while self.floor + 1 in self.above:
            self.floor += 1
            self.above.discard(self.floor)
        if not self.above:
            self.gap_since = None
            return
        # A hole below ids already seen: a transaction not committed yet, or rolled back.
        now = time.monotonic()
        if self.gap_since is None:
            self.gap_since = now
        elif now - self.gap_since > GAP_WAIT:
            self.floor = min(self.above)
            self.above.discard(self.floor)
            self.gap_since = None
            self._advance()


def _put(subscription: Subscription, item) -> None:
    try:
        subscription.queue.put_nowait(item)
    except asyncio.QueueFull:
        # Too slow a reader: end its stream; it reconnects with Last-Event-ID and loses nothing.
        subscription.hub.unsubscribe(subscription)
        while not subscription.queue.empty():
            subscription.queue.get_nowait()
        subscription.queue.put_nowait(CLOSED)


hub = EventHub()
shutdown.on_stop(hub.stop)
