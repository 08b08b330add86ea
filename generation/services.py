"""Writes on generation tasks. Pages, the API, the admin and jobs all come through here.

The rules a request must keep live in `generation.limits` (bounds), `generation.quota`
(the daily quota) and the catalog (models, templates); the state changes themselves in
`generation.transitions`.
"""
from __future__ import annotations

import logging
import secrets
import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from config.prepared import PreparedCreate
from models_catalog import inputs as kinds
from models_catalog.files import graph_files
from models_catalog.models import WorkflowTemplate
from models_catalog.selectors import (
    checkpoint_default,
    checkpoint_get_usable,
    template_default,
    template_get_enabled,
    usable_file_names,
)
from models_catalog.templates import template_fields

from . import transitions
from .errors import TaskStateError
from .fleet.dispatch import dispatch
from .fleet.pump import pumps_alive
from .gallery.results import files_delete, results_delete
from .limits import MAX_SEED, parameter_errors
from .models import GenerationTask, SourceImage
from .queue import enqueue
from .quota import quota_check, user_lock
from .webhooks.targets import callback_url_validate
from .volcengine.catalog import MODELS as VOLC_MODELS

logger = logging.getLogger(__name__)


def _template_for(*, slug: str | None, wants_image: bool, errors: dict) -> WorkflowTemplate | None:
    if slug:
        template = template_get_enabled(slug=slug)
        if template is None:
            errors["template"] = [_("Unknown or disabled template: %(name)s.") % {"name": slug}]
        return template
    kind = WorkflowTemplate.KIND_IMG2IMG if wants_image else WorkflowTemplate.KIND_TXT2IMG
    template = template_default(kind=kind)
    if template is None:
        errors["template"] = [_("No workflow template is enabled for this kind of task. Ask staff to enable one.")]
    return template


def template_fit(
    template: WorkflowTemplate, *, source_image, denoise: float | None, errors: dict, lenient: bool = False
) -> tuple[object, float | None]:
    """The one rule for what a template takes: its bindings decide whether a source
    image and a denoise are sent. Returns the (source_image, denoise) to store.

    Strict (the API): a value the template does not take is an error. Lenient (the
    page, whose form always has both fields): such values are dropped. Either way a
    template that starts from a picture needs one, and a bound denoise gets the
    studio's default when none is given.
    """
    if template.takes_image and source_image is None:
        errors["source_image"] = [_("This template starts from a picture: upload or choose a source image.")]
    if not template.takes_image and source_image is not None:
        if lenient:
            source_image = None
        else:
            errors["source_image"] = [_("This template does not take a source image.")]
    if not template.takes_denoise:
        if denoise is not None and not lenient:
            errors["denoise"] = [_("This template has no denoise setting.")]
        denoise = None
    elif denoise is None:
        denoise = settings.EASEL_DEFAULT_DENOISE
    return source_image, denoise


# The studio's own defaults: the last step of the order of precedence (request →
# template input default → checkpoint default → studio default), for a template that
# runs without a checkpoint (upscaling) or a value nothing else sets.
STUDIO_DEFAULTS = {
    "width": 512, "height": 512, "steps": 20, "cfg": 7.0, "sampler": "euler", "scheduler": "normal",
    "negative_prompt": "", "batch_size": 1,
}
_CHECKPOINT_DEFAULTS = {
    "width": "default_width", "height": "default_height", "steps": "default_steps", "cfg": "default_cfg",
    "sampler": "default_sampler", "scheduler": "default_scheduler",
}


def _defaulted(name: str, given, field, checkpoint):
    """One of Easel's parameters after the order of precedence."""
    if given is not None:
        return given
    if field is not None and field.default is not None:
        return field.default
    if checkpoint is not None and name in _CHECKPOINT_DEFAULTS:
        return getattr(checkpoint, _CHECKPOINT_DEFAULTS[name])
    return STUDIO_DEFAULTS.get(name)


def _mask_fits(*, user, mask_id: int, source) -> list[str]:
    """A mask is painted over its picture: it has the picture's size, pixel for pixel
    (ComfyUI would otherwise stretch it, or refuse the prompt half way through)."""
    if source is None:
        return []
    mask = SourceImage.objects.filter(user=user, pk=mask_id).only("width", "height").first()
    if mask is None or (mask.width, mask.height) == (source.width, source.height):
        return []
    return [_("The mask is %(mask_width)s × %(mask_height)s pixels but the picture is %(width)s × %(height)s: "
              "it must have the picture's size.") % {
        "mask_width": mask.width, "mask_height": mask.height, "width": source.width, "height": source.height}]


