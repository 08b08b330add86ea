"""One task's page and the owner's acts on it: cancel, retry, vary, share, download, delete."""
from __future__ import annotations

import hashlib
import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from config.conditional import etag_matches, not_modified
from models_catalog.models import WorkflowTemplate
from models_catalog.selectors import template_default

from ..errors import GenerationError
from ..outlook import task_outlook
from ..gallery.files import preview_response
from ..gallery.selectors import result_image_get_own
from ..gallery.sharing import task_share, task_unshare
from ..gallery.uploads import source_image_from_result
from ..gallery.zips import images_zip_response
from ..models import ACTIVE_STATUSES, GenerationTask, RunOutcome, TaskRun, TaskStatus
from ..selectors import generation_get, generation_visible_id, preview_version_get
from ..services import generation_cancel, generation_create, generation_delete, generation_retry
from .cards import card_answer, generation_time, result_tools, settings_query, wants_json
from .status import live_status, service_health

# Error keys (binding names from ComfyUI's node_errors, or service fields) → the
# parameter row of the task page they belong beside.
ERROR_PARAM = {
    "prompt": "prompt", "negative_prompt": "negative_prompt", "checkpoint": "model", "model_name": "model",
    "width": "size", "height": "size", "steps": "steps", "cfg": "cfg", "sampler": "sampler",
    "scheduler": "scheduler", "seed": "seed", "batch_size": "batch_size", "denoise": "denoise",
    "image": "source", "source_image": "source",
}


def _error_rows(task) -> tuple[dict[str, list[str]], list[tuple[str, list[str]]]]:
    """The task's error_fields split into those beside a parameter and the rest (labelled)."""
    labels = {f.name: f.verbose_name for f in task._meta.get_fields() if hasattr(f, "verbose_name")}
    labels["__all__"] = _("Workflow")
    beside: dict[str, list[str]] = {}
    rest = []
    for key, value in task.error_fields_text.items():
        value = [str(v) for v in (value if isinstance(value, list) else [value])]
        param = ERROR_PARAM.get(key)
        if param:
            beside.setdefault(param, []).extend(value)
        else:
            rest.append((str(labels.get(key, key)), value))
    return beside, rest


def _param_rows(task: GenerationTask, errors: dict[str, list[str]]) -> list[dict]:
    rows = [
        ("prompt", _("Prompt"), task.prompt, True),
        ("negative_prompt", _("Negative prompt"), task.negative_prompt, True),
        ("model", _("Model"), task.checkpoint.shown_name if task.checkpoint else task.model_name, False),
    ]
    if task.template_id:
        rows.append(("template", _("Workflow"), task.template.shown_name, False))
    rows += [
        ("size", _("Size"), f"{task.width} × {task.height}", False),
        ("steps", _("Steps"), task.steps, False),
        ("cfg", _("CFG"), task.cfg, False),
        ("sampler", _("Sampler"), task.sampler, False),
        ("scheduler", _("Scheduler"), task.scheduler, False),
        ("seed", _("Seed"), task.seed, False),
        ("batch_size", _("Images"), task.batch_size, False),
    ]
    if task.denoise is not None:
        rows.append(("denoise", _("Denoise"), task.denoise, False))
    if task.source_image_id or "source" in errors:
        rows.append(("source", _("Source image"), task.source_image.original_name if task.source_image else "", False))
    return [
        {"key": key, "label": label, "value": value, "wide": wide, "mono": key == "seed", "errors": errors.get(key, [])}
        for key, label, value, wide in rows
    ]


@login_required
def task_detail(request, task_id: int):
    task = generation_get(user=request.user, task_id=task_id)
    active = task.status in ACTIVE_STATUSES
    owner = task.user_id == request.user.pk
    images = list(task.images.order_by("index")) if task.status == TaskStatus.COMPLETED else []
    outlook = task_outlook(task) if active else None
    beside, rest = _error_rows(task)
    context = {
        "task": task,
        "images": images,
        "active": active,
        "owner": owner,
        "error_beside": beside,
        "param_rows": _param_rows(task, beside),
        "error_fields": rest,
        "live": live_status(task, outlook) if active else None,
        "preview_size": _preview_size(task),
        "generation_time": generation_time(task),
        "runs": _attempts(task),
        "settings_query": settings_query(task),
        # One click from a result to a tool that acts on it (when staff keep that tool on).
        "tools": result_tools(task) if owner and images else {},
        "share_url": request.build_absolute_uri(reverse("generation:shared_task", args=[task.share_token]))
        if task.share_token else "",
        "health": service_health() if active else None,
        "poll": {
            # Everything the script follows (the frame's versioned URL included) is in state.json.
            "stateUrl": reverse("generation:task_state", args=[task.pk]),
            "previewUrl": reverse("generation:task_preview", args=[task.pk]),
            # The owner's event stream carries the task (staff looking at another's task poll).
            "eventsUrl": reverse("api-events") if owner else "",
            "taskId": task.pk,
            "active": active,
            "status": task.status,
            # The only words the script writes itself; the rest come from state.json.
            "labels": {"offline": _("Lost contact with the server; retrying…"),
                       # The bar's line as the stream's steps fill it (web.status.progress_line).
                       "step": _("Step %(value)s of %(max)s")},
        },
    }
    return render(request, "generation/task_detail.html", context)


