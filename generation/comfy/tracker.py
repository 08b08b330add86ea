"""Follow one prompt through ComfyUI's websocket frames, with /history as a fallback."""

from __future__ import annotations

from typing import Any

from .events import Event, Preview, TextFrame

_OUTCOMES = {
    "execution_success": "success",
    "execution_error": "error",
    "execution_interrupted": "interrupted",
}


class PromptTracker:
    """Follows one prompt_id through socket events.

    Everything is filtered on prompt_id because other prompts' progress can reach our
    socket (prompts submitted without a client_id are broadcast). Type-1 previews and
    type-3 text frames carry no prompt id, so they are attributed to the tracked prompt
    only while it is the one executing, i.e. after its execution_start (or any other
    frame of it, for a socket that reconnected mid-run) and before its end; ComfyUI runs
    one prompt at a time, so that window is unambiguous.
    """

    def __init__(self, prompt_id: str):
        self.prompt_id = prompt_id
        self.progress_value: int = 0
        self.progress_max: int = 0
        self.current_node: str | None = None
        self.preview: Preview | None = None
        self.images: list[dict] = []
        self.outcome: str | None = None
        self.error: dict | None = None
        self.interrupted: dict | None = None  # execution_interrupted data (node_id, node_type)
        self.cached_nodes: list[str] = []
        self.texts: list[TextFrame] = []
        self.started = False
        self.done = False
        self._executing = False  # inside our execution window (see class docstring)
        self._seen_images: set[tuple[str, str, str]] = set()

    def feed(self, item: Event | Preview | TextFrame | None) -> bool:
        """Consume one socket item; True when something user-visible changed."""
        if isinstance(item, Event):
            return self._feed_event(item)
        if isinstance(item, Preview):
            pid = item.prompt_id
            mine = pid == self.prompt_id if pid is not None else self._executing
            if mine and not self.done:
                self.preview = item
                return True
            return False
        if isinstance(item, TextFrame) and self._executing:
            self.texts.append(item)
        return False

    def _feed_event(self, ev: Event) -> bool:
        pid = ev.prompt_id
        if pid != self.prompt_id:
            # Another prompt started executing: ours cannot be running any more, so stop
            # claiming anonymous previews.
            if pid is not None and ev.type == "execution_start":
                self._executing = False
            return False
        if self.done:
            return False
        data = ev.data
        if ev.type == "execution_start":
            self.started = self._executing = True
            return True
        if ev.type in ("executing", "progress", "progress_state", "executed", "execution_cached"):
            # Any frame of ours means it is running, even if execution_start was missed.
            self.started = self._executing = True
        if ev.type == "execution_cached":
            self.cached_nodes = [str(n) for n in data.get("nodes") or []]
            return False
        if ev.type == "executing":
            node = data.get("node")
            if node is None:
                # The real end signal, sent after history is written for success,
                # error and interrupt alike.
                self.done = True
                self._executing = False
                self.current_node = None
                return True
            changed = node != self.current_node
            self.current_node = str(node)
            return changed
        if ev.type == "progress":
            value, maximum = _int(data.get("value")), _int(data.get("max"))
            changed = (value, maximum) != (self.progress_value, self.progress_max)
            self.progress_value, self.progress_max = value, maximum
            return changed
        if ev.type == "executed":
            return self._add_images((data.get("output") or {}).get("images"))
        if ev.type in _OUTCOMES:
            self.outcome = _OUTCOMES[ev.type]
            self.error = dict(data) if ev.type == "execution_error" else None
            self.interrupted = dict(data) if ev.type == "execution_interrupted" else None
            # Anonymous previews after this point are not ours any more.
            self._executing = False
            return True
        return False

    def apply_history(self, entry: dict) -> None:
        """Fill the result from a /history/{id} entry (it exists only once the prompt ended)."""
        status = entry.get("status") or {}
        messages = [m for m in status.get("messages") or [] if isinstance(m, list) and len(m) == 2]
        last_type, last_data = (messages[-1][0], messages[-1][1]) if messages else (None, {})
        if status.get("status_str") == "success" or (not status and entry.get("outputs")):
            self.outcome, self.error, self.interrupted = "success", None, None
        elif last_type == "execution_interrupted":
            # An interrupt is recorded as status_str "error" too; only the last message tells.
            self.outcome, self.error, self.interrupted = "interrupted", None, dict(last_data)
        else:
            self.outcome = "error"
            self.error = dict(last_data) if last_type == "execution_error" else {}
            self.interrupted = None
        for node_output in (entry.get("outputs") or {}).values():
            if isinstance(node_output, dict):
                self._add_images(node_output.get("images"))
        self.started = self.done = True
        self._executing = False
        self.current_node = None

    def _add_images(self, images: Any) -> bool:
        added = False
        for img in images or []:
            if not isinstance(img, dict) or not img.get("filename"):
                continue
            key = (img["filename"], img.get("subfolder") or "", img.get("type") or "output")
            if key not in self._seen_images:
                self._seen_images.add(key)
                self.images.append({"filename": key[0], "subfolder": key[1], "type": key[2]})
                added = True
        return added


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
