"""The prompt queue and history, after ComfyUI's ``execution.PromptQueue``.

Pending items live in a heap keyed on ``number`` (``front: true`` submits a negative number, so it runs first),
and ``GET /queue`` returns the heap array unsorted, exactly like ComfyUI. Every change of the queue broadcasts a
``status`` message through the ``on_change`` callback.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
from typing import Any, Awaitable, Callable

#: ComfyUI keeps at most this many history entries.
MAXIMUM_HISTORY_SIZE = 10000

QueueItem = list[Any]  # [number, prompt_id, prompt, extra_data, outputs_to_execute]


class PromptQueue:
    def __init__(self, on_change: Callable[[], Awaitable[None]]) -> None:
        self._on_change = on_change
        self._heap: list[tuple[float, int, QueueItem]] = []
        self._order = itertools.count()  # tie-breaker so equal numbers never compare the items
        self._ready = asyncio.Event()
        self.running: dict[str, QueueItem] = {}
        self.history: dict[str, dict[str, Any]] = {}

    # --- queue ---------------------------------------------------------------------------------------------------

    @property
    def remaining(self) -> int:
        """``queue_remaining``: pending plus running."""
        return len(self._heap) + len(self.running)

    def status(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.remaining}}

    async def put(self, item: QueueItem) -> None:
        heapq.heappush(self._heap, (item[0], next(self._order), item))
        self._ready.set()
        await self._on_change()

    async def get(self) -> QueueItem:
        """Wait for the lowest-numbered item, mark it running, and broadcast the new status."""
        while not self._heap:
            self._ready.clear()
            await self._ready.wait()
        _, _, item = heapq.heappop(self._heap)
        self.running[item[1]] = item
        await self._on_change()
        return item

    def snapshot(self) -> dict[str, list[QueueItem]]:
        """``GET /queue``: running items and the pending heap array as it is (not in execution order)."""
        return {
            "queue_running": [copy.deepcopy(item) for item in self.running.values()],
            "queue_pending": [copy.deepcopy(entry[2]) for entry in self._heap],
        }

    async def delete(self, prompt_id: str) -> bool:
        """Remove a pending item; the running one cannot be deleted. Broadcasts status when something went."""
        for index, entry in enumerate(self._heap):
            if entry[2][1] == prompt_id:
                if len(self._heap) == 1:
                    await self.wipe()  # ComfyUI wipes (one status) and then reports again (second status)
                else:
                    self._heap.pop(index)
                    heapq.heapify(self._heap)
                await self._on_change()
                return True
        return False

    async def wipe(self) -> None:
        """``clear``: drop every pending item (the running one carries on)."""
        self._heap.clear()
        await self._on_change()

    def is_running(self, prompt_id: str) -> bool:
        return prompt_id in self.running

    # --- history -------------------------------------------------------------------------------------------------

    async def task_done(self, item: QueueItem, result: dict[str, Any], status: dict[str, Any]) -> None:
        """Move a finished item into history (a re-used prompt id overwrites in place), then broadcast status."""
        self.running.pop(item[1], None)
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        self.history[item[1]] = {
            "prompt": copy.deepcopy(item),
            "outputs": result["outputs"],
            "status": status,
            "meta": result["meta"],
        }
        await self._on_change()

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None,
                    offset: int = -1) -> dict[str, Any]:
        """ComfyUI's ``get_history``: by id, or the last ``max_items`` (default offset) in insertion order."""
        if prompt_id is not None:
            entry = self.history.get(prompt_id)
            return {prompt_id: copy.deepcopy(entry)} if entry is not None else {}
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: dict[str, Any] = {}
        for index, key in enumerate(self.history):
            if index >= offset:
                out[key] = copy.deepcopy(self.history[key])
                if max_items is not None and len(out) >= max_items:
                    break
        return out

    def delete_history(self, prompt_id: str) -> None:
        self.history.pop(prompt_id, None)

    def wipe_history(self) -> None:
        self.history.clear()
