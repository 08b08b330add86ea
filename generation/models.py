"""Generation: one task per request, its images, and its latest preview frame."""
from __future__ import annotations

import datetime
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy as _, pgettext_lazy

from .media_types import extension_for
from .task_text import render, render_fields


class TaskStatus(models.TextChoices):
    # These names are promised to app clients (docs/api-contract.md): never rename them.
    PENDING = "pending", _("pending")
    PROCESSING = "processing", _("processing")
    COMPLETED = "completed", _("completed")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


# The one place that says which states are final.
TERMINAL_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
ACTIVE_STATUSES = (TaskStatus.PENDING, TaskStatus.PROCESSING)


def _new_client_id() -> str:
    return f"easel-{uuid.uuid4().hex}"


# The public name (the field default keeps the old one: migrations refer to it).
new_client_id = _new_client_id


class GenerationTask(models.Model):
    """One request to generate images, from the moment it is accepted until it ends."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks",
                             verbose_name=_("user"))
    prompt = models.TextField(_("prompt"))
    negative_prompt = models.TextField(_("negative prompt"), blank=True)
    checkpoint = models.ForeignKey(
        "models_catalog.Checkpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks",
        verbose_name=_("checkpoint"),
    )
    # Kept on the row so history still reads right after a checkpoint leaves the catalog.
    model_name = models.CharField(_("model"), max_length=200)
    template = models.ForeignKey(
        "models_catalog.WorkflowTemplate", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks",
        verbose_name=_("workflow template"),
    )
    width = models.PositiveIntegerField(_("width"))
    height = models.PositiveIntegerField(_("height"))
    steps = models.PositiveIntegerField(_("steps"))
    cfg = models.FloatField(_("CFG"))
    sampler = models.CharField(_("sampler"), max_length=50)
    scheduler = models.CharField(_("scheduler"), max_length=50)
    seed = models.BigIntegerField(_("seed"))
    batch_size = models.PositiveSmallIntegerField(_("batch size"), default=1)
    denoise = models.FloatField(_("denoise"), null=True, blank=True)
    source_image = models.ForeignKey(
        "generation.SourceImage", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks",
        verbose_name=_("source image"),
    )
    # The template's custom inputs (beyond Easel's own parameters above), as checked at
    # creation: name → value; a picture or mask is the id of the user's upload.
    inputs = models.JSONField(_("inputs"), default=dict, blank=True)
    # The server files the task needs besides its checkpoint (kind → file names), so it
    # is only sent to a backend that has them all.
    required_files = models.JSONField(_("files it needs"), default=dict, blank=True, editable=False)
    callback_url = models.URLField(_("webhook URL"), max_length=500, blank=True)
    # The token the task was created with: its secret signs the task's webhooks.
    api_token = models.ForeignKey(
        "accounts.ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks",
        verbose_name=_("API token"),
    )

    status = models.CharField(_("status"), max_length=20, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    # Why a task is still waiting, in words a user understands ("backend unreachable, retrying").
    status_message = models.CharField(_("status message"), max_length=500, blank=True)
    # The message id and parameters behind status_message / error_message, to show them
    # in the reader's language (generation.task_text); empty for a plain message.
    status_params = models.JSONField(_("status message parameters"), default=dict, blank=True)
    progress_value = models.PositiveIntegerField(_("steps done"), default=0)
    progress_max = models.PositiveIntegerField(_("steps in all"), default=0)
    progress_node = models.CharField(_("running node"), max_length=100, blank=True)

    backend = models.ForeignKey(
        "models_catalog.ComfyBackend", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks",
        verbose_name=_("backend"),
    )
    # Chosen and stored before submitting, so a redelivered job can ask ComfyUI about it
    # instead of submitting the same work twice.
    prompt_id = models.UUIDField(_("ComfyUI prompt id"), default=uuid.uuid4, unique=True, editable=False)
    client_id = models.CharField(_("ComfyUI client id"), max_length=64, default=_new_client_id, editable=False)
    rendered_prompt = models.JSONField(_("rendered ComfyUI prompt"), null=True, blank=True, editable=False)
    # A VolcEngine backend's id for this run's task, stored as soon as its submit is answered: a restarted Easel
    # polls it instead of submitting again (cleared with the prompt id when the task leaves its backend).
    provider_task_id = models.CharField(_("provider task id"), max_length=100, blank=True, editable=False)
    # Jobs that took the task on (a redelivered or recovered job counts again).
    attempts = models.PositiveIntegerField(_("runs started"), default=0)
    # Times the owner asked to run it again after it failed or was cancelled.
    retries = models.PositiveIntegerField(_("retries"), default=0)
    # When the dispatcher gave it a backend (None: waiting in Easel's queue).
    assigned_at = models.DateTimeField(_("assigned at"), null=True, blank=True)
    # Since when it has been waiting for an unreachable backend (bounded, then it fails).
    waiting_since = models.DateTimeField(_("waiting since"), null=True, blank=True)
    # A public read-only link to the task's images and prompt (None: not shared).
    share_token = models.CharField(_("share token"), max_length=64, unique=True, null=True, blank=True,
                                   editable=False)
    shared_at = models.DateTimeField(_("shared at"), null=True, blank=True)
    # Retention removed its files (the row stays, marked, so history still reads right).
    files_removed_at = models.DateTimeField(_("files removed at"), null=True, blank=True)
    error_code = models.CharField(_("error code"), max_length=50, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    error_params = models.JSONField(_("error message parameters"), default=dict, blank=True)
    error_fields = models.JSONField(_("errors by parameter"), default=dict, blank=True)
    # The last failure before the owner retried (the retry clears error_message), so the
    # task page can say what went wrong the time before; kept in the same two forms.
    previous_error_message = models.TextField(_("earlier error"), blank=True)
    previous_error_params = models.JSONField(_("earlier error parameters"), default=dict, blank=True)

    # The job that currently owns the task, and until when (renewed while it works).
    lease_owner = models.CharField(_("lease held by"), max_length=64, blank=True, editable=False)
    lease_until = models.DateTimeField(_("lease until"), null=True, blank=True, editable=False)

    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    # When it last entered the queue (created, or retried): the daily quota counts a
    # task's images on the day it was queued, so an old task retried today counts today.
    queued_at = models.DateTimeField(_("queued at"), default=timezone.now)
    submitted_at = models.DateTimeField(_("submitted at"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    # When it ended, whichever way (completed, failed or cancelled).
    completed_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("generation task")
        verbose_name_plural = _("generation tasks")
        indexes = [
            models.Index(fields=["user", "-created_at", "-id"], name="task_user_recent"),
            models.Index(fields=["status", "created_at"], name="task_status_created"),
            models.Index(fields=["status", "backend"], name="task_status_backend"),
            # The dashboard counts finished tasks by when they ended.
            models.Index(fields=["completed_at"], name="task_completed"),
            # The daily quota: one user's tasks queued since the start of the day.
            models.Index(fields=["user", "queued_at"], name="task_user_queued"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.prompt[:40]}"

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def status_text(self) -> str:
        """status_message in the active language."""
        return render(self.status_params, self.status_message)

    @property
    def error_text(self) -> str:
        """error_message in the active language."""
        return render(self.error_params, self.error_message)

    @property
    def error_fields_text(self) -> dict[str, list[str]]:
        """error_fields in the active language."""
        return render_fields((self.error_params or {}).get("fields"), self.error_fields)

    @property
    def previous_error_text(self) -> str:
        """previous_error_message in the active language."""
        return render(self.previous_error_params, self.previous_error_message)

    @property
    def progress_fraction(self) -> float:
        if self.status == TaskStatus.COMPLETED:
            return 1.0
        if not self.progress_max:
            return 0.0
        return min(1.0, self.progress_value / self.progress_max)


class RunOutcome(models.TextChoices):
    """How one attempt (a TaskRun) ended; `running` while it has not."""

    RUNNING = "running", _("running")
    COMPLETED = "completed", _("completed")  # the images are stored: the task completed
    FAILED = "failed", _("failed")  # the backend or the run gave up with an error
    TIMED_OUT = "timed_out", _("timed out")  # ran past its time limit
    CANCELLED = "cancelled", _("cancelled")  # the owner or staff cancelled the task
    MOVED = "moved", _("moved")  # its backend went away; the task went back to the queue
    RETRIED = "retried", _("retried")  # still open when the owner retried the task
    LOST = "lost", _("lost")  # Easel lost it (its backend was deleted under it)


class RunEnd(models.TextChoices):
    """What ended an attempt."""

    COMPLETION = "completion", _("completion")
    FAILURE = "failure", _("failure")
    TIMEOUT = "timeout", _("time limit")
    CANCEL = "cancel", _("cancellation")
    HAND_BACK = "hand_back", _("hand-back")  # nothing sent yet; backend unreachable
    FAIL_OVER = "fail_over", _("fail-over")  # submitted; backend away past the grace period
    RETRY = "retry", _("retry")
    RECOVERY = "recovery", _("recovery")  # found open when the task was given a new backend or gave up


# The endings that move a task to another backend (the metrics' fail-overs), in one
# order: the partial index's condition and the query that uses it must match.
MOVE_ENDINGS = (RunEnd.FAIL_OVER.value, RunEnd.HAND_BACK.value)


class TaskRun(models.Model):
    """One attempt at a task: its time on one backend, from assignment until it ended.

    A run starts when the dispatcher assigns the task to a backend (the moment the task
    is bound to that backend, even if nothing gets submitted: a hand-back ends such a
    run) and ends with the transition that takes the task off it (generation.transitions
    writes both, in the transaction of the task's own update). At most one run of a task
    is `running`. A task that waited and never got a backend has no run.
    """

    task = models.ForeignKey(GenerationTask, on_delete=models.CASCADE, related_name="runs", verbose_name=_("task"))
    number = models.PositiveIntegerField(_("attempt number"))
    backend = models.ForeignKey(
        "models_catalog.ComfyBackend", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs",
        verbose_name=_("backend"),
    )
    # Kept so the history still names the backend after it is deleted.
    backend_name = models.CharField(_("backend name"), max_length=100, blank=True)
    prompt_id = models.UUIDField(_("ComfyUI prompt id"), null=True, blank=True)
    assigned_at = models.DateTimeField(_("assigned at"))
    submitted_at = models.DateTimeField(_("submitted at"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    outcome = models.CharField(_("outcome"), max_length=20, choices=RunOutcome.choices, default=RunOutcome.RUNNING)
    ended_by = models.CharField(_("ended by"), max_length=20, choices=RunEnd.choices, blank=True)
    error_code = models.CharField(_("error code"), max_length=50, blank=True)
    # Why it ended when it did not complete (an error, or why it moved), kept like the
    # task's own messages: English plus message id and parameters (generation.task_text).
    error_message = models.TextField(_("error message"), blank=True)
    error_params = models.JSONField(_("error message parameters"), default=dict, blank=True)

    class Meta:
        ordering = ["task_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["task", "number"], name="taskrun_task_number"),
            # The open run is found by this index, whatever the length of the history.
            models.UniqueConstraint(fields=["task"], condition=models.Q(outcome="running"), name="taskrun_one_open"),
        ]
        indexes = [
            # The metrics count the moves (fail-overs, hand-backs) on every scrape: they are
            # few among many runs, so a partial index keeps that count small.
            models.Index(fields=["ended_by", "backend_name"], condition=models.Q(ended_by__in=MOVE_ENDINGS),
                         name="taskrun_moves"),
        ]
        # ("attempts" alone is already a webhook delivery's count.)
        verbose_name = pgettext_lazy("task run", "attempt")
        verbose_name_plural = pgettext_lazy("task run", "attempts")

    def __str__(self) -> str:
        return gettext("Attempt %(n)s on %(backend)s") % {"n": self.number, "backend": self.backend_label}

    @property
    def backend_label(self) -> str:
        return self.backend_name or (gettext("a removed backend"))

    @property
    def error_text(self) -> str:
        """error_message in the active language."""
        return render(self.error_params, self.error_message)

    @property
    def summary(self) -> str:
        """The attempt in plain words, in the active language ("Ran on gpu-2, moved after
        gpu-2 went away.")."""
        name = {"backend": self.backend_label}
        if self.outcome == RunOutcome.RUNNING:
            if self.started_at:
                return gettext("Running on %(backend)s.") % name
            return gettext("Assigned to %(backend)s, not started yet.") % name
        if self.outcome == RunOutcome.COMPLETED:
            return gettext("Finished on %(backend)s.") % name
        if self.outcome == RunOutcome.FAILED:
            error = self.error_text
            if error:
                return gettext("Failed on %(backend)s: %(error)s") % {**name, "error": error}
            return gettext("Failed on %(backend)s.") % name
        if self.outcome == RunOutcome.TIMED_OUT:
            return gettext("Ran out of time on %(backend)s.") % name
        if self.outcome == RunOutcome.CANCELLED:
            if self.started_at:
                return gettext("Cancelled while running on %(backend)s.") % name
            return gettext("Cancelled while waiting for %(backend)s.") % name
        if self.outcome == RunOutcome.MOVED:
            if self.ended_by == RunEnd.HAND_BACK:
                return gettext("Waited for %(backend)s, moved because it could not be reached.") % name
            return gettext("Ran on %(backend)s, moved after %(backend)s went away.") % name
        if self.outcome == RunOutcome.RETRIED:
            return gettext("Ended on %(backend)s when the task was retried.") % name
        return gettext("Lost on %(backend)s (its backend was removed).") % name


def _image_path(instance: "GeneratedImage", filename: str) -> str:
    task = instance.task
    return f"results/{task.user_id}/{task.created_at:%Y/%m}/{task.pk}-{instance.index}-{filename}"


def _thumb_path(instance: "GeneratedImage", filename: str) -> str:
    task = instance.task
    return f"thumbs/{task.user_id}/{task.created_at:%Y/%m}/{task.pk}-{instance.index}.webp"


class GeneratedImage(models.Model):
    """One picture a task produced, stored through Django's storage API."""

    task = models.ForeignKey(GenerationTask, on_delete=models.CASCADE, related_name="images",
                             verbose_name=_("task"))
    index = models.PositiveSmallIntegerField(_("position"), default=0)
    file = models.FileField(_("file"), upload_to=_image_path, max_length=300)
    thumbnail = models.FileField(_("thumbnail"), upload_to=_thumb_path, max_length=300, blank=True)
    content_type = models.CharField(_("file type"), max_length=50, default="image/png")
    width = models.PositiveIntegerField(_("width"))
    height = models.PositiveIntegerField(_("height"))
    seed = models.BigIntegerField(_("seed"))
    size_bytes = models.PositiveBigIntegerField(_("size (bytes)"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["task_id", "index"]
        constraints = [models.UniqueConstraint(fields=["task", "index"], name="image_task_index_unique")]
        verbose_name = _("generated image")
        verbose_name_plural = _("generated images")

    def __str__(self) -> str:
        return gettext("Task #%(task)s, image %(index)s") % {"task": self.task_id, "index": self.index}


class TaskPreview(models.Model):
    """The latest live preview frame of a running task (dropped when the task ends).

    Kept in the database rather than storage: it is overwritten several times a second
    and is small, and every page reads it through the same owner check as the task.
    """

    task = models.OneToOneField(GenerationTask, on_delete=models.CASCADE, primary_key=True, related_name="preview",
                                verbose_name=_("task"))
    image = models.BinaryField(_("preview frame"))
    content_type = models.CharField(_("file type"), max_length=50, default="image/jpeg")
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("live preview")
        verbose_name_plural = _("live previews")

    @property
    def version(self) -> int:
        return preview_version(self.updated_at)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def preview_version(updated_at: datetime.datetime) -> int:
    """A live frame's version, for its URL (`?v=`) and the preview cache's key: when it was
    written, in microseconds since 1970 (exact, no float).

    `updated_at` is `auto_now`, so every save of the row sets it, and the runner writes each
    frame with `TaskPreview.objects.update_or_create(...)`, whose update path saves with
    `update_fields` that Django (4.2+) extends with the fields that set themselves in
    `pre_save()` (auto_now ones): each frame gets a new time, hence a new version. A time and
    not a counter: a task's preview row is deleted when a run ends and made again by the
    next run (a retry, a move), and a counter would start again at 1, naming a new frame
    with an old frame's version (and its cached bytes).
    """
    if timezone.is_naive(updated_at):
        updated_at = timezone.make_aware(updated_at, datetime.timezone.utc)
    return (updated_at - _EPOCH) // datetime.timedelta(microseconds=1)


def _source_path(instance: "SourceImage", filename: str) -> str:
    return f"uploads/{instance.user_id}/{instance.sha256[:2]}/{instance.sha256}.{instance.extension}"


class SourceImage(models.Model):
    """A picture a user uploaded (or picked from their results) to start img2img from.

    Validated and re-encoded on the way in, so what reaches ComfyUI is a clean image.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="source_images",
                             verbose_name=_("user"))
    file = models.FileField(_("file"), upload_to=_source_path, max_length=300)
    original_name = models.CharField(_("original file name"), max_length=255, blank=True)
    content_type = models.CharField(_("file type"), max_length=50)
    width = models.PositiveIntegerField(_("width"))
    height = models.PositiveIntegerField(_("height"))
    size_bytes = models.PositiveBigIntegerField(_("size (bytes)"))
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["user", "sha256"], name="source_user_sha_unique")]
        verbose_name = _("source image")
        verbose_name_plural = _("source images")

    def __str__(self) -> str:
        return self.original_name or gettext("Upload #%(id)s") % {"id": self.pk}

    @property
    def extension(self) -> str:
        return extension_for(self.content_type)


class WebhookDelivery(models.Model):
    """One event (a task ending) to POST to a client's callback URL, with its attempts."""

    class State(models.TextChoices):
        PENDING = "pending", _("pending")
        DELIVERED = "delivered", _("delivered")
        FAILED = "failed", _("failed")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_deliveries", verbose_name=_("user")
    )
    task = models.ForeignKey(
        GenerationTask, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_deliveries",
        verbose_name=_("task"),
    )
    api_token = models.ForeignKey(
        "accounts.ApiToken", null=True, blank=True, on_delete=models.SET_NULL, verbose_name=_("API token")
    )
    event = models.CharField(_("event"), max_length=50)
    url = models.URLField(_("URL"), max_length=500)
    message_id = models.CharField(_("message id"), max_length=64, unique=True)
    payload = models.JSONField(_("payload"))
    state = models.CharField(_("state"), max_length=20, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_status_code = models.PositiveIntegerField(_("last status code"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    # The message id and parameters behind last_error (generation.task_text), so staff
    # read it in their language; empty for a plain message.
    last_error_params = models.JSONField(_("last error parameters"), default=dict, blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_state_next")]
        # Not "webhook deliverys" in the admin.
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")

    def __str__(self) -> str:
        return f"{self.event} → {self.url} ({self.get_state_display()})"

    @property
    def error_text(self) -> str:
        """last_error in the active language."""
        return render(self.last_error_params, self.last_error)


# --- dashboard rollups --------------------------------------------------------------------------------------------
# Written only by generation.ops.rollup for periods that are over; the dashboard reads them
# for the past and counts the few tasks since live. They are event records: deleting a
# task (or the retention purge) leaves the day's statistics as they were.


class TaskHourStat(models.Model):
    """Tasks that ended in one hour (UTC), per outcome, model and backend."""

    hour = models.DateTimeField(_("hour"))
    status = models.CharField(_("status"), max_length=20, choices=TaskStatus.choices)
    # Why the failed ones failed (the task's error_code; empty otherwise), for the
    # metrics' failures by reason. Rows written before it was kept have it empty.
    error_code = models.CharField(_("error code"), max_length=50, blank=True, default="")
    model_name = models.CharField(_("model"), max_length=200)
    backend = models.ForeignKey(
        "models_catalog.ComfyBackend", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        verbose_name=_("backend"),
    )
    tasks = models.PositiveIntegerField(_("tasks"))
    images = models.PositiveIntegerField(_("images"))  # batch sizes of the completed tasks
    busy_seconds = models.FloatField(_("busy seconds"))  # started → completed, summed

    class Meta:
        indexes = [models.Index(fields=["hour"], name="taskhourstat_hour")]
        verbose_name = _("hourly task count")
        verbose_name_plural = _("hourly task counts")


class UserDayStat(models.Model):
    """One user's tasks that ended on one day (in the studio's time zone)."""

    day = models.DateField(_("day"))
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+",
                             verbose_name=_("user"))
    tasks = models.PositiveIntegerField(_("tasks"))
    images = models.PositiveIntegerField(_("images"))
    failed = models.PositiveIntegerField(_("failed"))

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "user"], name="userdaystat_day_user")]
        verbose_name = _("daily user count")
        verbose_name_plural = _("daily user counts")


class RollupMark(models.Model):
    """How far a rollup has gone: everything that ended before `until` is in its table."""

    name = models.CharField(_("name"), max_length=20, primary_key=True)
    until = models.DateTimeField(_("counted until"))

    class Meta:
        verbose_name = _("rollup progress")
        verbose_name_plural = _("rollup progress")


class Pump(models.Model):
    """A pump job: one django-q2 job that follows many prompts at once (generation.fleet.pump).

    The row is made when the job is queued and beats while it runs; a row whose beat
    is older than a few seconds is a pump that died (or never started), and another
    is queued in its place. The studio's health, dashboard and doctor read these rows.
    """

    host = models.CharField(_("host"), max_length=200, blank=True)
    pid = models.PositiveIntegerField(_("process id"), null=True, blank=True)
    queued_at = models.DateTimeField(_("queued at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last heartbeat"))
    running = models.PositiveIntegerField(_("prompts followed"), default=0)
    # `manage.py pump`: runs beside the EASEL_PUMPS the cluster keeps, never instead of one.
    extra = models.BooleanField(_("started by hand"), default=False)

    class Meta:
        ordering = ["queued_at", "id"]
        verbose_name = _("pump")
        verbose_name_plural = _("pumps")

    def __str__(self) -> str:
        return f"pump {self.pk} ({self.host or '-'}:{self.pid or '-'})"


class TaskEventKind(models.TextChoices):
    # The `event:` names of the stream (GET /api/v1/events): clients switch on them.
    CREATED = "created", pgettext_lazy("task event", "created")
    QUEUED = "queued", _("queued")
    STARTED = "started", _("started")
    PROGRESS = "progress", _("progress")
    PREVIEW = "preview", _("preview")
    COMPLETED = "completed", _("completed")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


# Kinds a reconnecting client must never miss (kept for EASEL_EVENTS_KEEP_SECONDS); the
# others say "how far" and are superseded by the next one (kept only a minute or two).
DURABLE_EVENT_KINDS = (
    TaskEventKind.CREATED, TaskEventKind.QUEUED, TaskEventKind.STARTED,
    TaskEventKind.COMPLETED, TaskEventKind.FAILED, TaskEventKind.CANCELLED,
)


class TaskEvent(models.Model):
    """One change of one task, as its owner's event stream sends it (generation.events).

    The id is the stream's `id:`: one sequence for every user, so a client reconnecting
    with Last-Event-ID gets exactly what it missed. Written in the transaction of the
    change itself (generation.transitions), so an event exists if and only if the change
    was committed. Plain integer columns, no foreign keys: deleting a task or a user
    costs no extra statement here; the rows go with the periodic prune.
    """

    id = models.BigAutoField(primary_key=True)
    user_id = models.BigIntegerField(_("user id"))
    task_id = models.BigIntegerField(_("task id"))
    kind = models.CharField(_("kind"), max_length=16, choices=TaskEventKind.choices)
    data = models.JSONField(_("data"), default=dict)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["user_id", "id"], name="taskevent_user_id"),
            models.Index(fields=["created_at"], name="taskevent_created"),
        ]
        verbose_name = _("task event")
        verbose_name_plural = _("task events")

    def __str__(self) -> str:
        return f"{self.kind} #{self.task_id} ({self.pk})"


class IdempotencyKey(models.Model):
    """One `Idempotency-Key` a user sent with a create, and the task it created.

    Kept for 24 hours (generation.idempotency.KEEP): a retry of the same request with the
    same key within that time answers this task instead of creating another. `fingerprint`
    is a hash of the canonical request body, so the same key with a different body is
    refused. The row is inserted in the transaction that creates the task: a concurrent
    request with the same key waits on the unique index until that transaction ends.
    Deleting the task deletes the key with it (the user removed what the key stood for).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+",
                             verbose_name=_("user"))
    key = models.CharField(_("key"), max_length=255)
    fingerprint = models.CharField(_("request fingerprint"), max_length=64)
    task = models.ForeignKey(GenerationTask, null=True, on_delete=models.CASCADE, related_name="+",
                             verbose_name=_("task"))
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotencykey_user_key")]
        verbose_name = _("idempotency key")
        verbose_name_plural = _("idempotency keys")

    def __str__(self) -> str:
        return f"{self.key} → #{self.task_id}"


class BackendLease(models.Model):
    """Which pump drives a backend (generation.fleet.holdings): one pump at a time.

    A row per backend, kept apart from the backend's own row so an admin saving a
    backend never writes a stale lease back. The lease is renewed by its pump's beat
    and judged by the database's clock; one that ran out is free for any pump.
    """

    backend = models.OneToOneField("models_catalog.ComfyBackend", on_delete=models.CASCADE, primary_key=True,
                                   related_name="lease", verbose_name=_("backend"))
    # The holding pump's run name ("pump<id>-<host>-<pid>-<random>"), unique to one run of it.
    owner = models.CharField(_("held by"), max_length=120, blank=True, default="")
    pump = models.ForeignKey(Pump, on_delete=models.SET_NULL, null=True, blank=True, related_name="leases",
                             verbose_name=_("pump"))
    until = models.DateTimeField(_("held until"), null=True, blank=True)

    class Meta:
        verbose_name = _("backend lease")
        verbose_name_plural = _("backend leases")

    def __str__(self) -> str:
        return f"{self.backend_id} ← {self.owner or '-'}"
