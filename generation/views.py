"""The studio's pages: generate, follow one task, history, sharing and the owner-checked files.

Views stay thin: reads come from selectors, writes go through the services the API
and the admin use too, so a rule (limits, ownership) lives in one place.
"""
from __future__ import annotations

from datetime import datetime, time as dtime, timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header, urlencode
from django.utils.translation import gettext as _
from django.utils.translation import get_language, gettext_lazy, ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from models_catalog.models import ComfyBackend, WorkflowTemplate
from models_catalog.selectors import checkpoint_list_usable, template_default

from .dispatch import queue_position
from .errors import GenerationError
from .files import image_response, preview_response
from .forms import PREFILL_FIELDS, SIZE_PRESETS, GenerateForm, HistoryFilterForm
from .models import ACTIVE_STATUSES, GeneratedImage, GenerationTask, TaskStatus
from .selectors import generation_get, generation_list, image_get
from .services import generation_cancel, generation_create, generation_delete, generation_retry
from .sharing import shared_image_get, shared_images, shared_task_get, task_share, task_unshare
from .upload_selectors import result_image_get_own, source_image_get, source_image_list
from .uploads import source_image_create, source_image_from_result
from .workers import worker_status
from .zips import images_zip_response

HISTORY_PAGE_SIZE = 24
RECENT_TASKS = 6
SOURCE_CHOICES = 8
BULK_LIMIT = 200

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

# Error keys (binding names from ComfyUI's node_errors, or service fields) → the
# parameter row of the task page they belong beside.
ERROR_PARAM = {
    "prompt": "prompt", "negative_prompt": "negative_prompt", "checkpoint": "model", "model_name": "model",
    "width": "size", "height": "size", "steps": "steps", "cfg": "cfg", "sampler": "sampler",
    "scheduler": "scheduler", "seed": "seed", "batch_size": "batch_size", "denoise": "denoise",
    "image": "source", "source_image": "source",
}


def _service_health() -> dict:
    """What the waiting banner needs: can a task submitted now start soon?"""
    worker_alive = worker_status()["alive"]
    backend_online = ComfyBackend.objects.filter(enabled=True, is_online=True).exists()
    return {"worker_alive": worker_alive, "backend_online": backend_online, "ok": worker_alive and backend_online}


def _checkpoint_info(checkpoints) -> dict:
    # Passed to the page's script with json_script: descriptions and defaults per model.
    return {
        c.name: {
            "description": c.description,
            "width": c.default_width,
            "height": c.default_height,
            "steps": c.default_steps,
            "cfg": c.default_cfg,
            "sampler": c.default_sampler,
            "scheduler": c.default_scheduler,
        }
        for c in checkpoints
    }


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


def queue_text(position: int | None) -> str:
    if position is None:
        return ""
    if position == 1:
        return _("Next in the queue")
    return _("%(ordinal)s in the queue") % {"ordinal": _ordinal(position)}


def task_stage(task: GenerationTask) -> str:
    """Where the task is, in words."""
    if task.status == TaskStatus.PENDING:
        if task.backend_id:
            return _("Sent to an image server, about to start")
        return _("Waiting in the queue")
    if task.status == TaskStatus.PROCESSING:
        if task.progress_node:
            return str(NODE_LABELS.get(task.progress_node, task.progress_node))
        return _("Starting on the image server")
    return str(TaskStatus(task.status).label)


def _enabled_templates() -> list[WorkflowTemplate]:
    return list(WorkflowTemplate.objects.filter(enabled=True).order_by("kind", "name", "pk"))


def _template_info(templates) -> dict:
    return {t.slug: {"kind": t.kind, "image": "image" in (t.bindings or {}), "description": t.description,
                     "denoise": "denoise" in (t.bindings or {}), "size": "width" in (t.bindings or {})}
            for t in templates}


def _prefill(request, form_initial: dict) -> tuple[dict, bool]:
    """Initial values from the query string ("use these settings again")."""
    values = {key: request.GET[key] for key in PREFILL_FIELDS if request.GET.get(key, "") != ""}
    if not values:
        return form_initial, False
    initial = dict(form_initial)
    initial.update(values)
    if "seed" in values:
        initial["seed_random"] = False
    if "width" in values and "height" in values and "size" not in values:
        size = f"{values['width']}x{values['height']}"
        initial["size"] = size if any(f"{w}x{h}" == size for w, h in SIZE_PRESETS) else "custom"
    return initial, True


