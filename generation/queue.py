"""Putting work on django-q2's queue, by the stable job names of `generation.jobs`."""
from __future__ import annotations

from django_q import tasks


def enqueue(job: str, *args, group: str = "generation", **options) -> None:
    """Queue `generation.jobs.<job>(*args)`. Pass ids, never model instances."""
    # Looked up at call time (not imported by name), so one patch in a test catches every caller.
    tasks.async_task(f"generation.jobs.{job}", *args, group=group, **options)
