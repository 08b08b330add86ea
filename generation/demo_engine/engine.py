"""The executor: runs one prompt at a time, emitting ComfyUI's WebSocket messages in ComfyUI's order.

Ported from ComfyUI 0.3.64 ``execution.py`` / ``main.py`` where the order is observable:

    execution_start · execution_cached · per node [progress_state(running) · executing · … ·
    progress_state(finished)] · executed (output nodes) · execution_success | execution_error |
    execution_interrupted · (history written) · status · executing(node=None)

Node order follows ComfyUI's ``ExecutionList`` (pending nodes in discovery order, output-adjacent nodes first).
The demo engine has no cache: every run executes every node, and ``execution_cached`` always lists ``[]``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from . import frames
from .nodes import NODE_CLASSES, NodeResult
from .options import EngineOptions, Faults, StepFaults
from .prompt_queue import PromptQueue, QueueItem
from .sockets import SocketHub
from .validation import full_type_name, is_link

log = logging.getLogger(__name__)


class InterruptProcessing(Exception):
    """Raised at a node or step boundary after ``POST /interrupt`` (ComfyUI's InterruptProcessingException)."""


@dataclass
class Stats:
    """Test-only bookkeeping for ``GET /demo/stats``."""

    submissions: dict[str, int] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)


def now_ms() -> int:
    return int(time.time() * 1000)


def format_value(value: Any) -> Any:
    """``current_inputs`` values: JSON scalars as they are, anything else as its string form (ComfyUI)."""
    return value if value is None or isinstance(value, (int, float, bool, str)) else str(value)


class ExecutionList:
    """Which node runs next: a port of ComfyUI's ``ExecutionList`` without caching or lazy inputs."""

    def __init__(self, prompt: dict[str, Any], output_nodes: set[str]) -> None:
        self.prompt = prompt
        self.output_nodes = output_nodes
        self.pending: dict[str, bool] = {}  # insertion order matters: it decides ties
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, dict[int, bool]]] = {}

    def add_node(self, node_id: str) -> None:
        stack, links = [node_id], []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.prompt[unique_id]["inputs"].values():
                if is_link(value):
                    stack.append(value[0])
                    links.append((value[0], value[1], unique_id))
        for source, slot, target in links:
            if target not in self.blocking[source]:
                self.blocking[source][target] = {}
                self.block_count[target] += 1
            self.blocking[source][target][slot] = True

    def is_empty(self) -> bool:
        return not self.pending

    def next_node(self) -> str:
        available = [node for node in self.pending if self.block_count[node] == 0]
        # ComfyUI's ux_friendly_pick_node: outputs first, then nodes feeding an output, then two levels away.
        for node in available:
            if node in self.output_nodes:
                return node
        for node in available:
            if any(blocked in self.output_nodes for blocked in self.blocking[node]):
                return node
        for node in available:
            if any(second in self.output_nodes for blocked in self.blocking[node] for second in self.blocking[blocked]):
                return node
        return available[0]

    def complete(self, node_id: str) -> None:
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
        del self.blocking[node_id]
        del self.pending[node_id]


class ProgressRegistry:
    """``progress_state`` messages: the cumulative state of every node started so far in this prompt."""

    def __init__(self, hub: SocketHub, prompt_id: str, sid: str | None) -> None:
        self.hub, self.prompt_id, self.sid = hub, prompt_id, sid
        self.nodes: dict[str, dict[str, Any]] = {}

    async def _send(self) -> None:
        await self.hub.send("progress_state", {"prompt_id": self.prompt_id,
                                               "nodes": {k: dict(v) for k, v in self.nodes.items()}}, self.sid)

    async def start(self, node_id: str) -> None:
        self.nodes[node_id] = {"value": 0.0, "max": 1.0, "state": "running", "node_id": node_id,
                               "prompt_id": self.prompt_id, "display_node_id": node_id, "parent_node_id": None,
                               "real_node_id": node_id}
        await self._send()

    async def update(self, node_id: str, value: int, maximum: int) -> None:
        self.nodes[node_id].update(value=value, max=maximum, state="running")
        await self._send()

    async def finish(self, node_id: str) -> None:
        entry = self.nodes[node_id]
        entry.update(value=entry["max"], state="finished")
        await self._send()


