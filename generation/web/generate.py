"""The generate page: the form, the models and workflows to pick from, and the pictures
to start image-to-image from."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from config.uploads import upload_refused, upload_too_large_message
from models_catalog import inputs as kinds
from models_catalog.models import WorkflowTemplate
from models_catalog.selectors import checkpoint_list_usable, online_holders, template_default, usable_files_online
from models_catalog.templates import PARAMETER_NAMES

from ..errors import GenerationError
from ..gallery.selectors import result_image_get_own, source_image_get, source_image_list
from ..gallery.uploads import source_image_create, source_image_from_result
from ..models import GeneratedImage, GenerationTask, TaskStatus
from ..selectors import generation_list
from ..services import generation_check, generation_create
from .forms import LORA_ROWS_FIELD, PREFILL_FIELDS, SIZE_PRESETS, TOOL_PREFIX, GenerateForm, initial_for
from .cards import card_html, wants_json, workspace_cards
from .status import service_health

# The results pane: the user's latest runs, newest first.
RECENT_TASKS = 12
SOURCE_CHOICES = 8


def _checkpoint_info(checkpoints) -> dict:
    # Passed to the page's script with json_script: descriptions and defaults per model.
    return {
        c.name: {
            "description": c.shown_description,
            "width": c.default_width,
            "height": c.default_height,
            "steps": c.default_steps,
            "cfg": c.default_cfg,
            "sampler": c.default_sampler,
            "scheduler": c.default_scheduler,
        }
        for c in checkpoints
    }


def _enabled_templates() -> list[WorkflowTemplate]:
    return list(WorkflowTemplate.objects.filter(enabled=True).order_by("kind", "name", "pk"))


def _template_info(templates) -> dict:
    # "tool": the template's own inputs; switching to or from such a template reloads the
    # page, whose form is built for the template picked.
    return {t.slug: {"kind": t.kind, "image": t.takes_image, "description": t.shown_description,
                     "denoise": t.takes_denoise, "size": t.takes("width"), "prompt": t.takes("prompt"),
                     "model": t.takes("checkpoint"),
                     "tool": [i.name for i in t.input_list if i.name not in PARAMETER_NAMES]}
            for t in templates}


def _availability(form, checkpoints) -> dict:
    """What the page's script needs to say live that no online server has the whole
    combination chosen (passed with json_script, no extra request): for the model and
    each file the form offers, its name shown and the online backends holding it; and
    which form fields pick a file of which kind."""
    held = online_holders()
    template = form.selected_template()
    fields: dict[str, str] = {}
    if template is None or template.takes("checkpoint"):
        fields["model"] = "checkpoint"
    for field in form.tool:
        if field.spec.kind != kinds.FILE:
            continue
        if form.lora_slots and field.name == f"lora_{form.lora_slots[0]}":
            for index in range(len(form.lora_slots)):
                fields[f"{LORA_ROWS_FIELD}_{index}_name"] = "lora"
        elif TOOL_PREFIX + field.name in form.fields:
            fields[TOOL_PREFIX + field.name] = field.spec.file_kind
    files = {"checkpoint": {c.name: {"title": c.shown_name, "backends": held["checkpoint"].get(c.name, [])}
                            for c in checkpoints}}
    for kind in sorted(set(fields.values()) - {"checkpoint"}):
        files[kind] = {name: {"title": title, "backends": held.get(kind, {}).get(name, [])}
                       for name, title, _online in usable_files_online(kind)}
    return {"fields": fields, "files": files}


def _chosen(form, field_name: str):
    """A field's value as the page shows it (a rows subfield read from the rows value)."""
    if field_name.startswith(LORA_ROWS_FIELD + "_"):
        index = int(field_name[len(LORA_ROWS_FIELD) + 1:].split("_")[0])
        value = form[LORA_ROWS_FIELD].value() or []
        if value and isinstance(value[0], dict):
            return value[index]["name"] if index < len(value) else ""
        return value[2 * index] if 2 * index < len(value) else ""
    value = form[field_name].value()
    if value in (None, ""):
        # A select with nothing chosen shows its first option: that one counts.
        choices = list(getattr(form.fields[field_name], "choices", ()))
        value = choices[0][0] if choices else ""
    return value


def availability_warning(form, availability: dict) -> str:
    """The sentence shown by the submit button when no online server holds every file
    chosen ("" when one does, or nothing is chosen). generate.js says the same, live."""
    chosen, common = [], None
    for field_name, kind in availability["fields"].items():
        value = _chosen(form, field_name)
        entry = availability["files"].get(kind, {}).get(str(value or ""))
        if entry is None or any(title == entry["title"] for title in chosen):
            continue
        chosen.append(entry["title"])
        common = set(entry["backends"]) if common is None else common & set(entry["backends"])
    if common is None or common:
        return ""
    return availability_message() % {"names": _(", ").join(chosen)}


def availability_message() -> str:
    """Read in the request's language; %(names)s is filled here and by generate.js."""
    return _("No image server that is online has all of these: %(names)s. The task will wait until one does.")


def _source_url(choice: str) -> str:
    """The full-size picture of a picked source ("s<id>" upload, "r<id>" result): what the mask editor draws on."""
    if choice[:1] == "s" and choice[1:].isdigit():
        return reverse("generation:source_file", args=[int(choice[1:])])
    if choice[:1] == "r" and choice[1:].isdigit():
        return reverse("generation:image", args=[int(choice[1:])])
    return ""


