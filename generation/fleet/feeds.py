"""One WebSocket per backend for every prompt a pump follows there.

A socket per prompt cost a connection, a handshake and a reader per task (and the
server's `status` frame on every connect). A pump instead submits all its prompts on a
backend under one client id of its own (`Feeds.client_id`), so ComfyUI sends all their
frames to one socket; a reader thread per socket routes each frame by its `prompt_id`
to the subscription of the runner following that prompt. Frames that carry no prompt
id (type-1 previews, type-3 text) go to the prompt executing at that moment (ComfyUI
runs one prompt at a time); `status` broadcasts are dropped (no runner reads them).

A prompt submitted under another client id (another pump's that ended, or a task
submitted before this) is followed on a socket opened with that id: ComfyUI sends its
frames only there. Reconnecting under a client id the server still holds makes the
old socket's cleanup unregister the new one (ComfySocket's docstring), so a pump closes
its sockets before it lets go of its tasks (`PumpRun._follow`), and a dropped socket is
closed before the next one for the same id is opened (`BackendFeed._close`).

The runner's own safety net stays: a subscription silent for a while makes the runner
ask /history and /queue directly, so a frame lost with a socket is never a lost task.
"""
from __future__ import annotations

import logging
import queue
import threading
import time

from ..comfy import ComfyClient, ComfyError, ComfySocketClosed
from ..comfy.events import Event, Preview

logger = logging.getLogger(__name__)

# A socket no prompt has used for this long is closed (a backend with no work keeps none).
IDLE_SECONDS = 30.0
# How long the reader blocks in one receive before it looks whether it should stop.
READ_SECONDS = 1.0
# The frames of a prompt that say it is the one executing now, and those that end it.
_RUNNING = frozenset({"execution_start", "executing", "progress", "progress_state", "executed", "execution_cached"})
_ENDED = frozenset({"execution_success", "execution_error", "execution_interrupted"})
_CLOSED = object()


class FeedsClosed(Exception):
    """The pump is handing over: no socket opens any more (not a backend fault)."""


class Subscription:
    """The frames of one prompt, with the `recv`/`close` of a ComfySocket."""

    def __init__(self, feed: "BackendFeed", prompt_id: str):
        self.feed = feed
        self.prompt_id = prompt_id
        self.items: queue.SimpleQueue = queue.SimpleQueue()

    def recv(self, timeout: float):
        try:
            item = self.items.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        if item is _CLOSED:
            self.items.put(_CLOSED)  # every later recv says so too
            raise ComfySocketClosed(f"websocket closed: {self.feed.error or 'closed'}")
        return item

    def close(self) -> None:
        self.feed.unsubscribe(self)


class BackendFeed:
    """One open socket under one client id, and the prompts that listen on it."""

    def __init__(self, client: ComfyClient, client_id: str):
        self.client_id = client_id
        self.where = client.base_url
        self.socket = client.open_socket(client_id)  # ComfyUnreachable goes to the runner
        self.lock = threading.Lock()
        self.subscribers: dict[str, Subscription] = {}
        self.executing: str | None = None
        self.stopping = False  # asked to close: the reader closes the socket within READ_SECONDS
        self.closed = False
        self.error = ""
        self.idle_since = time.monotonic()
        self.frames = 0
        self.reader = threading.Thread(target=self._read, name=f"easel-feed-{client_id[-12:]}", daemon=True)
        self.reader.start()

    def subscribe(self, prompt_id: str) -> Subscription:
        sub = Subscription(self, prompt_id)
        with self.lock:
            if self.closed or self.stopping:
                raise ComfySocketClosed(f"websocket closed: {self.error or 'closed'}")
            old = self.subscribers.get(prompt_id)
            self.subscribers[prompt_id] = sub
        if old is not None:
            old.items.put(_CLOSED)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self.lock:
            if self.subscribers.get(sub.prompt_id) is sub:
                del self.subscribers[sub.prompt_id]
                if not self.subscribers:
                    self.idle_since = time.monotonic()

    def idle_for(self) -> float:
        with self.lock:
            return 0.0 if self.subscribers else time.monotonic() - self.idle_since

    def _read(self) -> None:
        reason = "closed by Easel"
        try:
            while not self.stopping:
                try:
                    item = self.socket.recv(timeout=READ_SECONDS)
                except ComfyError as exc:  # dropped, or a frame that cannot be read
                    reason = str(exc)
                    break
                if item is not None:
                    self.frames += 1
                    self._route(item)
        except Exception as exc:  # never leave the subscribers waiting on a dead reader
            logger.exception("feed %s on %s failed", self.client_id, self.where)
            reason = str(exc)
        finally:
            self._close(reason)

    def _route(self, item) -> None:
        prompt_id = item.prompt_id if isinstance(item, (Event, Preview)) else None
        with self.lock:
            if isinstance(item, Event):
                if prompt_id is None:
                    return  # `status` and the like: nobody follows the queue by them
                if item.type in _ENDED or (item.type == "executing" and item.data.get("node") is None):
                    if self.executing == prompt_id:
                        self.executing = None
                elif item.type in _RUNNING:
                    self.executing = prompt_id
            sub = self.subscribers.get(prompt_id or self.executing or "")
        if sub is not None:
            sub.items.put(item)

    def _close(self, reason: str) -> None:
        """Only the reader closes the socket (it holds the socket's read side)."""
        with self.lock:
            self.closed = True
            self.error = reason
            subscribers = list(self.subscribers.values())
            self.subscribers.clear()
        # Closed before anyone reconnects under the same client id (see the module docstring).
        self.socket.close()
        for sub in subscribers:
            sub.items.put(_CLOSED)

    def close(self) -> None:
        """Stop reading and close the socket; returns once it is closed."""
        self.stopping = True
        if self.reader is not threading.current_thread():
            self.reader.join(timeout=READ_SECONDS + 3)