def _source_choices(user) -> dict:
    uploads = list(source_image_list(user=user)[:SOURCE_CHOICES])
    results = list(
        GeneratedImage.objects.filter(task__user=user, task__status=TaskStatus.COMPLETED)
        .exclude(thumbnail="")
        .order_by("-created_at", "-id")[:SOURCE_CHOICES]
    )
    return {"uploads": uploads, "results": results}


def _resolve_source(request, form) -> int | None:
    """The SourceImage id the form asks for: a new upload, a past upload, or a result.

    Errors go beside the source fields of the form; returns None then.
    """
    upload = form.cleaned_data.get("source_file")
    choice = form.cleaned_data.get("source") or ""
    try:
        if upload:
            return source_image_create(user=request.user, file=upload, name=upload.name).pk
        if choice.startswith("s"):
            return source_image_get(user=request.user, source_id=int(choice[1:])).pk
        if choice.startswith("r"):
            image = result_image_get_own(user=request.user, image_id=int(choice[1:]))
            return source_image_from_result(user=request.user, image=image).pk
    except ValidationError as exc:
        field = "source_file" if upload else "source"
        for messages_ in exc.message_dict.values():
            form.add_error(field, messages_)
    except (Http404, PermissionDenied):
        form.add_error("source", _("That picture is not available any more; pick another."))
    return None


@login_required
@require_http_methods(["GET", "POST"])
def generate(request):
    checkpoints = list(checkpoint_list_usable())
    templates = _enabled_templates()
    prefilled = False
    if request.method == "POST":
        form = GenerateForm(request.POST, request.FILES, checkpoints=checkpoints, templates=templates)
        if form.is_valid():
            kwargs = form.service_kwargs()
            source_id = None
            if form.wants_source:
                source_id = _resolve_source(request, form)
            if not form.errors:
                template = form.selected_template()
                if template is not None and "image" in (template.bindings or {}):
                    kwargs["source_image"] = source_id
                    if source_id is None:
                        form.add_error("source_file", _("Upload a picture or pick one below to start from."))
                else:
                    # A picture left selected under a text-to-image template is not sent.
                    kwargs["denoise"] = None
                if template is not None and "denoise" not in (template.bindings or {}):
                    kwargs["denoise"] = None
            if not form.errors:
                try:
                    task = generation_create(user=request.user, **kwargs)
                except ValidationError as exc:
                    form.apply_service_errors(exc)
                except GenerationError as exc:  # the daily quota
                    form.add_error(None, exc.message)
                else:
                    return redirect("generation:task", task_id=task.pk)
    else:
        initial = {}
        if checkpoints:
            from .forms import _initial_for

            initial = _initial_for(checkpoints[0])
        default = template_default()
        if default is not None:
            initial["template"] = default.slug
        initial, prefilled = _prefill(request, initial)
        if request.GET.get("source") and not request.GET.get("template"):
            img2img = template_default(kind=WorkflowTemplate.KIND_IMG2IMG)
            if img2img is not None:
                initial["template"] = img2img.slug
        form = GenerateForm(initial=initial, checkpoints=checkpoints, templates=templates)

    selected = form["model"].value() or (checkpoints[0].name if checkpoints else "")
    selected_checkpoint = next((c for c in checkpoints if c.name == selected), None)
    last_task = GenerationTask.objects.filter(user=request.user).order_by("-created_at", "-id").only("seed").first()
    sources = _source_choices(request.user)
    picked = form["source"].value() or ""
    picked_upload = None
    if picked.startswith("s") and picked[1:].isdigit():
        picked_upload = next((s for s in sources["uploads"] if s.pk == int(picked[1:])), None)
        if picked_upload is None:
            picked_upload = source_image_list(user=request.user).filter(pk=int(picked[1:])).first()
            if picked_upload is not None:
                sources["uploads"].insert(0, picked_upload)
    for source in sources["uploads"]:
        source.choice = f"s{source.pk}"
    for image in sources["results"]:
        image.choice = f"r{image.pk}"
    context = {
        "form": form,
        "checkpoints": checkpoints,
        "templates": templates,
        "show_templates": len(templates) > 1,
        "template_info": _template_info(templates),
        "show_source": form.wants_source,
        "sources": sources,
        "picked_source": picked,
        "selected_checkpoint": selected_checkpoint,
        "checkpoint_info": _checkpoint_info(checkpoints),
        "health": _service_health(),
        "last_seed": last_task.seed if last_task else None,
        # The browser restores the user's last choices only on a fresh, unprefilled form.
        "restore_choices": request.method == "GET" and not prefilled,
        "recent_tasks": generation_list(user=request.user)[:RECENT_TASKS],
    }
    return render(request, "generation/generate.html", context)