def _tool_uploads(request, form, kwargs: dict) -> None:
    """The tool's pictures (a mask, a second image) stored as the user's uploads; their ids go to the service."""
    for name in form.tool_uploads:
        upload = form.cleaned_data.get(TOOL_PREFIX + name)
        if not upload:
            continue
        try:
            kwargs["inputs"][name] = source_image_create(user=request.user, file=upload, name=upload.name).pk
        except ValidationError as exc:
            for messages_ in exc.message_dict.values():
                form.add_error(TOOL_PREFIX + name, messages_)


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
        form = GenerateForm(request.POST, request.FILES, checkpoints=checkpoints, templates=templates,
                            source_url=_source_url(request.POST.get("source", "")))
        if upload_refused(request):
            # The picture was cut off while it arrived; the fields sent before it are kept.
            form.add_error("source_file", upload_too_large_message())
        if form.is_valid():
            kwargs = form.service_kwargs()
            if form.wants_source:
                kwargs["source_image"] = _resolve_source(request, form)
                if kwargs["source_image"] is None and not form.errors:
                    form.add_error("source_file", _("Upload a picture or pick one below to start from."))
            _tool_uploads(request, form, kwargs)
            if not form.errors:
                try:
                    # Lenient: what the chosen template does not take (a picture left
                    # selected, a denoise) is dropped, not refused (services.template_fit).
                    task = generation_create(user=request.user, lenient=True, **kwargs)
                except ValidationError as exc:
                    form.apply_service_errors(exc)
                except GenerationError as exc:  # the daily quota
                    form.add_error(None, exc.message)
                else:
                    if wants_json(request):
                        return JsonResponse({
                            "id": task.pk,
                            "url": reverse("generation:task", args=[task.pk]),
                            "card": card_html(request, generation_list(user=request.user).get(pk=task.pk)),
                        }, status=201)
                    return redirect("generation:task", task_id=task.pk)
        else:
            # Some fields did not even parse: the service still judges the rest, so the
            # page shows every problem at once instead of one round at a time.
            # (The picture is only read from a valid form: its absence is no problem yet.)
            errors = generation_check(user=request.user, lenient=True, **form.service_kwargs())
            form.apply_service_errors({k: v for k, v in errors.items()
                                       if k not in ("source_image", "image", *form.tool_uploads)})
        if wants_json(request):
            return _errors_json(request, form)
    else:
        initial = initial_for(checkpoints[0]) if checkpoints else {}
        default = template_default()
        if default is not None:
            initial["template"] = default.slug
        initial, prefilled = _prefill(request, initial)
        if request.GET.get("source") and not request.GET.get("template"):
            img2img = template_default(kind=WorkflowTemplate.KIND_IMG2IMG)
            if img2img is not None:
                initial["template"] = img2img.slug
        form = GenerateForm(initial=initial, checkpoints=checkpoints, templates=templates,
                            source_url=_source_url(str(initial.get("source", ""))))

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
    availability = _availability(form, checkpoints)
    context = {
        "form": form,
        "availability": availability,
        "availability_warning": availability_warning(form, availability),
        "availability_message": availability_message(),
        "availability_separator": _(", "),
        "checkpoints": checkpoints,
        "templates": templates,
        "show_templates": len(templates) > 1,
        "template_info": _template_info(templates),
        "tool_basic": form.tool_bound_fields("basic"),
        "tool_advanced": form.tool_bound_fields("advanced"),
        # Also when a refused picture cut the form short before its workflow arrived.
        "show_source": form.wants_source or "source_file" in form.errors,
        "sources": sources,
        "picked_source": picked,
        "selected_checkpoint": selected_checkpoint,
        "checkpoint_info": _checkpoint_info(checkpoints),
        "health": service_health(),
        "last_seed": last_task.seed if last_task else None,
        # The browser restores the user's last choices only on a fresh, unprefilled form.
        "restore_choices": request.method == "GET" and not prefilled,
        "recent_tasks": workspace_cards(generation_list(user=request.user)[:RECENT_TASKS]),
        "workspace_labels": {
            "failed": _("The task could not be sent. Please try again."),
            "action_failed": _("That could not be done. Please try again."),
            "offline": _("Lost contact with the server; retrying…"),
            "sent": _("Sent: the new task is at the top of your results."),
        },
    }
    return render(request, "generation/generate.html", context)


# --- the workspace: the results pane beside the form -----------------------------------
#
# The page works without script: the form POSTs, the view redirects to the new task, the
# pane is rendered with the page. With script (static/js/workspace.js) the same form is
# posted asking for JSON: the view answers the new task's card (rendered here, so the
# words and escaping are the server's) or the form's errors; each running card follows
# its task's state.json and, once finished, swaps itself for workspace_card's answer.


def _errors_json(request, form) -> JsonResponse:
    """A refused form, for the script to show in place: each field's messages (plain text,
    written in with textContent) and the summary above the form (rendered, escaped)."""
    fields = {}
    for name, errors in form.errors.items():
        if name == "__all__":
            continue
        field = form[name] if name in form.fields else None
        fields[name] = {"id": field.auto_id if field is not None else "", "messages": [str(e) for e in errors]}
    return JsonResponse({
        "fields": fields,
        "summary": render_to_string("generation/_form_errors.html", {"form": form}, request=request),
    }, status=400)


@login_required
@require_GET
def workspace_card(request, task_id: int):
    """One result card of the workspace (an HTML fragment): the caller's own tasks only."""
    task = get_object_or_404(generation_list(user=request.user), pk=task_id)
    return HttpResponse(card_html(request, task))
