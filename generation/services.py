"""Writes on generation tasks. Pages, the API, the admin and jobs all come through here.

The rules a request must keep live in `generation.limits` (bounds), `generation.quota`
(the daily quota) and the catalog (models, templates); the state changes themselves in
`generation.transitions`.
"""
from __future__ import annotations

import logging
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from models_catalog.models import WorkflowTemplate
from models_catalog.selectors import checkpoint_default, checkpoint_get_usable, template_default

from . import transitions
from .errors import TaskStateError
from .fleet.dispatch import dispatch
from .gallery.results import files_delete, results_delete
from .limits import MAX_SEED, parameter_errors
from .models import GenerationTask, SourceImage
from .queue import enqueue
from .quota import quota_check, user_lock
from .webhooks.targets import callback_url_validate

logger = logging.getLogger(__name__)


def _template_for(*, slug: str | None, wants_image: bool, errors: dict) -> WorkflowTemplate | None:
    if slug:
        template = WorkflowTemplate.objects.filter(slug=slug, enabled=True).first()
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


def _resolve(
    *,
    user,
    prompt: str = "",
    model_name: str | None = None,
    negative_prompt: str = "",
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    cfg: float | None = None,
    sampler: str | None = None,
    scheduler: str | None = None,
    seed: int | None = None,
    batch_size: int = 1,
    template: str | None = None,
    source_image: int | None = None,
    denoise: float | None = None,
    callback_url: str = "",
    api_token=None,
    lenient: bool = False,
) -> tuple[dict, dict[str, list[str]]]:
    """A request's task fields (defaults filled in) and every problem with it, per field.

    `template` is a template slug (default: the default template for text-to-image, or
    for image-to-image when a `source_image` id is given). Which parameters a request
    may carry follows from the template's bindings (`template_fit`; `lenient` drops
    what the template does not take instead of refusing it).
    """
    errors: dict[str, list[str]] = {}
    prompt = (prompt or "").strip()
    negative_prompt = (negative_prompt or "").strip()

    checkpoint = None
    if model_name:
        checkpoint = checkpoint_get_usable(name=model_name)
        if checkpoint is None:
            errors["model_name"] = [_("Unknown or unavailable model: %(name)s.") % {"name": model_name}]
    else:
        checkpoint = checkpoint_default()
        if checkpoint is None:
            errors["model_name"] = [_("No model is available yet. Ask staff to add a ComfyUI backend.")]

    source = None
    if source_image is not None:
        source = SourceImage.objects.filter(user=user, pk=source_image).first()
        if source is None:
            errors["source_image"] = [_("No such source image.")]
    workflow = _template_for(slug=template, wants_image=source_image is not None, errors=errors)
    if workflow is not None:
        fitted, denoise = template_fit(
            workflow, source_image=source_image, denoise=denoise, errors=errors, lenient=lenient
        )
        if fitted is None:
            source = None
    # A token may carry a default callback for the tasks created with it.
    callback_url = callback_url or (api_token.webhook_url if api_token is not None else "")
    if callback_url:
        try:
            callback_url_validate(callback_url)
        except ValidationError as exc:
            errors["callback_url"] = exc.messages

    if checkpoint is not None:
        width = checkpoint.default_width if width is None else width
        height = checkpoint.default_height if height is None else height
        steps = checkpoint.default_steps if steps is None else steps
        cfg = checkpoint.default_cfg if cfg is None else cfg
        sampler = sampler or checkpoint.default_sampler
        scheduler = scheduler or checkpoint.default_scheduler
    # Checked even when the model is unknown, so one answer lists every problem.
    for name, messages in parameter_errors({
        "prompt": prompt, "negative_prompt": negative_prompt, "width": width, "height": height, "steps": steps,
        "cfg": cfg, "sampler": sampler, "scheduler": scheduler, "batch_size": batch_size, "seed": seed,
        "denoise": denoise,
    }).items():
        errors.setdefault(name, messages)
    values = {
        "prompt": prompt, "negative_prompt": negative_prompt, "checkpoint": checkpoint,
        "model_name": checkpoint.name if checkpoint else "", "template": workflow, "width": width,
        "height": height, "steps": steps, "cfg": cfg, "sampler": sampler, "scheduler": scheduler,
        "seed": secrets.randbelow(MAX_SEED) if seed is None else seed, "batch_size": batch_size,
        "denoise": denoise, "source_image": source, "callback_url": callback_url, "api_token": api_token,
    }
    return values, errors


def generation_check(*, user, **request) -> dict[str, list[str]]:
    """Every problem of a request (the arguments of `generation_create`), storing nothing.

    A page or API view whose own parsing refused some fields asks this about the rest,
    so the user sees every problem at once instead of one round at a time.
    """
    return _resolve(user=user, **request)[1]


def generation_create(*, user, **request) -> GenerationTask:
    """Validate a request, store it as a pending task and queue the job once committed.

    The request: prompt, model_name, negative_prompt, width, height, steps, cfg,
    sampler, scheduler, seed, batch_size, template (a slug), source_image (an upload
    id), denoise, callback_url, api_token and lenient (see `_resolve`). Raises
    ValidationError with per-field messages, or QuotaExceeded; nothing is stored then.
    """
    values, errors = _resolve(user=user, **request)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        # The quota check and the insert under one lock on the user: concurrent creates
        # pass one at a time, so together they can never exceed the quota.
        quota_check(user=user_lock(user), images=values["batch_size"])
        task = GenerationTask.objects.create(user=user, **values)
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


def generation_enqueue() -> None:
    """Let the dispatcher look at the queue now (a task arrived or came back).

    Runs the dispatcher right here (it only touches the database); if that fails, a
    django-q2 job does it instead, and the schedule would anyway.
    """
    try:
        dispatch(probe=False)
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
