"""A pump's one socket per backend (generation.fleet.feeds): frames routed by prompt id.

Against the demo engine on a real port (it follows ComfyUI's socket rules: one socket
per client id gets that client's frames), and, for the frames ComfyUI sends without a
prompt id, over a scripted socket.
"""
from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path

import pytest

from generation.comfy import ComfyClient, ComfySocketClosed, PromptTracker
from generation.comfy.events import Event, Preview
from generation.fleet import feeds as feeds_module
from generation.fleet.feeds import BackendFeed, Feeds, FeedsClosed

ROOT = Path(__file__).resolve().parents[2]
GRAPH = json.loads((ROOT / "models_catalog" / "builtin" / "txt2img_api.json").read_text())


def graph(seed: int, steps: int = 4) -> dict:
    prompt = copy.deepcopy(GRAPH)
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = "demo-sd15.safetensors"
        elif node["class_type"] == "KSampler":
            inputs.update(seed=seed, steps=steps)
        elif node["class_type"] == "EmptyLatentImage":
            inputs.update(width=64, height=64, batch_size=1)
    return prompt


def follow(sub, prompt_id: str, timeout: float = 20) -> tuple[PromptTracker, list]:
    tracker, items = PromptTracker(prompt_id), []
    deadline = time.monotonic() + timeout
    while not tracker.done:
        assert time.monotonic() < deadline, "the prompt's end never reached its subscription"
        item = sub.recv(timeout=0.5)
        if item is not None:
            items.append(item)
            tracker.feed(item)
    return tracker, items


def test_prompts_on_one_backend_share_one_socket_and_each_gets_only_its_frames(demo_engine):
    client = ComfyClient(demo_engine.url)
    feeds = Feeds("pump1-test")
    client_id = feeds.client_id(7)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    subs = [feeds.subscribe(client, client_id, prompt_id) for prompt_id in ids]
    try:
        for n, prompt_id in enumerate(ids):
            client.submit(prompt=graph(n), prompt_id=prompt_id, client_id=client_id)
        for sub, prompt_id in zip(subs, ids):
            tracker, items = follow(sub, prompt_id)
            assert tracker.outcome == "success" and tracker.images
            assert tracker.progress_max == 4 and tracker.preview is not None
            # Routed: nothing of another prompt, and no `status` broadcasts.
            assert {item.prompt_id for item in items if isinstance(item, (Event, Preview))} == {prompt_id}
        assert feeds.count() == 1
        assert demo_engine.stats()["sockets"] == 1
    finally:
        feeds.close_all()
    assert demo_engine.stats()["sockets"] == 0
    with pytest.raises(FeedsClosed):
        feeds.subscribe(client, client_id, ids[0])


def test_a_dropped_socket_closes_every_subscription_and_the_next_subscribe_opens_another(make_engine):
    engine = make_engine("--drop-socket-at-step", "2")
    client = ComfyClient(engine.url)
    feeds = Feeds("pump2-test")
    client_id = feeds.client_id(1)
    first, waiting = str(uuid.uuid4()), str(uuid.uuid4())
    sub, other = feeds.subscribe(client, client_id, first), feeds.subscribe(client, client_id, waiting)
    try:
        client.submit(prompt=graph(1), prompt_id=first, client_id=client_id)
        for subscription in (sub, other):
            with pytest.raises(ComfySocketClosed):
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    subscription.recv(timeout=0.5)
            with pytest.raises(ComfySocketClosed):  # and it stays closed
                subscription.recv(timeout=0)
        again = feeds.subscribe(client, client_id, first)
        assert again.feed is not sub.feed and feeds.count() == 1
        # The new socket carries the rest of the prompt (or it ended meanwhile: history has it).
        assert client.history(first) or follow(again, first)[0].done
    finally:
        feeds.close_all()


def test_an_unused_socket_is_closed_by_the_sweep(demo_engine, monkeypatch):
    monkeypatch.setattr(feeds_module, "IDLE_SECONDS", 0.0)
    client = ComfyClient(demo_engine.url)
    feeds = Feeds("pump3-test")
    sub = feeds.subscribe(client, feeds.client_id(1), str(uuid.uuid4()))
    feeds.sweep()
    assert feeds.count() == 1  # in use
    sub.close()
    time.sleep(0.01)
    feeds.sweep()
    assert feeds.count() == 0
    deadline = time.monotonic() + 5
    while demo_engine.stats()["sockets"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert demo_engine.stats()["sockets"] == 0
    feeds.sweep()
    assert not feeds.feeds
    feeds.close_all()


class ScriptedSocket:
    """Frames as ComfySocket.recv returns them, one per call, then silence."""

    def __init__(self, items):
        self.items = list(items)
        self.closed = False

    def recv(self, timeout):
        if self.items:
            return self.items.pop(0)
        time.sleep(min(timeout, 0.05))
        return None

    def close(self):
        self.closed = True


class ScriptedClient:
    base_url = "http://scripted"

    def __init__(self, items):
        self.socket = ScriptedSocket(items)

    def open_socket(self, client_id):
        return self.socket


def test_frames_without_a_prompt_id_go_to_the_prompt_executing():
    a, b = "prompt-a", "prompt-b"
    anonymous = Preview(image=b"jpeg", image_format="jpeg")
    script = [
        Event("status", {"status": {"exec_info": {"queue_remaining": 2}}}),
        Event("execution_start", {"prompt_id": a}),
        anonymous,
        Event("execution_success", {"prompt_id": a}),
        Event("executing", {"node": None, "prompt_id": a}),
        anonymous,  # between two prompts: nobody's
        Event("execution_start", {"prompt_id": b}),
        anonymous,
    ]
    client = ScriptedClient([])
    feed = BackendFeed(client, "c")
    try:
        sub_a, sub_b = feed.subscribe(a), feed.subscribe(b)
        client.socket.items.extend(script)
        got_a = [sub_a.recv(timeout=2) for _ in range(4)]
        got_b = [sub_b.recv(timeout=2) for _ in range(2)]
        assert [type(i).__name__ for i in got_a] == ["Event", "Preview", "Event", "Event"]
        assert got_b[0].type == "execution_start" and got_b[1] is anonymous
        assert sub_a.recv(timeout=0.2) is None and sub_b.recv(timeout=0.2) is None
    finally:
        feed.close()
    assert client.socket.closed
    with pytest.raises(ComfySocketClosed):
        sub_a.recv(timeout=0)