def _attempts(task: GenerationTask) -> list[TaskRun]:
    """The task's attempts when they tell more than its status does: there were several,
    or one ended without completing (moved, failed, cancelled…)."""
    runs = list(task.runs.all())  # oldest first
    quiet = (RunOutcome.COMPLETED, RunOutcome.RUNNING)
    if len(runs) > 1 or any(run.outcome not in quiet for run in runs):
        return runs
    return []


def _preview_size(task: GenerationTask) -> tuple[int, int]:
    """The live preview's reserved box: an img2img result takes its source's shape, not
    the requested size (which its workflow ignores)."""
    if task.source_image_id and task.source_image and not task.is_finished:
        return task.source_image.width, task.source_image.height
    return task.width, task.height


# state.json may be kept by the script but is asked again each time (If-None-Match).
STATE_CACHE_CONTROL = "private, no-cache"


def _preview_version_query(raw: str | None) -> int | None:
    """`?v=` of the page's preview URL; anything but a version reads as none (the newest frame)."""
    if raw and raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return int(raw)
    return None


@login_required
@require_GET
def task_state(request, task_id: int):
    """The task page's live panel in words (web.status.live_status), read by its script
    while the task runs: the same text the page was rendered with, the status, and the
    live frame's versioned URL (null before the first frame). A weak ETag of the answer;
    304 with no body when `If-None-Match` names it."""
    task = generation_get(user=request.user, task_id=task_id)
    state = live_status(task, task_outlook(task))
    version = preview_version_get(task_id=task.pk) if task.status == TaskStatus.PROCESSING else None
    state["preview_url"] = (
        None if version is None else f"{reverse('generation:task_preview', args=[task.pk])}?v={version}"
    )
    body = json.dumps(state, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False).encode()
    etag = f'W/"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'
    if etag_matches(request, etag):
        return not_modified(etag, cache_control=STATE_CACHE_CONTROL)
    response = HttpResponse(body, content_type="application/json")
    response["ETag"] = etag
    response["Cache-Control"] = STATE_CACHE_CONTROL
    return response


@login_required
def task_preview(request, task_id: int):
    """The live frame: `?v=` names one (the page's URLs from state.json), none the newest;
    204 when there is none (the task ended between its state and this request)."""
    task_id = generation_visible_id(user=request.user, task_id=task_id)
    return preview_response(request, task_id, version=_preview_version_query(request.GET.get("v")), missing=204)


def _own_task(request, task_id: int) -> GenerationTask:
    """The caller's own task (staff included: sharing, zips and copies are the owner's acts)."""
    return get_object_or_404(GenerationTask.objects.select_related("template"), pk=task_id, user=request.user)


def _task_action(request, task_id: int, service, success: str):
    """Run a task service for the page; its refusal (e.g. already finished) becomes a message."""
    task = generation_get(user=request.user, task_id=task_id)
    try:
        service(task=task)
    except GenerationError as exc:
        if wants_json(request):  # the workspace's card: the message beside the card
            return card_answer(request, task.pk, status=409, message=exc.message)
        messages.error(request, exc.message)
    else:
        if wants_json(request):
            return card_answer(request, task.pk, message=success % {"id": task.pk})
        messages.success(request, success % {"id": task.pk})
    return redirect("generation:task", task_id=task.pk)


@login_required
@require_POST
def task_cancel(request, task_id: int):
    return _task_action(request, task_id, generation_cancel, _("Task #%(id)d cancelled."))


@login_required
@require_POST
def task_retry(request, task_id: int):
    return _task_action(request, task_id, generation_retry, _("Task #%(id)d is queued again."))