class Feeds:
    """A pump's sockets, one per (backend, client id)."""

    def __init__(self, owner: str):
        # ComfyUI takes any client id string; Easel's column holds 64 characters.
        self.owner = owner[-48:]
        self.lock = threading.Lock()
        self.feeds: dict[tuple[str, str], BackendFeed] = {}
        # One lock per socket being opened: a backend slow to answer holds up only the
        # prompts that wait for that socket.
        self.opening: dict[tuple[str, str], threading.Lock] = {}
        self.stopped = False
        # Held for the whole of close_all: a second caller returns only once every socket is closed.
        self.closing = threading.Lock()

    def client_id(self, backend_id: int) -> str:
        """The client id this pump submits its prompts on one backend under."""
        return f"{self.owner}-b{backend_id}"

    def subscribe(self, client: ComfyClient, client_id: str, prompt_id: str) -> Subscription:
        key = (client.base_url, client_id)
        with self.lock:
            opening = self.opening.setdefault(key, threading.Lock())
        with opening:
            with self.lock:
                if self.stopped:
                    raise FeedsClosed()
                feed = self.feeds.get(key)
            if feed is not None and not (feed.closed or feed.stopping):
                try:
                    return feed.subscribe(prompt_id)
                except ComfySocketClosed:
                    pass  # closed just now: open another below
            if feed is not None:
                feed.close()  # its socket is closed before the same client id connects again
            feed = BackendFeed(client, client_id)
            with self.lock:
                self.feeds[key] = feed
            return feed.subscribe(prompt_id)

    def sweep(self) -> None:
        """Close the sockets no prompt has used for IDLE_SECONDS (their readers close them
        within READ_SECONDS, without holding up the pump's loop), and forget closed ones:
        a stopping one stays listed until then, so its client id is not opened again
        before its socket is closed (`subscribe` waits for it)."""
        with self.lock:
            for key, feed in list(self.feeds.items()):
                if feed.closed:
                    del self.feeds[key]
                elif feed.idle_for() > IDLE_SECONDS:
                    feed.stopping = True

    def close_all(self) -> None:
        """Close every socket and return once they are closed (all at once: each reader
        notices within READ_SECONDS). No socket opens after this."""
        with self.closing:
            with self.lock:
                self.stopped = True
                feeds = list(self.feeds.values())
                self.feeds.clear()
            for feed in feeds:
                feed.stopping = True
            for feed in feeds:
                feed.close()

    def close_backend(self, base_url: str) -> None:
        """Close this pump's sockets on one backend (another pump drives it now) and
        return once they are closed; a later prompt there opens a new one."""
        with self.lock:
            feeds = [feed for key, feed in self.feeds.items() if key[0] == base_url]
        for feed in feeds:
            feed.stopping = True
        for feed in feeds:
            feed.close()

    def count(self) -> int:
        with self.lock:
            return sum(1 for feed in self.feeds.values() if not (feed.closed or feed.stopping))