@dataclass
class Run:
    """Everything about the prompt being executed."""

    item: QueueItem
    faults: StepFaults
    progress: ProgressRegistry
    messages: list[list[Any]] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    results: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ui_outputs: dict[str, Any] = field(default_factory=dict)
    ui_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_id(self) -> str:
        return self.item[1]

    @property
    def prompt(self) -> dict[str, Any]:
        return self.item[2]

    @property
    def client_id(self) -> str | None:
        return self.item[3].get("client_id")


class NodeRunContext:
    """The :class:`~generation.demo_engine.nodes.NodeContext` handed to a running node."""

    def __init__(self, executor: "Executor", run: Run, node_id: str) -> None:
        self.executor, self.run, self.node_id = executor, run, node_id
        self.options = executor.options
        self.prompt = run.prompt
        self.prompt_id = run.prompt_id

    async def node_pause(self) -> None:
        await asyncio.sleep(self.executor.faults.node_delay)

    async def sampler_step(self, step: int, steps: int, preview: Callable[[], bytes]) -> None:
        run, hub = self.run, self.executor.hub
        await asyncio.sleep(self.executor.faults.step_delay)
        faults = run.faults
        if faults.die_at_step is not None and step >= faults.die_at_step:
            print(f"demo engine: die_at_step={faults.die_at_step} reached, exiting with status 3", flush=True)
            os._exit(3)
        if faults.fail_at_step is not None and step >= faults.fail_at_step:
            at, faults.fail_at_step = faults.fail_at_step, None
            raise RuntimeError(f"Injected failure at sampler step {at} by the Easel demo engine (fail_at_step)")
        if faults.drop_socket_at_step is not None and step >= faults.drop_socket_at_step:
            faults.drop_socket_at_step = None
            if run.client_id is not None:
                hub.close_client(run.client_id)
        # Like ComfyUI's progress hook: an interrupt raises before this step's progress is reported.
        self.executor.check_interrupt()
        jpeg = await asyncio.to_thread(preview)
        await run.progress.update(self.node_id, step, steps)
        await hub.send_step(run.client_id, {"value": step, "max": steps, "prompt_id": run.prompt_id,
                                            "node": self.node_id},
                            jpeg, frames.preview_metadata(self.node_id, run.prompt_id))

    async def node_progress(self, value: int, total: int) -> None:
        """A ComfyUI ``ProgressBar`` update without a preview (ImageUpscaleWithModel's tiles): the same hook as a
        sampler step (interrupt check, ``progress_state``, ``progress``) but no binary frame and no step faults,
        which are defined on sampler steps."""
        run = self.run
        self.executor.check_interrupt()
        await run.progress.update(self.node_id, value, total)
        await self.executor.hub.send("progress", {"value": value, "max": total, "prompt_id": run.prompt_id,
                                                  "node": self.node_id}, run.client_id)