def _error_rows(task) -> tuple[dict[str, list[str]], list[tuple[str, list[str]]]]:
    """The task's error_fields split into those beside a parameter and the rest (labelled)."""
    labels = {f.name: f.verbose_name for f in task._meta.get_fields() if hasattr(f, "verbose_name")}
    labels["__all__"] = _("Workflow")
    beside: dict[str, list[str]] = {}
    rest = []
    for key, value in (task.error_fields or {}).items():
        value = [str(v) for v in (value if isinstance(value, list) else [value])]
        param = ERROR_PARAM.get(key)
        if param:
            beside.setdefault(param, []).extend(value)
        else:
            rest.append((str(labels.get(key, key)), value))
    return beside, rest


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


def _param_rows(task: GenerationTask, errors: dict[str, list[str]]) -> list[dict]:
    rows = [
        ("prompt", _("Prompt"), task.prompt, True),
        ("negative_prompt", _("Negative prompt"), task.negative_prompt, True),
        ("model", _("Model"), task.checkpoint.shown_name if task.checkpoint else task.model_name, False),
    ]
    if task.template_id:
        rows.append(("template", _("Workflow"), task.template.name, False))
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
    position = queue_position(task=task) if task.status == TaskStatus.PENDING else None
    beside, rest = _error_rows(task)
    context = {
        "task": task,
        "images": images,
        "active": active,
        "owner": owner,
        "error_beside": beside,
        "param_rows": _param_rows(task, beside),
        "error_fields": rest,
        "queue_text": queue_text(position),
        "stage": task_stage(task),
        "settings_query": settings_query(task),
        "share_url": request.build_absolute_uri(reverse("generation:shared_task", args=[task.share_token]))
        if task.share_token else "",
        "progress_percent": round(task.progress_fraction * 100),
        "node_label": NODE_LABELS.get(task.progress_node, task.progress_node),
        "health": _service_health() if active else None,
        "poll": {
            "statusUrl": reverse("api-generation-status", args=[task.pk]),
            "stateUrl": reverse("generation:task_state", args=[task.pk]),
            "previewUrl": reverse("generation:task_preview", args=[task.pk]),
            "active": active,
            "status": task.status,
            "labels": {
                "nodes": {key: str(value) for key, value in NODE_LABELS.items()},
                "statuses": {value: str(label) for value, label in TaskStatus.choices},
                "waiting": _("Waiting for a free backend…"),
                "starting": _("Starting…"),
                "step": _("Step %(value)s of %(max)s"),
                "offline": _("Lost contact with the server; retrying…"),
            },
        },
    }
    return render(request, "generation/task_detail.html", context)


@login_required
@require_GET
def task_state(request, task_id: int):
    """What the task page adds to the status API while waiting: queue place and stage in words."""
    task = generation_get(user=request.user, task_id=task_id)
    position = queue_position(task=task) if task.status == TaskStatus.PENDING else None
    response = JsonResponse({
        "status": task.status,
        "queue_position": position,
        "queue_text": queue_text(position),
        "stage": task_stage(task),
    })
    response["Cache-Control"] = "no-store"
    return response


@login_required
def task_preview(request, task_id: int):
    return preview_response(generation_get(user=request.user, task_id=task_id))


def _own_task(request, task_id: int) -> GenerationTask:
    """The caller's own task (staff included: sharing, zips and copies are the owner's acts)."""
    return get_object_or_404(GenerationTask.objects.select_related("template"), pk=task_id, user=request.user)


def _task_action(request, task_id: int, service, success: str):
    """Run a task service for the page; its refusal (e.g. already finished) becomes a message."""
    task = generation_get(user=request.user, task_id=task_id)
    try:
        service(task=task)
    except GenerationError as exc:
        messages.error(request, exc.message)
    else:
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
        messages.error(request, " ".join(m for msgs in exc.message_dict.values() for m in msgs))
        return redirect(reverse("generation:generate") + "?" + settings_query(task, seed=False))
    except GenerationError as exc:
        messages.error(request, exc.message)
        return redirect("generation:task", task_id=task.pk)
    return redirect("generation:task", task_id=new.pk)


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
        messages.error(request, exc.message)
    else:
        messages.success(request, _("Anyone with the link can now see this task's pictures and prompt."))
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
        messages.success(request, _("Task #%(id)d deleted.") % {"id": task_id})
        return redirect("generation:history")
    return render(request, "generation/task_confirm_delete.html", {"task": task})


def _day_start(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, dtime.min))