def _back_to(request) -> str | None:
    """`next` of a card's form (the workspace sends its own address): a local path only."""
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return None


@login_required
@require_POST
def task_vary(request, task_id: int):
    """The same settings with a new random seed, submitted at once."""
    task = _own_task(request, task_id)
    try:
        new = generation_create(
            user=request.user,
            prompt=task.prompt,
            negative_prompt=task.negative_prompt,
            model_name=task.model_name,
            width=task.width,
            height=task.height,
            steps=task.steps,
            cfg=task.cfg,
            sampler=task.sampler,
            scheduler=task.scheduler,
            seed=None,
            batch_size=task.batch_size,
            template=task.template.slug if task.template_id else None,
            source_image=task.source_image_id,
            denoise=task.denoise,
        )
    except ValidationError as exc:
        refusal = " ".join(m for msgs in exc.message_dict.values() for m in msgs)
        if wants_json(request):
            return card_answer(request, task.pk, status=400, message=refusal)
        messages.error(request, refusal)
        return redirect(reverse("generation:generate") + "?" + settings_query(task, seed=False))
    except GenerationError as exc:
        if wants_json(request):
            return card_answer(request, task.pk, status=409, message=exc.message)
        messages.error(request, exc.message)
        return redirect("generation:task", task_id=task.pk)
    if wants_json(request):  # the new run's card, put at the top of the results pane
        return card_answer(request, new.pk, status=201)
    return redirect(_back_to(request) or reverse("generation:task", args=[new.pk]))


@login_required
@require_GET
def task_zip(request, task_id: int):
    task = _own_task(request, task_id)
    if task.status != TaskStatus.COMPLETED:
        raise Http404
    return images_zip_response(images=task.images.order_by("index"), filename=f"easel-{task.pk}.zip")


@login_required
@require_POST
def task_share_view(request, task_id: int):
    task = _own_task(request, task_id)
    try:
        task_share(task=task)
    except GenerationError as exc:
        if wants_json(request):
            return card_answer(request, task.pk, status=409, message=exc.message)
        messages.error(request, exc.message)
    else:
        shared = _("Anyone with the link can now see this task's pictures and prompt.")
        if wants_json(request):
            return card_answer(request, task.pk, message=shared)
        messages.success(request, shared)
    return redirect("generation:task", task_id=task.pk)


@login_required
@require_POST
def task_unshare_view(request, task_id: int):
    task = _own_task(request, task_id)
    task_unshare(task=task)
    messages.success(request, _("The public link is revoked; it no longer works."))
    return redirect("generation:task", task_id=task.pk)


@login_required
@require_POST
def image_use_as_source(request, image_id: int):
    """One of the user's results becomes a source image; on to the generate page with img2img."""
    image = result_image_get_own(user=request.user, image_id=image_id)
    try:
        source = source_image_from_result(user=request.user, image=image)
    except ValidationError as exc:
        messages.error(request, " ".join(m for msgs in exc.message_dict.values() for m in msgs))
        return redirect("generation:task", task_id=image.task_id)
    task = image.task
    query = {
        "prompt": task.prompt,
        "negative_prompt": task.negative_prompt,
        "model": task.model_name,
        "source": f"s{source.pk}",
    }
    img2img = template_default(kind=WorkflowTemplate.KIND_IMG2IMG)
    if img2img is not None:
        query["template"] = img2img.slug
    return redirect(reverse("generation:generate") + "?" + urlencode({k: v for k, v in query.items() if v}))


@login_required
@require_http_methods(["GET", "POST"])
def task_delete(request, task_id: int):
    """POST with confirm=yes deletes; anything else shows the confirmation page.

    The task page's script asks with confirm() and adds confirm=yes itself; without
    script the same form lands here and the user confirms on this page.
    """
    task = generation_get(user=request.user, task_id=task_id)
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        generation_delete(task=task)
        deleted = _("Task #%(id)d deleted.") % {"id": task_id}
        if wants_json(request):  # the workspace's card goes
            return card_answer(request, task_id, message=deleted)
        messages.success(request, deleted)
        return redirect(_back_to(request) or reverse("generation:history"))
    # Without script: confirmed on a page of its own, then back where the form was (the
    # workspace sends its address), or kept and back there too.
    back = _back_to(request)
    return render(request, "generation/task_confirm_delete.html",
                  {"task": task, "task_list": [task], "next": back or ""})
