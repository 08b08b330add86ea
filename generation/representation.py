"""A task as app clients read it: one shape for the API's answers and the webhook payloads.

The first fields of `TaskSerializer` are promised to existing clients
(docs/api-contract.md): never rename or drop them; adding is fine.
"""
from __future__ import annotations

import hashlib

from django.urls import get_script_prefix, reverse
from django.utils.translation import get_language
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField
from rest_framework.relations import PKOnlyObject

from .outlook import Outlook, task_outlook
from .models import GeneratedImage, GenerationTask, RunEnd, RunOutcome, TaskPreview, TaskRun, TaskStatus, preview_version
from .task_text import render, render_fields


def _absolute(request, path: str) -> str:
    return request.build_absolute_uri(path) if request else path


class FieldsBuiltOnce:
    """A read-only ModelSerializer whose fields are built once per class, not per instance.

    DRF builds a ModelSerializer's fields (model introspection, a field per column, the
    declared ones deep-copied) every time one is made: about 2.8 ms for a task with its
    runs, on every status poll, and again for the images of every task of a history page.
    Here the fields are built once, on a serializer of the class's own, and answers are
    written by DRF's own loop (`Serializer.to_representation`) with those fields; only the
    `SerializerMethodField`s are called on the serializer at hand, so they see its context
    (the request). The fields kept keep no state of a request, and every field of these
    classes is read-only: nothing but output goes through them (the schema still reads
    `fields`, built as usual). Not for fields that read the context themselves (file or
    hyperlinked fields); a nested serializer gets none.
    """

    @classmethod
    def _output_plan(cls) -> list[tuple[str, serializers.Field, str | None]]:
        plan = cls.__dict__.get("_output_plan_built")
        if plan is None:
            plan = []
            for name, field in cls().fields.items():
                if field.write_only:
                    continue
                method = field.method_name if isinstance(field, serializers.SerializerMethodField) else None
                plan.append((name, field, method))
            cls._output_plan_built = plan  # built twice at worst (two threads at once): the same
        return plan

    def to_representation(self, instance) -> dict:
        answer = {}
        for name, field, method in self._output_plan():
            if method is not None:
                answer[name] = getattr(self, method)(instance)
                continue
            try:
                attribute = field.get_attribute(instance)
            except SkipField:
                continue
            check_for_none = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
            answer[name] = None if check_for_none is None else field.to_representation(attribute)
        return answer


class ImageSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    url = serializers.SerializerMethodField(help_text="Download URL (needs the owner's auth; `?download=1`).")
    thumbnail_url = serializers.SerializerMethodField(help_text="WebP thumbnail URL (needs the owner's auth).")

    class Meta:
        model = GeneratedImage
        fields = ["id", "index", "url", "thumbnail_url", "content_type", "width", "height", "seed", "size_bytes"]

    def _abs(self, name: str, image: GeneratedImage) -> str:
        return _absolute(self.context.get("request"), reverse(name, args=[image.pk]))

    def get_url(self, image) -> str:
        return self._abs("api-generation-image-file", image)

    def get_thumbnail_url(self, image) -> str:
        return self._abs("api-generation-image-thumbnail", image)


class ProgressSerializer(serializers.Serializer):
    value = serializers.IntegerField(help_text="Steps done on the current node.")
    max = serializers.IntegerField(help_text="Steps of the current node (0 until known).")
    fraction = serializers.FloatField(help_text="0..1, for a progress bar.")
    node = serializers.CharField(help_text="The ComfyUI node working now.")


class TaskSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    """A task as clients read it. The first fields are the promised ones; never rename."""

    user_id = serializers.IntegerField(read_only=True)
    status = serializers.ChoiceField(choices=TaskStatus.choices, read_only=True)
    result_id = serializers.SerializerMethodField(help_text="The first image's id once completed.")
    error_message = serializers.SerializerMethodField(help_text="Why the task failed, in the request's language.")
    status_message = serializers.SerializerMethodField(
        help_text="Why the task is still waiting, in the request's language; empty if nothing to say."
    )
    progress = serializers.SerializerMethodField()
    preview_url = serializers.SerializerMethodField(help_text="The latest live frame while processing.")
    has_preview = serializers.SerializerMethodField(
        help_text="Whether a live frame is stored now: fetch preview_url only then (it is 404 before the first)."
    )
    images = serializers.SerializerMethodField()
    template = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    source_image = serializers.IntegerField(source="source_image_id", read_only=True, allow_null=True)
    callback_url = serializers.CharField(read_only=True, help_text="The task's webhook URL; empty if none.")
    inputs = serializers.DictField(
        child=serializers.JSONField(allow_null=True), read_only=True,
        help_text="The template's own inputs as the task runs them, name → value (number, text, true/false, file "
                  "name or upload id; null: an optional one left out). Empty for a template without its own inputs.",
    )
    error_fields = serializers.DictField(
        source="error_fields_text", child=serializers.ListField(child=serializers.CharField()), read_only=True,
        help_text="Why the task failed, per parameter (`__all__`: the workflow), in the request's language.",
    )

    class Meta:
        model = GenerationTask
        fields = [
            "id", "user_id", "prompt", "model_name", "status", "result_id", "error_message", "created_at",
            "completed_at",
            "negative_prompt", "width", "height", "steps", "cfg", "sampler", "scheduler", "seed", "batch_size",
            "status_message", "progress", "preview_url", "error_code", "error_fields", "started_at", "images",
            "template", "source_image", "denoise", "callback_url", "retries",
            "has_preview", "inputs",
        ]
        read_only_fields = fields

    def get_result_id(self, task) -> int | None:
        images = self._images(task)
        return images[0].pk if images else None

    def get_error_message(self, task) -> str | None:
        return task.error_text or None

    def get_status_message(self, task) -> str:
        return task.status_text

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, task) -> dict:
        return {
            "value": task.progress_value,
            "max": task.progress_max,
            "fraction": round(task.progress_fraction, 4),
            "node": task.progress_node,
        }

    def get_preview_url(self, task) -> str | None:
        # The latest live frame, versioned once one is stored (`?v=`: a new URL for each new
        # frame); the bare URL answers 404 until the backend has sent one.
        if task.status != TaskStatus.PROCESSING:
            return None
        return _absolute(self.context.get("request"), preview_path(task.pk, self._preview_version(task)))

    def get_has_preview(self, task) -> bool:
        return task.status == TaskStatus.PROCESSING and self._preview_version(task) is not None

    def _preview_version(self, task) -> int | None:
        # One small query (the frame's time, not its picture), only for a running task (a
        # history page holds few), kept on the task for preview_url and has_preview alike.
        if task.status != TaskStatus.PROCESSING:
            return None
        if "_preview_version" not in task.__dict__:
            updated_at = TaskPreview.objects.filter(task_id=task.pk).values_list("updated_at", flat=True).first()
            task._preview_version = None if updated_at is None else preview_version(updated_at)
        return task._preview_version

    @extend_schema_field(ImageSerializer(many=True))
    def get_images(self, task) -> list[dict]:
        images = self._images(task)
        if not images:
            return []
        # One image serializer for every task this one writes (a list's tasks share it).
        writer = self.__dict__.get("_image_writer")
        if writer is None:
            writer = self._image_writer = ImageSerializer(context=self.context)
        return [writer.to_representation(image) for image in images]

    def _images(self, task):
        if task.status != TaskStatus.COMPLETED:
            return []
        if "images" in getattr(task, "_prefetched_objects_cache", {}):  # the list selector's prefetch
            return sorted(task.images.all(), key=lambda i: i.index)
        # One query, kept on the task for result_id and images alike.
        images = task.__dict__.get("_images_read")
        if images is None:
            images = task._images_read = list(GeneratedImage.objects.filter(task_id=task.pk).order_by("index"))
        return images


class RunSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    """One attempt at the task: its time on one backend and how it ended."""

    number = serializers.IntegerField(read_only=True, help_text="1 for the first attempt, then 2, 3…")
    backend = serializers.CharField(source="backend_name", read_only=True,
                                    help_text="The backend's name (kept after the backend is removed).")
    outcome = serializers.ChoiceField(
        choices=RunOutcome.choices, read_only=True,
        help_text="`running` until it ends; `moved`: its backend went away and the task went back to the queue.",
    )
    ended_by = serializers.ChoiceField(choices=[("", "")] + list(RunEnd.choices), read_only=True,
                                       help_text="What ended it; empty while running.")
    error = serializers.SerializerMethodField(
        help_text="Why it failed or moved, in the request's language; null if nothing to say.")

    class Meta:
        model = TaskRun
        fields = ["number", "backend", "submitted_at", "started_at", "ended_at", "outcome", "ended_by", "error"]
        read_only_fields = fields

    def get_error(self, run) -> str | None:
        return run.error_text or None


class QueueSerializer(serializers.Serializer):
    position = serializers.IntegerField(
        allow_null=True, help_text="1-based place in the caller's view of the fair queue while the task waits for "
                                   "a backend (the caller's earlier tasks, and other users' turns before it); null "
                                   "once it has one.")
    estimated_start_at = serializers.DateTimeField(
        allow_null=True, help_text="When it should start (the actual start once running), from measured run times "
                                   "per model and backend; null when there is nothing to estimate from.")
    estimated_finish_at = serializers.DateTimeField(allow_null=True, help_text="When it should finish; null likewise.")


def outlook_answer(outlook: Outlook) -> dict:
    return {"position": outlook.position, "estimated_start_at": _when(outlook.estimated_start_at),
            "estimated_finish_at": _when(outlook.estimated_finish_at)}


class TaskDetailSerializer(TaskSerializer):
    """One task with its attempts (`runs`, oldest first) and, while it is not finished, its
    place in the queue and estimated times (`queue`): the status endpoint's answer. Lists and
    webhooks keep the plain shape (no query per task for its runs or its place)."""

    runs = RunSerializer(many=True, read_only=True)  # oldest first
    queue = serializers.SerializerMethodField(help_text="Null once the task has finished.")

    class Meta(TaskSerializer.Meta):
        fields = [*TaskSerializer.Meta.fields, "runs", "queue"]
        read_only_fields = fields

    @extend_schema_field(QueueSerializer(allow_null=True))
    def get_queue(self, task) -> dict | None:
        if task.is_finished:
            return None
        return outlook_answer(task_outlook(task))


# --- the status poll's answer, written by hand ---------------------------------------------

_DATETIME = serializers.DateTimeField()  # DRF's own formatting (ISO 8601, "Z", the current zone)


def _when(value):
    return None if value is None else _DATETIME.to_representation(value)


def _path_pattern(name: str) -> str:
    """`reverse(name, args=[id])` as a format string, made once per script prefix."""
    prefix = get_script_prefix()
    key = (name, prefix)
    pattern = _PATTERNS.get(key)
    if pattern is None:
        pattern = _PATTERNS[key] = reverse(name, args=[_PATH_MARKER]).replace(str(_PATH_MARKER), "{}")
    return pattern


_PATTERNS: dict[tuple[str, str], str] = {}
_PATH_MARKER = 918273645


def preview_path(task_id: int, version: int | None) -> str:
    """The API's live preview URL: with `?v=` once a frame is stored (a new version for each
    new frame, so a client may keep what it fetched), bare before."""
    path = _path_pattern("api-generation-preview").format(task_id)
    return path if version is None else f"{path}?v={version}"


