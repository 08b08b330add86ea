"""Writes on generation tasks. Pages, the API, the admin and jobs all come through here."""
from __future__ import annotations

import logging
import secrets
import uuid
from datetime import datetime, time as dtime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from models_catalog.models import ComfyBackend
from models_catalog.selectors import checkpoint_get_usable, template_default

from .errors import QuotaExceeded, TaskStateError
from .models import ACTIVE_STATUSES, GeneratedImage, GenerationTask, TaskPreview, TaskStatus

logger = logging.getLogger(__name__)

# ComfyUI's KSampler accepts seeds up to 2**64-1; Easel keeps them in a signed 64-bit
# column, so random seeds are drawn below 2**63 and user seeds are bounded the same way.
MAX_SEED = 2**63 - 1
# The samplers and schedulers of ComfyUI 0.3.64 (object_info_core.json, KSampler).
SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim",
    "uni_pc", "uni_pc_bh2",
]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
              "linear_quadratic", "kl_optimal"]


def _check_size(name: str, value: int, errors: dict) -> None:
    low, high = settings.EASEL_MIN_SIZE, settings.EASEL_MAX_SIZE
    if value % 8 or not low <= value <= high:
        errors[name] = [
            _("%(field)s must be a multiple of 8 between %(low)d and %(high)d.")
            % {"field": name, "low": low, "high": high}
        ]


def generation_create(
    *,
    user,
    prompt: str,
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
) -> GenerationTask:
    """Validate a request, store it as a pending task and queue the job once committed.

    `template` is a template slug (default: the default template for text-to-image, or
    for image-to-image when a `source_image` id is given). Which parameters a request
    may carry follows from the template's bindings. Raises ValidationError with
    per-field messages; nothing is stored then.
    """
    errors: dict[str, list[str]] = {}
    prompt = (prompt or "").strip()
    negative_prompt = (negative_prompt or "").strip()
    limit = settings.EASEL_MAX_PROMPT_LENGTH
    if not prompt:
        errors["prompt"] = [_("Write a prompt: describe the picture you want.")]
    elif len(prompt) > limit:
        errors["prompt"] = [_("The prompt is too long (at most %(n)d characters).") % {"n": limit}]
    if len(negative_prompt) > limit:
        errors["negative_prompt"] = [_("The negative prompt is too long (at most %(n)d characters).") % {"n": limit}]

    checkpoint = None
    if model_name:
        checkpoint = checkpoint_get_usable(name=model_name)
        if checkpoint is None:
            errors["model_name"] = [_("Unknown or unavailable model: %(name)s.") % {"name": model_name}]
    else:
        from models_catalog.selectors import checkpoint_list_usable

        checkpoint = checkpoint_list_usable().first()
        if checkpoint is None:
            errors["model_name"] = [_("No model is available yet. Ask staff to add a ComfyUI backend.")]

    source = None
    if source_image is not None:
        from .models import SourceImage

        source = SourceImage.objects.filter(user=user, pk=source_image).first()
        if source is None:
            errors["source_image"] = [_("No such source image.")]
    template_slug = template
    if template_slug:
        from models_catalog.models import WorkflowTemplate

        template = WorkflowTemplate.objects.filter(slug=template_slug, enabled=True).first()
        if template is None:
            errors["template"] = [_("Unknown or disabled template: %(name)s.") % {"name": template_slug}]
    else:
        from models_catalog.models import WorkflowTemplate

        kind = WorkflowTemplate.KIND_IMG2IMG if source_image is not None else WorkflowTemplate.KIND_TXT2IMG
        template = template_default(kind=kind)
        if template is None:
            errors["template"] = [_("No workflow template is enabled for this kind of task. Ask staff to enable one.")]
    if template is not None:
        bound = template.bindings
        if "image" in bound and source_image is None:
            errors["source_image"] = [_("This template starts from a picture: upload or choose a source image.")]
        if "image" not in bound and source_image is not None:
            errors["source_image"] = [_("This template does not take a source image.")]
        if denoise is not None and "denoise" not in bound:
            errors["denoise"] = [_("This template has no denoise setting.")]
        if denoise is None and "denoise" in bound:
            denoise = settings.EASEL_DEFAULT_DENOISE
    if denoise is not None and not 0.0 <= denoise <= 1.0:
        errors["denoise"] = [_("Denoise must be between 0 and 1.")]
    # A token may carry a default callback for the tasks created with it.
    callback_url = callback_url or (api_token.webhook_url if api_token is not None else "")
    if callback_url:
        from .webhooks import callback_url_validate

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
    if width is not None:
        _check_size("width", width, errors)
    if height is not None:
        _check_size("height", height, errors)
    if steps is not None and not 1 <= steps <= settings.EASEL_MAX_STEPS:
        errors["steps"] = [_("Steps must be between 1 and %(n)d.") % {"n": settings.EASEL_MAX_STEPS}]
    if cfg is not None and not 0.0 <= cfg <= 30.0:
        errors["cfg"] = [_("CFG must be between 0 and 30.")]
    if sampler is not None and sampler not in SAMPLERS:
        errors["sampler"] = [_("Unknown sampler: %(name)s.") % {"name": sampler}]
    if scheduler is not None and scheduler not in SCHEDULERS:
        errors["scheduler"] = [_("Unknown scheduler: %(name)s.") % {"name": scheduler}]
    if not 1 <= batch_size <= settings.EASEL_MAX_BATCH_SIZE:
        errors["batch_size"] = [_("Batch size must be between 1 and %(n)d.") % {"n": settings.EASEL_MAX_BATCH_SIZE}]
    if seed is not None and not 0 <= seed <= MAX_SEED:
        errors["seed"] = [_("The seed must be between 0 and %(n)d.") % {"n": MAX_SEED}]
    if errors:
        raise ValidationError(errors)
    quota_check(user=user, images=batch_size)

    task = GenerationTask.objects.create(
        user=user,
        prompt=prompt,
        negative_prompt=negative_prompt,
        checkpoint=checkpoint,
        model_name=checkpoint.name,
        template=template,
        width=width,
        height=height,
        steps=steps,
        cfg=cfg,
        sampler=sampler,
        scheduler=scheduler,
        seed=secrets.randbelow(MAX_SEED) if seed is None else seed,
        batch_size=batch_size,
        denoise=denoise,
        source_image=source,
        callback_url=callback_url,
        api_token=api_token,
    )
    task_id = task.pk
    transaction.on_commit(lambda: generation_enqueue(task_id=task_id))
    return task