def _custom_inputs(
    *, user, fields: list, given, errors: dict, strict: bool, lenient: bool, source=None
) -> tuple[dict, dict[str, list[str]]]:
    """The template's custom inputs of a request: (values to store, files they need).
    A value left out gets the input's default; an optional input left empty is left
    out of the graph. Problems go to `errors` under the input's name. `source` is the
    task's picture (a SourceImage), which a mask must match in size."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        errors["inputs"] = [_("Must be an object of input names and values.")]
        return {}, {}
    custom = {f.name: f for f in fields if not f.builtin}
    unknown = sorted(set(given) - set(custom))
    if unknown and not lenient:
        errors["inputs"] = [_("This template has no input named %(names)s.") % {"names": ", ".join(unknown)}]
    values: dict = {}
    files: dict[str, list[str]] = {}
    for name, field in custom.items():
        spec = field.spec
        value = given.get(name)
        if value in (None, "") and spec.kind != kinds.STRING:
            value = field.default
        choices = usable_file_names(spec.file_kind) if spec.kind == kinds.FILE else None
        if value in (None, "") and choices and not field.optional:
            value = choices[0]  # like the default model: the first file the catalog offers
        if value in (None, ""):
            if field.optional or spec.kind == kinds.STRING:
                values[name] = None if field.optional else (value or "")
                continue
            errors[name] = [_("This input is required.") if spec.kind not in kinds.UPLOAD_KINDS
                            else _("Upload a picture for this input.")]
            continue
        cleaned, problems = kinds.value_clean(spec, value, choices=choices, strict=strict)
        if not problems and spec.kind in kinds.UPLOAD_KINDS:
            if not SourceImage.objects.filter(user=user, pk=cleaned).exists():
                problems = [_("No such uploaded picture.")]
            elif spec.kind == kinds.MASK:
                problems = _mask_fits(user=user, mask_id=cleaned, source=source)
        if problems:
            errors[name] = problems
            continue
        values[name] = cleaned
        if spec.kind == kinds.FILE and spec.file_kind != "checkpoint":
            files.setdefault(spec.file_kind, []).append(cleaned)
    return values, {kind: sorted(set(names)) for kind, names in files.items()}


def _resolve(
    *,
    user,
    prompt: str | None = None,
    model_name: str | None = None,
    negative_prompt: str | None = None,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    cfg: float | None = None,
    sampler: str | None = None,
    scheduler: str | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    template: str | None = None,
    source_image: int | None = None,
    denoise: float | None = None,
    inputs: dict | None = None,
    callback_url: str = "",
    api_token=None,
    lenient: bool = False,
    strict: bool = False,
) -> tuple[dict, dict[str, list[str]]]:
    """A request's task fields (defaults filled in) and every problem with it, per field.

    `template` is a template slug (default: the default template for text-to-image, or
    for image-to-image when a `source_image` id is given). What a request may carry
    follows from the template's inputs: Easel's own parameters as the arguments above
    (`template_fit` for the picture and denoise; `lenient` drops what the template does
    not take instead of refusing it), custom inputs in `inputs` (name → value; `strict`
    wants JSON's own types, as the API sends them). Defaults follow one order:
    the request, the template input's default, the checkpoint's, the studio's.
    """
    errors: dict[str, list[str]] = {}
    source = None
    if source_image is not None:
        source = SourceImage.objects.filter(user=user, pk=source_image).first()
        if source is None:
            errors["source_image"] = [_("No such source image.")]
    workflow = _template_for(slug=template, wants_image=source_image is not None, errors=errors)
    fields = {f.name: f for f in template_fields(workflow)} if workflow is not None else {}
    takes = (lambda name: name in fields) if workflow is not None else (lambda name: True)
    if workflow is not None:
        fitted, denoise = template_fit(
            workflow, source_image=source_image, denoise=denoise, errors=errors, lenient=lenient
        )
        if fitted is None:
            source = None

    checkpoint = None
    if takes("checkpoint"):
        if model_name:
            checkpoint = checkpoint_get_usable(name=model_name)
            if checkpoint is None:
                errors["model_name"] = [_("Unknown or unavailable model: %(name)s.") % {"name": model_name}]
        else:
            checkpoint = checkpoint_default()
            if checkpoint is None:
                errors["model_name"] = [_("No model is available yet. Ask staff to add a ComfyUI backend.")]
    elif model_name and not lenient:
        errors["model_name"] = [_("This template uses no model of yours.")]

    # A token may carry a default callback for the tasks created with it.
    callback_url = callback_url or (api_token.webhook_url if api_token is not None else "")
    if callback_url:
        try:
            callback_url_validate(callback_url)
        except ValidationError as exc:
            errors["callback_url"] = exc.messages

    given = {
        "prompt": prompt, "negative_prompt": negative_prompt, "width": width, "height": height, "steps": steps,
        "cfg": cfg, "sampler": sampler, "scheduler": scheduler, "batch_size": batch_size, "seed": seed,
    }
    values = {name: _defaulted(name, value, fields.get(name), checkpoint) for name, value in given.items()}
    values["prompt"] = (values["prompt"] or "").strip()
    values["negative_prompt"] = (values["negative_prompt"] or "").strip()
    checked = {**values, "denoise": denoise}
    if not takes("prompt"):
        checked.pop("prompt")  # an upscale takes no prompt: none is asked for
    # Checked even when the model is unknown, so one answer lists every problem.
    for name, messages in parameter_errors(checked).items():
        errors.setdefault(name, messages)
    if checkpoint is not None and checkpoint.ckpt_name in VOLC_MODELS:
        _volc_errors(VOLC_MODELS[checkpoint.ckpt_name], checked, source_image is not None, errors)
    # A template may narrow Easel's own bounds (fewer steps, smaller pictures).
    for name in ("width", "height", "steps", "cfg", "batch_size", "denoise"):
        field, value = fields.get(name), checked.get(name)
        if field is not None and value is not None and name not in errors:
            problems = kinds.value_clean(field.spec, value)[1]
            if problems:
                errors[name] = problems
    custom, files = ({}, {})
    if workflow is not None:
        custom, files = _custom_inputs(
            user=user, fields=list(fields.values()), given=inputs, errors=errors, strict=strict, lenient=lenient,
            source=source,
        )
        # The files the template itself loads (a fixed VAE, an upscale model nobody picks)
        # count as much as those chosen: the task only goes where all of them are.
        for kind, names in graph_files(workflow.graph, bindings=workflow.bindings).items():
            if kind != "checkpoint":
                files[kind] = sorted(set(files.get(kind, [])) | names)
    values.update({
        "checkpoint": checkpoint, "model_name": checkpoint.name if checkpoint else "", "template": workflow,
        "seed": secrets.randbelow(MAX_SEED) if values["seed"] is None else values["seed"],
        "denoise": denoise, "source_image": source, "callback_url": callback_url, "api_token": api_token,
        "inputs": custom, "required_files": files,
    })
    return values, errors


def _volc_errors(model, checked: dict, with_source: bool, errors: dict) -> None:
    """What a VolcEngine model cannot make (its sizes, one picture per task, no source picture), told at create
    time rather than as a failed task."""
    width, height = checked.get("width"), checked.get("height")
    if width is not None and height is not None and not model.size_ok(width, height):
        message = _("%(name)s makes pictures from %(low)d to %(high)d pixels a side.") % {
            "name": _(model.display_name), "low": model.min_side, "high": model.max_side}
        for name in ("width", "height"):
            errors.setdefault(name, [message])
    if (checked.get("batch_size") or 1) != 1:
        errors.setdefault("batch_size", [_("%(name)s makes one picture per task.") % {
            "name": _(model.display_name)}])
    if with_source:
        errors.setdefault("source_image", [_("The VolcEngine model %(name)s does not take a source image.") % {
            "name": _(model.display_name)}])


def generation_check(*, user, **request) -> dict[str, list[str]]:
    """Every problem of a request (the arguments of `generation_create`), storing nothing.

    A page or API view whose own parsing refused some fields asks this about the rest,
    so the user sees every problem at once instead of one round at a time.
    """
    return _resolve(user=user, **request)[1]


# The task's INSERT, compiled once (config.prepared).
_TASK_CREATE = PreparedCreate(GenerationTask)


def generation_create(*, user, **request) -> GenerationTask:
    """Validate a request, store it as a pending task and queue the job once committed.

    The request: prompt, model_name, negative_prompt, width, height, steps, cfg,
    sampler, scheduler, seed, batch_size, template (a slug), source_image (an upload
    id), denoise, inputs (the template's custom inputs), callback_url, api_token,
    lenient and strict (see `_resolve`). Raises
    ValidationError with per-field messages, or QuotaExceeded; nothing is stored then.
    """
    values, errors = _resolve(user=user, **request)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        # The quota check and the insert under one lock on the user: concurrent creates
        # pass one at a time, so together they can never exceed the quota.
        quota_check(user=user_lock(user), images=values["batch_size"])
        task = _TASK_CREATE.create(GenerationTask(user=user, **values))
        transitions.created(task)
        transaction.on_commit(generation_enqueue)
    return task


def _abandon_later(backend_id: int | None, prompt_id: str) -> None:
    # The job following the prompt also notices and stops it; this covers the moment
    # when no job is following it (a worker restarting).
    if backend_id:
        transaction.on_commit(
            lambda: enqueue("generation_abandon", backend_id, prompt_id)
        )


def generation_cancel(*, task: GenerationTask) -> GenerationTask:
    """Cancel an unfinished task.

    A pending task never reaches a backend. A submitted one is taken off its backend:
    out of ComfyUI's queue if still waiting there, else only its own prompt is
    interrupted (never a global interrupt that would stop another user's work).
    """
    done = transitions.cancel(task)
    task.refresh_from_db()
    if not done:
        raise TaskStateError(_("This task has already finished (%(status)s).") % {"status": task.get_status_display()})
    _abandon_later(task.backend_id, str(task.prompt_id))
    return task


def generation_retry(*, task: GenerationTask) -> GenerationTask:
    """Run a failed or cancelled task again, as the same task (same id for clients).

    It gets a new ComfyUI prompt_id: the old one may still be in a backend's history
    with its old outcome.
    """
    if task.status not in transitions.RETRYABLE_STATUSES:
        raise TaskStateError(_("Only failed or cancelled tasks can be retried."))
    with transaction.atomic():
        # Queued again today, so it counts against today's quota (checked under the lock).
        quota_check(user=user_lock(task.user), images=task.batch_size)
        if not transitions.retry(task):
            raise TaskStateError(_("This task changed meanwhile; reload and try again."))
        results_delete(task=task)
        transaction.on_commit(generation_enqueue)
    task.refresh_from_db()
    return task


# A live pump seen by this process is believed alive for this long: a burst of creates
# asks the database once, not once each. (A pump that dies meanwhile leaves the flag to
# its successor or the tick, as one dying just after the question would.)
PUMP_ALIVE_MEMORY_SECONDS = 1.0
_pump_seen_at = -PUMP_ALIVE_MEMORY_SECONDS


def _pump_alive() -> bool:
    global _pump_seen_at
    if time.monotonic() - _pump_seen_at < PUMP_ALIVE_MEMORY_SECONDS:
        return True
    if not pumps_alive().exists():
        return False
    _pump_seen_at = time.monotonic()
    return True


def forget_pump() -> None:
    global _pump_seen_at
    _pump_seen_at = -PUMP_ALIVE_MEMORY_SECONDS


def generation_enqueue() -> None:
    """Let the dispatcher look at the queue now (a task arrived or came back).

    With a pump alive, nothing: the pump looks for waiting tasks at every poll, so one
    pass serves every create of a burst and a create spends no time on a pass (a fifth of
    its CPU) nor on asking for one. With none alive (it starts, or the cluster is down),
    the dispatcher runs right here; if that fails, a django-q2 job does it instead, and
    the schedule would anyway.
    """
    try:
        if _pump_alive():
            return
        dispatch(probe=False, wait=False)
    except Exception:
        logger.exception("inline dispatch failed; leaving it to a job")
        enqueue("generation_dispatch")


def generation_delete(*, task: GenerationTask) -> None:
    """Delete a task, its images and their files; stop it on its backend if it runs there."""
    images = list(task.images.all())
    backend_id, prompt_id, was_active = task.backend_id, str(task.prompt_id), not task.is_finished
    task.delete()
    transaction.on_commit(lambda: files_delete(images))
    if was_active:
        _abandon_later(backend_id, prompt_id)