def task_status_etag(read, request) -> str:
    """A weak ETag of the status answer, from what it is made of (the row, the runs, the
    images, the frame's version), the language it is written in and the host its URLs
    name, without making the answer. Weak: the same answer may not be the same bytes
    (a different JSON renderer), only the same content."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(repr((read.task, read.runs, read.images, read.outlook, get_language(),
                        request.build_absolute_uri("/")))
                  .encode())
    return f'W/"{digest.hexdigest()}"'


def task_status_answer(read, request) -> dict:
    """The status endpoint's answer (TaskDetailSerializer's, key for key and value for value;
    tests/generation/test_status_answer.py holds them side by side for every status) from a
    `selectors.TaskStatusRead`, without building serializer fields or model instances: this
    is the call every client polls."""
    t = read.task
    status = t["status"]
    completed = status == TaskStatus.COMPLETED
    processing = status == TaskStatus.PROCESSING
    absolute = request.build_absolute_uri if request is not None else (lambda path: path)
    images = []
    if completed and read.images:
        file_url, thumb_url = _path_pattern("api-generation-image-file"), _path_pattern("api-generation-image-thumbnail")
        for image_id, index, content_type, width, height, seed, size_bytes in read.images:
            images.append({
                "id": image_id, "index": index, "url": absolute(file_url.format(image_id)),
                "thumbnail_url": absolute(thumb_url.format(image_id)), "content_type": content_type,
                "width": width, "height": height, "seed": seed, "size_bytes": size_bytes,
            })
    progress_max, progress_value = t["progress_max"], t["progress_value"]
    if completed:
        fraction = 1.0
    elif not progress_max:
        fraction = 0.0
    else:
        fraction = min(1.0, progress_value / progress_max)
    preview_at = t["preview__updated_at"]
    has_preview = processing and preview_at is not None
    error_text = render(t["error_params"], t["error_message"])
    error_fields = render_fields((t["error_params"] or {}).get("fields"), t["error_fields"])
    inputs = t["inputs"]
    return {
        "id": t["id"],
        "user_id": t["user_id"],
        "prompt": t["prompt"],
        "model_name": t["model_name"],
        "status": status,
        "result_id": images[0]["id"] if images else None,
        "error_message": error_text or None,
        "created_at": _when(t["created_at"]),
        "completed_at": _when(t["completed_at"]),
        "negative_prompt": t["negative_prompt"],
        "width": t["width"],
        "height": t["height"],
        "steps": t["steps"],
        "cfg": float(t["cfg"]),
        "sampler": t["sampler"],
        "scheduler": t["scheduler"],
        "seed": t["seed"],
        "batch_size": t["batch_size"],
        "status_message": render(t["status_params"], t["status_message"]),
        "progress": {"value": progress_value, "max": progress_max, "fraction": round(fraction, 4),
                     "node": t["progress_node"]},
        "preview_url": absolute(preview_path(t["id"], preview_version(preview_at) if has_preview else None))
        if processing else None,
        "error_code": t["error_code"],
        "error_fields": None if error_fields is None else {
            str(key): None if messages is None else [None if m is None else str(m) for m in messages]
            for key, messages in error_fields.items()
        },
        "started_at": _when(t["started_at"]),
        "images": images,
        "template": t["template__slug"],
        "source_image": t["source_image_id"],
        "denoise": None if t["denoise"] is None else float(t["denoise"]),
        "callback_url": t["callback_url"],
        "retries": t["retries"],
        "has_preview": has_preview,
        "inputs": None if inputs is None else {str(key): value for key, value in inputs.items()},
        "runs": [
            {
                "number": number, "backend": backend_name, "submitted_at": _when(submitted_at),
                "started_at": _when(started_at), "ended_at": _when(ended_at), "outcome": outcome,
                "ended_by": ended_by, "error": render(error_params, error_message) or None,
            }
            for number, backend_name, submitted_at, started_at, ended_at, outcome, ended_by, error_message,
            error_params in read.runs
        ],
        "queue": None if read.outlook is None else outlook_answer(read.outlook),
    }