def quota_usage(*, user) -> dict:
    """Images counted against today's quota (UTC day), and when it resets.

    A task counts from the moment it is accepted; failed and cancelled ones give their
    images back.
    """
    now = timezone.now()
    start = datetime.combine(now.astimezone(dt_timezone.utc).date(), dtime.min, tzinfo=dt_timezone.utc)
    used = (
        GenerationTask.objects.filter(user=user, created_at__gte=start)
        .exclude(status__in=[TaskStatus.FAILED, TaskStatus.CANCELLED])
        .aggregate(n=Sum("batch_size"))["n"]
        or 0
    )
    limit = user.daily_image_quota
    return {
        "limit": limit,
        "used": used,
        "remaining": max(0, limit - used),
        "resets_at": start + timedelta(days=1),
        "in_flight": GenerationTask.objects.filter(user=user, status__in=ACTIVE_STATUSES).count(),
        "max_concurrent_tasks": user.max_concurrent_tasks,
    }


def quota_check(*, user, images: int) -> None:
    usage = quota_usage(user=user)
    if usage["used"] + images > usage["limit"]:
        raise QuotaExceeded(
            _("Daily image quota reached (%(used)d of %(limit)d used). It resets at %(time)s UTC.")
            % {"used": usage["used"], "limit": usage["limit"], "time": usage["resets_at"].strftime("%H:%M")},
            resets_at=usage["resets_at"],
            limit=usage["limit"],
            used=usage["used"],
        )


def generation_cancel(*, task: GenerationTask) -> GenerationTask:
    """Cancel an unfinished task.

    A pending task never reaches a backend. A submitted one is taken off its backend:
    out of ComfyUI's queue if still waiting there, else only its own prompt is
    interrupted (never a global interrupt that would stop another user's work).
    """
    now = timezone.now()
    done = GenerationTask.objects.filter(pk=task.pk, status__in=ACTIVE_STATUSES).update(
        status=TaskStatus.CANCELLED, completed_at=now, status_message="", lease_owner="", lease_until=None
    )
    task.refresh_from_db()
    if not done:
        raise TaskStateError(_("This task has already finished (%(status)s).") % {"status": task.get_status_display()})
    TaskPreview.objects.filter(task_id=task.pk).delete()
    backend_id, prompt_id = task.backend_id, str(task.prompt_id)
    if backend_id:
        # The job following it also notices and stops the prompt; this covers the
        # moment when no job is following it (worker restarting).
        from django_q.tasks import async_task

        transaction.on_commit(
            lambda: async_task("generation.jobs.generation_abandon", backend_id, prompt_id, group="generation")
        )
    task_finished(task=task)
    return task


