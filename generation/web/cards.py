"""A result as the pages offer it: the settings to reuse, the tools it can go to, its
generation time, and the workspace's card of it (generate.py's results pane, and the
answers of the card's own actions when the workspace's script asks for JSON)."""
from __future__ import annotations

from urllib.parse import parse_qsl

from django.http import JsonResponse
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import gettext as _

from models_catalog.models import WorkflowTemplate

from ..models import ACTIVE_STATUSES, GenerationTask, TaskStatus
from ..outlook import task_outlook
from ..selectors import generation_list
from .status import live_status


def settings_query(task: GenerationTask, *, seed: bool = True) -> str:
    """The generate page's query string that reproduces this task's settings."""
    values = {
        "prompt": task.prompt,
        "negative_prompt": task.negative_prompt,
        "model": task.model_name,
        "width": task.width,
        "height": task.height,
        "steps": task.steps,
        "cfg": task.cfg,
        "sampler": task.sampler,
        "scheduler": task.scheduler,
        "batch_size": task.batch_size,
    }
    if seed:
        values["seed"] = task.seed
    if task.template_id:
        values["template"] = task.template.slug
    if task.source_image_id:
        values["source"] = f"s{task.source_image_id}"
    if task.denoise is not None:
        values["denoise"] = task.denoise
    return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def generation_time(task: GenerationTask) -> str:
    """How long the picture took: from the start on the image server to completion."""
    if task.status != TaskStatus.COMPLETED or not (task.started_at and task.completed_at):
        return ""
    seconds = max(0.0, (task.completed_at - task.started_at).total_seconds())
    if seconds < 60:
        return _("%(seconds).1f s") % {"seconds": seconds}
    minutes, rest = divmod(round(seconds), 60)
    return _("%(minutes)d min %(seconds)02d s") % {"minutes": minutes, "seconds": rest}


def enabled_tools() -> set[str]:
    """The slugs of the result tools staff keep on (one query, shared by a page's cards)."""
    return set(WorkflowTemplate.objects.filter(enabled=True, slug__in=("upscale", "inpaint", "hires-fix"))
               .values_list("slug", flat=True))


def result_tools(task: GenerationTask, *, enabled: set[str] | None = None) -> dict[str, str]:
    """The generate page's address for each tool a result can go to: upscale it, inpaint
    it (the mask is drawn there), or draw it again through the hires fix (same settings
    and seed). The picture's id is added by the page (source=r<id>)."""
    if enabled is None:
        enabled = enabled_tools()
    base = reverse("generation:generate")
    tools = {}
    if "upscale" in enabled:
        tools["upscale"] = base + "?" + urlencode({"template": "upscale"})
    if "inpaint" in enabled:
        tools["inpaint"] = base + "?" + urlencode({"template": "inpaint", "prompt": task.prompt, "model": task.model_name})
    if "hires-fix" in enabled and task.source_image_id is None:
        query = dict(parse_qsl(settings_query(task, seed=True)), template="hires-fix")
        tools["hires"] = base + "?" + urlencode(query)
    return tools


def wants_json(request) -> bool:
    """The workspace's script asks (Accept: application/json); a plain form post does not."""
    return "application/json" in request.headers.get("Accept", "")


def workspace_cards(tasks) -> list[GenerationTask]:
    """The tasks, each carrying what its card shows: the settings to reuse, the tools for
    its result, its generation time and (while it runs) its live words."""
    tasks = list(tasks)
    enabled = enabled_tools() if any(t.status == TaskStatus.COMPLETED for t in tasks) else set()
    for task in tasks:
        task.card_settings = settings_query(task)
        task.card_images = list(task.images.all()) if task.status == TaskStatus.COMPLETED else []
        task.card_tools = result_tools(task, enabled=enabled) if task.card_images else {}
        task.card_time = generation_time(task)
        task.card_active = task.status in ACTIVE_STATUSES
        task.card_live = live_status(task, task_outlook(task)) if task.card_active else None
    return tasks


def card_html(request, task: GenerationTask) -> str:
    return render_to_string("generation/_workspace_card.html", {"task": workspace_cards([task])[0]}, request=request)


def card_answer(request, task_id: int, *, status: int = 200, message: str = "") -> JsonResponse:
    """A card's action done, for the workspace's script: the task's card as it is now (the
    server's rendering, escaped here) and what to say; `card` is null once it is gone."""
    task = generation_list(user=request.user).filter(pk=task_id).first()
    return JsonResponse({"id": task_id, "url": reverse("generation:task", args=[task_id]),
                         "card": card_html(request, task) if task is not None else None,
                         "message": message}, status=status)
