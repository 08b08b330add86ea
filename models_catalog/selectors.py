"""Reads on the catalog."""
from __future__ import annotations

from django.db.models import Exists, OuterRef, QuerySet

from .models import Checkpoint, ComfyBackend, WorkflowTemplate


def checkpoint_list_usable() -> QuerySet[Checkpoint]:
    """Enabled checkpoints that at least one enabled backend has, annotated `online`.

    `online` says whether a backend taking work has it right now. Checkpoints whose
    backends are all offline stay usable (a task waits in the queue and runs when one
    returns); lists show them flagged, online ones first.
    """
    has_backend = ComfyBackend.objects.filter(enabled=True, checkpoints=OuterRef("pk"))
    has_online = ComfyBackend.objects.filter(enabled=True, is_online=True, draining=False, checkpoints=OuterRef("pk"))
    return (
        Checkpoint.objects.filter(enabled=True)
        .filter(Exists(has_backend))
        .annotate(online=Exists(has_online))
        # Staff's default first: forms start on it, like a task that names no model.
        .order_by("-is_default", "-online", "display_name", "name")
    )


def checkpoint_get_usable(*, name: str) -> Checkpoint | None:
    """Find a checkpoint by its Easel name or its ComfyUI file name."""
    qs = checkpoint_list_usable()
    return qs.filter(name=name).first() or qs.filter(ckpt_name=name).first()


def checkpoint_default() -> Checkpoint | None:
    """The model a task gets when it names none: the one staff made the default, or while
    that one is not usable, the oldest usable one (never whichever name sorts first: a new
    file on a backend must not take over every task sent without a model)."""
    usable = checkpoint_list_usable()
    return usable.filter(is_default=True).first() or usable.order_by("created_at", "pk").first()


def template_default(*, kind: str = WorkflowTemplate.KIND_TXT2IMG) -> WorkflowTemplate | None:
    qs = WorkflowTemplate.objects.filter(enabled=True, kind=kind)
    return qs.filter(is_default=True).order_by("pk").first() or qs.order_by("pk").first()