def _history_filters(request) -> tuple[HistoryFilterForm, dict]:
    models = (
        GenerationTask.objects.filter(user=request.user).order_by("model_name").values_list("model_name", flat=True)
        .distinct()
    )
    form = HistoryFilterForm(request.GET or None, models=list(models), statuses=TaskStatus.choices)
    filters: dict = {}
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        filters = {
            "search": data.get("q") or None,
            "status": data.get("status") or None,
            "model_name": data.get("model") or None,
            "created_after": _day_start(data["date_from"]) if data.get("date_from") else None,
            # The end date is inclusive for people: up to the start of the next day.
            "created_before": _day_start(data["date_to"] + timedelta(days=1)) if data.get("date_to") else None,
        }
    return form, filters


@login_required
def history(request):
    form, filters = _history_filters(request)
    paginator = Paginator(generation_list(user=request.user, **filters), HISTORY_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page,
        "paginator": paginator,
        "filter_form": form,
        "filtered": any(v for v in filters.values()),
        "query": query.urlencode(),
    }
    return render(request, "generation/history.html", context)


def _selected_tasks(request, data) -> list[GenerationTask]:
    ids = [int(i) for i in data.getlist("ids") if str(i).isdigit()][:BULK_LIMIT]
    # Only the caller's own tasks: anyone else's id is silently not there.
    return list(GenerationTask.objects.filter(user=request.user, pk__in=ids).order_by("-created_at", "-id"))


@login_required
@require_POST
def history_delete(request):
    """Delete several tasks: the first POST shows what will go, confirm=yes deletes."""
    tasks = _selected_tasks(request, request.POST)
    if not tasks:
        messages.error(request, _("Select at least one task first."))
        return redirect("generation:history")
    if request.POST.get("confirm") == "yes":
        for task in tasks:
            generation_delete(task=task)
        messages.success(
            request, ngettext("%(n)d task deleted.", "%(n)d tasks deleted.", len(tasks)) % {"n": len(tasks)}
        )
        return redirect("generation:history")
    return render(request, "generation/history_confirm_delete.html", {"tasks": tasks})


@login_required
@require_GET
def history_zip(request):
    tasks = _selected_tasks(request, request.GET)
    if not tasks:
        messages.error(request, _("Select at least one task first."))
        return redirect("generation:history")
    images = (
        GeneratedImage.objects.filter(task__in=[t.pk for t in tasks], task__status=TaskStatus.COMPLETED)
        .order_by("-task__created_at", "-task_id", "index")
    )
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    return images_zip_response(images=images, filename=f"easel-{stamp}.zip")


def _image(request, image_id: int, *, thumbnail: bool):
    response = image_response(image_get(user=request.user, image_id=image_id), thumbnail=thumbnail)
    if request.GET.get("download") == "1":
        response["Content-Disposition"] = content_disposition_header(True, response.filename)
    return response


@login_required
def image_file(request, image_id: int):
    return _image(request, image_id, thumbnail=False)


@login_required
def image_thumbnail(request, image_id: int):
    return _image(request, image_id, thumbnail=True)


@login_required
def source_file(request, source_id: int):
    """A source image for its owner (the generate page's picker shows them)."""
    source = source_image_get(user=request.user, source_id=source_id)
    try:
        handle = source.file.storage.open(source.file.name, "rb")
    except (FileNotFoundError, OSError) as exc:
        raise Http404 from exc
    response = FileResponse(handle, content_type=source.content_type)
    response["Cache-Control"] = "private, max-age=3600"
    return response


# --- public share links (no sign-in) ---------------------------------------------


def _no_index(response):
    # A shared link is public, not published: keep it out of search engines.
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def shared_task(request, token: str):
    task = shared_task_get(token=token)
    response = render(request, "generation/shared.html", {
        "token": token, "prompt": task.prompt, "images": list(shared_images(task=task)),
    })
    response["Cache-Control"] = "private, no-cache"
    return _no_index(response)


def _shared_image(request, token: str, image_id: int, *, thumbnail: bool):
    image = shared_image_get(token=token, image_id=image_id)
    response = image_response(image, thumbnail=thumbnail)
    # Revocation must bite at once: a browser re-asks every time.
    response["Cache-Control"] = "private, no-cache"
    if request.GET.get("download") == "1":
        response["Content-Disposition"] = content_disposition_header(True, response.filename)
    return _no_index(response)


def shared_image(request, token: str, image_id: int):
    return _shared_image(request, token, image_id, thumbnail=False)


def shared_image_thumb(request, token: str, image_id: int):
    return _shared_image(request, token, image_id, thumbnail=True)
