"""How a task's state reads on the pages: the running node in words, the place in the
queue, the stage, and whether the studio can start a task at all (the waiting banner)."""
from __future__ import annotations

from django.utils import timezone
from django.utils.translation import get_language, gettext as _, gettext_lazy

from models_catalog.models import ComfyBackend

from ..outlook import NONE, Outlook
from ..fleet.workers import worker_status
from ..models import GenerationTask, TaskStatus

# ComfyUI node class types in words; the runner stores the class type of the running node.
NODE_LABELS = {
    "CheckpointLoaderSimple": gettext_lazy("Loading the model"),
    "CLIPTextEncode": gettext_lazy("Reading the prompt"),
    "EmptyLatentImage": gettext_lazy("Preparing the canvas"),
    "KSampler": gettext_lazy("Drawing"),
    "KSamplerAdvanced": gettext_lazy("Drawing"),
    "VAEDecode": gettext_lazy("Decoding the picture"),
    "VAEEncode": gettext_lazy("Encoding the picture"),
    "LoadImage": gettext_lazy("Loading the input picture"),
    "SaveImage": gettext_lazy("Saving"),
}


def service_health() -> dict:
    """What the waiting banner needs: can a task submitted now start soon?"""
    worker_alive = worker_status()["alive"]
    backend_online = ComfyBackend.objects.filter(enabled=True, is_online=True).exists()
    return {"worker_alive": worker_alive, "backend_online": backend_online, "ok": worker_alive and backend_online}


def _ordinal(n: int) -> str:
    """"1st", "2nd", "3rd", "11th"… in English; the bare number elsewhere (the phrase
    around it is translated, e.g. "队列中第 3 位")."""
    if not (get_language() or "en").startswith("en"):
        return str(n)
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def about(seconds: float) -> str:
    """A wait in words, as close as an estimate deserves: "about 40 s", "about 3 min"."""
    seconds = max(5, int(round(seconds / 5.0)) * 5)
    if seconds < 90:
        return _("about %(seconds)s s") % {"seconds": seconds}
    if seconds < 90 * 60:
        return _("about %(minutes)s min") % {"minutes": round(seconds / 60)}
    return _("about %(hours)s h") % {"hours": round(seconds / 3600)}


def queue_text(outlook: Outlook) -> str:
    """The place and the estimate beside the stage: "3rd in the queue, starts in about 40 s",
    "about 12 s left"; empty when there is neither."""
    now = timezone.now()
    if outlook.position is not None:
        place = (_("Next in the queue") if outlook.position == 1
                 else _("%(ordinal)s in the queue") % {"ordinal": _ordinal(outlook.position)})
        if outlook.estimated_start_at is None:
            return place
        return _("%(place)s, starts in %(wait)s") % {
            "place": place, "wait": about((outlook.estimated_start_at - now).total_seconds())}
    if outlook.estimated_finish_at is not None and outlook.estimated_finish_at > now:
        return _("%(wait)s left") % {"wait": about((outlook.estimated_finish_at - now).total_seconds())}
    return ""


def task_stage(task: GenerationTask) -> str:
    """Where the task is, in words: the headline of the task page's live panel."""
    if task.status == TaskStatus.PENDING:
        if task.backend_id:
            # A job is retrying an image server that does not answer (the message says which).
            if task.status_message:
                return _("Waiting for the image server")
            return _("Sent to an image server, about to start")
        return _("Waiting in the queue")
    if task.status == TaskStatus.PROCESSING:
        if task.progress_node:
            return str(NODE_LABELS.get(task.progress_node, task.progress_node))
        return _("Starting on the image server")
    return str(TaskStatus(task.status).label)


def progress_line(task: GenerationTask) -> str:
    """The line under the bar: only the steps. Where the task is belongs to the stage
    above it, so the two never say different things (or the same thing twice)."""
    if task.status == TaskStatus.PROCESSING and task.progress_max:
        return _("Step %(value)s of %(max)s") % {"value": task.progress_value, "max": task.progress_max}
    return ""


def live_status(task: GenerationTask, outlook: Outlook = NONE) -> dict:
    """Everything the live panel of the task page shows, from one read of the task.

    The page renders it and its script reads it again (the task page's state.json)
    each second: one source for the words, so the page never changes its story when
    the script takes over.
    """
    determinate = task.status == TaskStatus.PROCESSING and bool(task.progress_max)
    return {
        "status": task.status,
        "status_label": str(TaskStatus(task.status).label),
        "queue_position": outlook.position,
        "queue_text": queue_text(outlook),
        "stage": task_stage(task),
        "line": progress_line(task),
        "message": task.status_text,
        # No max yet (waiting, or a node without steps): the bar runs without a value.
        "progress": {
            "value": task.progress_value if determinate else None,
            "max": task.progress_max if determinate else None,
            "percent": round(task.progress_fraction * 100) if determinate else None,
        },
    }