def generation_retry(*, task: GenerationTask) -> GenerationTask:
    """Run a failed or cancelled task again, as the same task (same id for clients).

    It gets a new ComfyUI prompt_id: the old one may still be in a backend's history
    with its old outcome.
    """
    if task.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise TaskStateError(_("Only failed or cancelled tasks can be retried."))
    quota_check(user=task.user, images=task.batch_size)
    done = GenerationTask.objects.filter(pk=task.pk, status__in=[TaskStatus.FAILED, TaskStatus.CANCELLED]).update(
        status=TaskStatus.PENDING,
        prompt_id=uuid.uuid4(),
        client_id=f"easel-{uuid.uuid4().hex}",
        backend=None,
        assigned_at=None,
        submitted_at=None,
        started_at=None,
        completed_at=None,
        rendered_prompt=None,
        error_code="",
        error_message="",
        error_fields={},
        status_message="",
        progress_value=0,
        progress_max=0,
        progress_node="",
        attempts=0,
        retries=task.retries + 1,
        lease_owner="",
        lease_until=None,
    )
    if not done:
        raise TaskStateError(_("This task changed meanwhile; reload and try again."))
    images_delete_for(task=task)
    task.refresh_from_db()
    task_id = task.pk
    transaction.on_commit(lambda: generation_enqueue(task_id=task_id))
    return task


def task_finished(*, task: GenerationTask) -> None:
    """Hook for a task reaching a final state: more capacity, webhooks."""
    task_id = task.pk
    transaction.on_commit(lambda: _after_finish(task_id))


def _after_finish(task_id: int) -> None:
    from django_q.tasks import async_task

    async_task("generation.jobs.generation_finished", task_id, group="generation")


def generation_enqueue(*, task_id: int | None = None) -> None:
    """Let the dispatcher look at the queue now (a task arrived or came back).

    Runs the dispatcher right here (it only touches the database); if that fails, a
    django-q2 job does it instead, and the schedule would anyway.
    """
    from .dispatch import dispatch

    try:
        dispatch(probe=False)
    except Exception:
        logger.exception("inline dispatch failed; leaving it to a job")
        from django_q.tasks import async_task

        async_task("generation.jobs.generation_dispatch", group="generation")


def _delete_files(images) -> None:
    for image in images:
        for field in (image.file, image.thumbnail):
            if field and field.name:
                try:
                    field.storage.delete(field.name)
                except OSError:
                    logger.warning("could not delete %s", field.name, exc_info=True)


def generation_delete(*, task: GenerationTask) -> None:
    """Delete a task, its images and their files; stop it on its backend if it runs there."""
    images = list(task.images.all())
    backend_id, prompt_id, was_active = task.backend_id, str(task.prompt_id), not task.is_finished
    task.delete()
    transaction.on_commit(lambda: _delete_files(images))
    if was_active and backend_id:
        # The job that follows it also notices the row is gone; this stops the prompt
        # even when no job is following it right now (worker restarting).
        from django_q.tasks import async_task

        transaction.on_commit(
            lambda: async_task("generation.jobs.generation_abandon", backend_id, prompt_id, group="generation")
        )


def generation_abandon(*, backend_id: int, prompt_id: str) -> None:
    """Take a prompt off its backend: out of the queue if waiting, else interrupt only it."""
    from generation.comfy import ComfyError
    from models_catalog.services import comfy_client

    backend = ComfyBackend.objects.filter(pk=backend_id).first()
    if backend is None:
        return
    client = comfy_client(backend)
    try:
        state = client.queue_state(prompt_id)
        if state == "pending":
            client.delete_from_queue([prompt_id])
        elif state == "running":
            client.interrupt(prompt_id)
    except ComfyError:
        logger.warning("could not abandon prompt %s on %s", prompt_id, backend.name, exc_info=True)


def images_delete_for(*, task: GenerationTask) -> None:
    """Remove a task's images (rows and files), e.g. before re-downloading them."""
    images = list(GeneratedImage.objects.filter(task=task))
    GeneratedImage.objects.filter(task=task).delete()
    _delete_files(images)


__all__ = [
    "generation_create",
    "generation_delete",
    "generation_enqueue",
    "generation_abandon",
    "TaskStatus",
]
