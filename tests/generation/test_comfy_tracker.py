"""Frame parsing and PromptTracker, replayed from the real ComfyUI 0.3.64 captures."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from generation.comfy.events import Event, Preview, TextFrame, parse_binary, parse_text
from generation.comfy.tracker import PromptTracker
from tests.conftest import COMFYUI_CAPTURES


def _captures() -> Path:
    return COMFYUI_CAPTURES


@pytest.fixture(scope="module")
def captures() -> Path:
    return _captures()


def synth_binary(meta: dict) -> bytes:
    """Rebuild a wire frame from a trace's binary line (traces keep only the decoded
    header fields), using the layouts verified against the .bin files."""
    et = meta["event_type"]
    image = b"\xff\xd8\xff\xe0" + b"\0" * 16
    if et == 1:
        return struct.pack(">II", 1, meta["image_format"]) + image
    if et == 4:
        raw = json.dumps(meta["metadata"]).encode()
        return struct.pack(">II", 4, len(raw)) + raw + image
    if et == 3:
        node = meta["node_id"].encode()
        return struct.pack(">II", 3, len(node)) + node + meta["text"].encode()
    raise AssertionError(et)


def replay(path: Path) -> list:
    """Trace lines -> parsed socket items, as ComfySocket.recv would return them."""
    items = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == "binary":
            items.append(parse_binary(synth_binary(rec["data"])))
        else:
            items.append(parse_text(json.dumps(rec["data"])))
    return items


def track(captures: Path, name: str, prompt_id: str) -> tuple[PromptTracker, list[bool]]:
    tracker = PromptTracker(prompt_id)
    changes = [tracker.feed(item) for item in replay(captures / name)]
    return tracker, changes


def history_entry(captures: Path, name: str) -> tuple[str, dict]:
    data = json.loads((captures / name).read_text())
    assert len(data) == 1
    return next(iter(data.items()))


# ---- binary frames -----------------------------------------------------------------


def test_parse_type1_preview(captures):
    raw = (captures / "ws_preview_frame_type1.bin").read_bytes()
    item = parse_binary(raw)
    assert isinstance(item, Preview)
    assert item.image_format == "jpeg" and item.mime_type == "image/jpeg"
    assert item.image[:4] == bytes.fromhex("ffd8ffe0")
    assert len(item.image) == len(raw) - 8 == 34146
    assert item.metadata is None and item.prompt_id is None


def test_parse_type4_preview_with_metadata(captures):
    raw = (captures / "ws_preview_frame_type4.bin").read_bytes()
    item = parse_binary(raw)
    assert isinstance(item, Preview)
    assert item.metadata["node_id"] == "3"
    assert item.metadata["image_type"] == "image/jpeg"
    assert item.image_format == "jpeg"
    assert item.prompt_id == "f6c702ea-48e7-43e0-b560-136139f5c2d7"
    assert item.node_id == "3"
    # No image-format int in type 4: the JPEG starts right after the 166-byte JSON.
    assert item.image[:4] == bytes.fromhex("ffd8ffe0")
    assert len(item.image) == len(raw) - 8 - 166


def test_parse_type3_text(captures):
    item = parse_binary((captures / "ws_text_frame_type3.bin").read_bytes())
    assert item == TextFrame(node_id="2", text="width: 64, height: 48\n batch size: 1")


def test_parse_binary_unknown_and_truncated():
    assert parse_binary(struct.pack(">I", 99) + b"xyz") is None
    assert parse_binary(b"\0\0") is None
    with pytest.raises(ValueError):
        parse_binary(struct.pack(">II", 4, 500) + b"{}")
    assert parse_binary(struct.pack(">II", 1, 2) + b"\x89PNG").image_format == "png"


def test_parse_text():
    ev = parse_text('{"type": "executing", "data": {"node": null, "prompt_id": "p"}}')
    assert ev == Event(type="executing", data={"node": None, "prompt_id": "p"})
    assert ev.prompt_id == "p"
    assert parse_text('{"type": "status", "data": {"status": {}}}').prompt_id is None
    for bad in ("not json", "[1]", '{"data": {}}'):
        with pytest.raises(ValueError):
            parse_text(bad)


# ---- tracker on the traces ---------------------------------------------------------

TXT2IMG = "ca60c976-345e-48cd-9ef7-8181fa8afa04"


def test_txt2img_success(captures):
    t, changes = track(captures, "ws_txt2img_trace.jsonl", TXT2IMG)
    assert t.started and t.done and t.outcome == "success"
    assert (t.progress_value, t.progress_max) == (2, 2)
    assert t.images == [{"filename": "ComfyUI_00013_.png", "subfolder": "", "type": "output"}]
    assert t.error is None and t.current_node is None
    # Type-1 previews arrived while our prompt was executing, so they are ours.
    assert isinstance(t.preview, Preview) and t.preview.image_format == "jpeg"
    assert changes[-1] is True  # executing(null)
    assert any(changes)


def test_previews_not_attributed_to_other_prompt(captures):
    t, changes = track(captures, "ws_txt2img_trace.jsonl", "someone-else")
    assert not any(changes)
    assert t.preview is None and not t.started and not t.done and t.outcome is None
    assert t.images == [] and t.progress_max == 0


def test_cached_repeat(captures):
    t, _ = track(captures, "ws_cached_trace.jsonl", "1012b073-8bb3-47d5-8f74-b4333a0cc69c")
    assert t.done and t.outcome == "success"
    assert t.images == [{"filename": "ComfyUI_00013_.png", "subfolder": "", "type": "output"}]
    assert t.cached_nodes == ["3", "4", "5", "6", "7", "8", "9"]
    assert t.preview is None and t.progress_max == 0


@pytest.mark.parametrize(
    "name,prompt_id,exc_type",
    [
        ("ws_error_trace.jsonl", "07e65efc-b81a-4b47-9314-e033e16799c0", "PIL.UnidentifiedImageError"),
        ("ws_error_deleted_input_trace.jsonl", "cc330e62-ec69-474b-ba03-9411826e97a9", "FileNotFoundError"),
    ],
)
def test_runtime_error(captures, name, prompt_id, exc_type):
    t, _ = track(captures, name, prompt_id)
    assert t.done and t.outcome == "error"
    assert t.error["exception_type"] == exc_type
    assert t.error["node_type"] == "LoadImage" and t.error["node_id"] == "1"
    assert t.images == []


def test_interrupted(captures):
    t, _ = track(captures, "ws_interrupt_trace.jsonl", "24fc9bae-63a7-4394-bd65-00d96d8c677f")
    assert t.done and t.outcome == "interrupted" and t.error is None
    assert t.interrupted["node_type"] == "KSampler"
    assert (t.progress_value, t.progress_max) == (2, 20)
    assert t.preview is not None and t.images == []


def test_targeted_interrupt_queue_experiment(captures):
    t, _ = track(captures, "ws_queue_experiment_clientA_trace.jsonl", "b55bf106-320f-4343-ad64-1c3dee701dfe")
    assert t.done and t.outcome == "interrupted"
    assert (t.progress_value, t.progress_max) == (1, 20)


def test_deleted_prompts_get_no_message(captures):
    # P2 was deleted from the queue: its owner only ever sees status broadcasts.
    t, changes = track(captures, "ws_queue_experiment_clientB_trace.jsonl", "a473e563-103e-4361-8d8f-a5d0a1b77d91")
    assert not any(changes) and not t.done and not t.started


def test_preview_metadata_type4(captures):
    pid = "f6c702ea-48e7-43e0-b560-136139f5c2d7"
    t, _ = track(captures, "ws_txt2img_preview_metadata_trace.jsonl", pid)
    assert t.done and t.outcome == "success"
    assert t.preview is not None and t.preview.prompt_id == pid
    assert t.images == [{"filename": "ComfyUI_00014_.png", "subfolder": "", "type": "output"}]
    # A type-4 preview names its prompt, so another tracker ignores it.
    other, _ = track(captures, "ws_txt2img_preview_metadata_trace.jsonl", "other")
    assert other.preview is None


def test_observer_without_client_id(captures):
    # Progress of a prompt sent without client_id is broadcast; execution_* reach nobody.
    pid = "f64ea5a3-9f96-41bd-a1ce-46016ba6ebfa"
    t, _ = track(captures, "ws_observer_no_client_id_trace.jsonl", pid)
    assert (t.progress_value, t.progress_max) == (2, 2)
    assert t.started and not t.done and t.outcome is None
    mine, _ = track(captures, "ws_observer_no_client_id_trace.jsonl", "my-own-prompt")
    assert mine.preview is None and mine.progress_max == 0


def test_text_frame_and_temp_images(captures):
    t, _ = track(captures, "ws_text_frame_trace.jsonl", "5cda8ac3-733c-40aa-98d6-5fe6c31d4211")
    assert t.done and t.outcome == "success"
    assert t.texts == [TextFrame("2", "width: 64, height: 48\n batch size: 1")]
    assert t.images == [{"filename": "ComfyUI_temp_hflsb_00002_.png", "subfolder": "", "type": "temp"}]
    observer, _ = track(captures, "ws_text_frame_observer_trace.jsonl", "5cda8ac3-733c-40aa-98d6-5fe6c31d4211")
    assert observer.texts == []  # never saw our execution window


def test_reconnect_sockets(captures):
    pid = "da651b62-a6a4-4ac3-9d89-ddcfa924b961"
    # WS2 joins mid-run: the first `executing` has no prompt_id, then progress does.
    t2, _ = track(captures, "ws_reconnect_ws2.jsonl", pid)
    assert t2.started and not t2.done and (t2.progress_value, t2.progress_max) == (2, 8)
    assert t2.preview is not None
    t3, _ = track(captures, "ws_reconnect_ws3.jsonl", pid)
    assert t3.done and t3.outcome == "success" and (t3.progress_value, t3.progress_max) == (8, 8)
    assert t3.images == [{"filename": "ComfyUI_00019_.png", "subfolder": "", "type": "output"}]


def test_images_deduplicated_and_nothing_after_done():
    t = PromptTracker("p")
    img = {"filename": "a.png", "subfolder": "", "type": "output"}
    executed = Event("executed", {"node": "9", "output": {"images": [img]}, "prompt_id": "p"})
    assert t.feed(executed) is True
    assert t.feed(executed) is False
    assert t.images == [img]
    assert t.feed(Event("executing", {"node": None, "prompt_id": "p"})) is True
    assert t.feed(Preview(image=b"x", image_format="jpeg")) is False
    assert t.preview is None


def test_other_prompt_start_ends_anonymous_preview_window():
    t = PromptTracker("p")
    t.feed(Event("execution_start", {"prompt_id": "p"}))
    assert t.feed(Preview(b"1", "jpeg")) is True
    t.feed(Event("execution_start", {"prompt_id": "q"}))
    assert t.feed(Preview(b"2", "jpeg")) is False
    assert t.preview.image == b"1"


# ---- history -----------------------------------------------------------------------


def test_history_success(captures):
    pid, entry = history_entry(captures, "history_one.json")
    t = PromptTracker(pid)
    t.apply_history(entry)
    assert t.done and t.started and t.outcome == "success" and t.error is None
    assert t.images == [{"filename": "ComfyUI_00013_.png", "subfolder": "", "type": "output"}]


def test_history_cached_merges_with_ws_images(captures):
    pid, entry = history_entry(captures, "history_cached.json")
    t, _ = track(captures, "ws_cached_trace.jsonl", pid)
    t.apply_history(entry)
    assert t.outcome == "success"
    assert [i["filename"] for i in t.images] == ["ComfyUI_00013_.png"]


@pytest.mark.parametrize("name", ["history_failed.json", "history_failed_deleted_input.json"])
def test_history_failed(captures, name):
    pid, entry = history_entry(captures, name)
    t = PromptTracker(pid)
    t.apply_history(entry)
    assert t.done and t.outcome == "error" and t.images == []
    assert t.error["node_type"] == "LoadImage" and "exception_message" in t.error


@pytest.mark.parametrize("name", ["history_interrupted.json", "history_interrupted_targeted.json"])
def test_history_interrupted(captures, name):
    # status_str is "error" for an interrupt too; the last message tells them apart.
    pid, entry = history_entry(captures, name)
    assert entry["status"]["status_str"] == "error"
    t = PromptTracker(pid)
    t.apply_history(entry)
    assert t.done and t.outcome == "interrupted" and t.error is None
    assert t.interrupted["node_id"] == "3"


def test_history_preview_image_temp(captures):
    pid, entry = history_entry(captures, "history_preview_image.json")
    t = PromptTracker(pid)
    t.apply_history(entry)
    assert t.outcome == "success" and t.images[0]["type"] == "temp"
