"""Putting work on django-q2's queue, by the stable job names of `generation.jobs`."""
from __future__ import annotations

from django_q import tasks

# Jobs queued for every task or delivery: nobody reads their results, and django-q2
# saving one costs a pruning pass over up to `save_limit` result rows. Their failures
# are still kept (django-q2 saves a failed job whatever `save` says).
UNSAVED_JOBS = frozenset({"generation_finished", "generation_dispatch", "generation_abandon", "webhook_deliver"})


def enqueue(job: str, *args, group: str = "generation", **options) -> None:
    """Queue `generation.jobs.<job>(*args)`. Pass ids, never model instances."""
    if job in UNSAVED_JOBS:
        options.setdefault("save", False)
    # Looked up at call time (not imported by name), so one patch in a test catches every caller.
    tasks.async_task(f"generation.jobs.{job}", *args, group=group, **options)
