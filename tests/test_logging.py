"""Log lines as an operator's log shipper (JSON) and a person at a terminal (text) read them."""
from __future__ import annotations

import io
import json
import logging

import pytest

from config.logging import JsonFormatter, TextFormatter, logging_config
from generation.fleet.log import task_log


@pytest.fixture
def capture():
    """A logger writing through a chosen formatter into a buffer."""
    handlers = []

    def make(formatter: logging.Formatter, name: str = "easel.test") -> tuple[logging.Logger, io.StringIO]:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        handlers.append((logger, handler))
        return logger, stream

    yield make
    for logger, handler in handlers:
        logger.removeHandler(handler)
        logger.propagate = True


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_formatter_writes_one_object_per_line(capture):
    logger, stream = capture(JsonFormatter())
    logger.info("stored %d image(s)\nfor %s", 2, "ünïcode", extra={"task_id": 7, "backend": "gpu1"})
    logger.warning("plain")
    first, second = lines(stream)
    assert first["level"] == "INFO" and first["logger"] == "easel.test"
    assert first["message"] == "stored 2 image(s)\nfor ünïcode"
    assert first["task_id"] == 7 and first["backend"] == "gpu1"
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert "user_id" not in first and "prompt_id" not in first  # absent, not null
    assert set(second) == {"time", "level", "logger", "message"}


def test_json_formatter_keeps_the_traceback_in_the_same_line(capture):
    logger, stream = capture(JsonFormatter())
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    assert len(stream.getvalue().splitlines()) == 1
    (entry,) = lines(stream)
    assert entry["level"] == "ERROR" and "ValueError: boom" in entry["exc_info"]


@pytest.mark.django_db
def test_task_log_adds_task_user_backend_and_prompt_to_every_record(capture, catalog, make_user):
    from generation.models import GenerationTask

    user = make_user()
    task = GenerationTask.objects.create(
        user=user, prompt="p", model_name="demo-sd15", width=64, height=64, steps=4, cfg=7, sampler="euler",
        scheduler="normal", seed=1,
    )
    logger, stream = capture(JsonFormatter(), name="generation.fleet.runner")
    log = task_log(task)
    log.info("queued")  # no backend yet
    task.backend = catalog["backend"]
    log.info("submitted to %s", "http://x", extra={"attempt": 2})
    queued, submitted = lines(stream)
    assert queued["task_id"] == task.pk and queued["user_id"] == user.pk
    assert queued["prompt_id"] == str(task.prompt_id) and "backend" not in queued
    assert submitted["backend"] == "offline" and submitted["message"] == "submitted to http://x"


@pytest.mark.django_db
def test_task_log_names_a_backend_that_is_not_loaded_with_one_lookup(capture, catalog, make_user,
                                                                    django_assert_num_queries):
    from generation.models import GenerationTask

    task = GenerationTask.objects.create(
        user=make_user(), prompt="p", model_name="m", width=64, height=64, steps=4, cfg=7, sampler="euler",
        scheduler="normal", seed=1, backend=catalog["backend"],
    )
    task = GenerationTask.objects.get(pk=task.pk)  # backend not loaded
    logger, stream = capture(TextFormatter(), name="generation.custom")
    log = task_log(task, "generation.custom", job="run")
    with django_assert_num_queries(1):
        log.info("one")
        log.info("two")
    first, _second = stream.getvalue().splitlines()
    assert first.endswith(f"one [task_id={task.pk} user_id={task.user_id} backend=offline prompt_id={task.prompt_id}]")
    assert log.extra == {"job": "run"}


def test_text_is_the_default_and_json_is_chosen_by_log_format():
    assert logging_config()["handlers"]["console"]["formatter"] == "text"
    config = logging_config(fmt="JSON", level="debug")
    assert config["handlers"]["console"]["formatter"] == "json" and config["root"]["level"] == "DEBUG"
    with pytest.raises(ValueError):
        logging_config(fmt="xml")


def test_configured_json_logging_writes_json_lines(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import logging, django; django.setup(); "
        "logging.getLogger('django.request').warning('Not Found: /x'); "
        "logging.getLogger('easel.x').warning('hello', extra={'user_id': 3})"
    )
    env = {"DJANGO_SETTINGS_MODULE": "config.settings", "LOG_FORMAT": "json", "EASEL_DATA_DIR": str(tmp_path),
           "DEBUG": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Every line is JSON, each record once (Django's own DEBUG console handler is off).
    entries = [json.loads(line) for line in result.stderr.strip().splitlines()]
    assert [e["message"] for e in entries] == ["Not Found: /x", "hello"]
    assert entries[1]["user_id"] == 3 and entries[1]["logger"] == "easel.x"