class Executor:
    def __init__(self, options: EngineOptions, hub: SocketHub, queue: PromptQueue, stats: Stats) -> None:
        self.options, self.hub, self.queue, self.stats = options, hub, queue, stats
        self.faults: Faults = options.faults
        self.current: Run | None = None
        self.last_node_id: str | None = None
        self._interrupted = False

    # --- control -------------------------------------------------------------------------------------------------

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Global interrupt, or targeted (a no-op unless ``prompt_id`` is the running prompt)."""
        if prompt_id and not self.queue.is_running(prompt_id):
            log.info("Prompt %s is not currently running, skipping interrupt", prompt_id)
            return
        self._interrupted = True

    def check_interrupt(self) -> None:
        if self._interrupted:
            self._interrupted = False
            raise InterruptProcessing("Processing interrupted")

    @property
    def current_client_id(self) -> str | None:
        return self.current.client_id if self.current else None

    async def run_forever(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                await self.execute(item)
            except Exception:  # noqa: BLE001 - keep serving even if a bug slips through
                log.exception("demo engine executor crashed on %s", item[1])
                self.queue.running.pop(item[1], None)

    # --- one prompt ----------------------------------------------------------------------------------------------

    async def _message(self, run: Run, event: str, data: dict[str, Any], broadcast: bool = False) -> None:
        """ComfyUI's ``add_message``: timestamped, recorded for history, sent only when there is a client id
        (or for broadcast messages)."""
        data = {**data, "timestamp": now_ms()}
        run.messages.append([event, data])
        if run.client_id is not None or broadcast:
            await self.hub.send(event, data, run.client_id)

    async def execute(self, item: QueueItem) -> None:
        prompt_id, prompt, outputs = item[1], item[2], item[4]
        run = Run(item, self.faults.take_step_faults(), ProgressRegistry(self.hub, prompt_id, item[3].get("client_id")))
        self.current, self._interrupted = run, False  # an interrupt sent while idle does not carry over
        self.stats.executed.append(prompt_id)

        await self._message(run, "execution_start", {"prompt_id": prompt_id})
        await self._message(run, "execution_cached", {"nodes": [], "prompt_id": prompt_id})
        output_nodes = {n for n in prompt if NODE_CLASSES[prompt[n]["class_type"]].output_node}
        order = ExecutionList(prompt, output_nodes)
        for output in outputs:
            order.add_node(output)

        success = True
        while not order.is_empty():
            node_id = order.next_node()
            if not await self._execute_node(run, node_id):
                success = False
                break
            order.complete(node_id)
        if success:
            await self._message(run, "execution_success", {"prompt_id": prompt_id})

        self.last_node_id = None
        self.current = None
        status = {"status_str": "success" if success else "error", "completed": success, "messages": run.messages}
        await self.queue.task_done(item, {"outputs": run.ui_outputs, "meta": run.ui_meta}, status)
        if run.client_id is not None:  # the end-of-prompt marker comes after history is written
            await self.hub.send("executing", {"node": None, "prompt_id": prompt_id}, run.client_id)

    def _inputs(self, run: Run, node_id: str) -> dict[str, Any]:
        """Resolve links to upstream outputs; widget values were already converted by validation."""
        values = {}
        for name, value in run.prompt[node_id]["inputs"].items():
            values[name] = run.results[value[0]][value[1]] if is_link(value) else value
        return values

    async def _execute_node(self, run: Run, node_id: str) -> bool:
        class_type = run.prompt[node_id]["class_type"]
        node_class = NODE_CLASSES[class_type]
        await run.progress.start(node_id)
        inputs: dict[str, Any] = {}
        try:
            inputs = self._inputs(run, node_id)
            if run.client_id is not None:
                self.last_node_id = node_id
                await self.hub.send("executing", {"node": node_id, "display_node": node_id,
                                                  "prompt_id": run.prompt_id}, run.client_id)
            self.check_interrupt()  # ComfyUI checks before every node
            result: NodeResult = await node_class.function(NodeRunContext(self, run, node_id), **inputs)
        except InterruptProcessing:
            await self._message(run, "execution_interrupted", {
                "prompt_id": run.prompt_id, "node_id": node_id, "node_type": class_type,
                "executed": list(run.executed)}, broadcast=True)
            return False
        except Exception as ex:  # noqa: BLE001 - any node failure becomes an execution_error, as in ComfyUI
            typ, _, tb = sys.exc_info()
            await self._message(run, "execution_error", {
                "prompt_id": run.prompt_id, "node_id": node_id, "node_type": class_type,
                "executed": list(run.executed), "exception_message": f"{ex}\n",
                "exception_type": full_type_name(typ or type(ex)), "traceback": traceback.format_tb(tb),
                "current_inputs": {name: [format_value(value)] for name, value in inputs.items()},
                "current_outputs": list(run.results)})
            return False

        run.results[node_id] = result.outputs
        if result.ui is not None:
            run.ui_outputs[node_id] = result.ui
            run.ui_meta[node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None,
                                    "real_node_id": node_id}
            if run.client_id is not None:
                await self.hub.send("executed", {"node": node_id, "display_node": node_id, "output": result.ui,
                                                 "prompt_id": run.prompt_id}, run.client_id)
        await run.progress.finish(node_id)
        run.executed.append(node_id)
        return True
