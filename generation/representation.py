"""A task as app clients read it: one shape for the API's answers and the webhook payloads.

The first fields of `TaskSerializer` are promised to existing clients
(docs/api-contract.md): never rename or drop them; adding is fine.
"""
from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import GeneratedImage, GenerationTask, RunEnd, RunOutcome, TaskPreview, TaskRun, TaskStatus


def _absolute(request, path: str) -> str:
    return request.build_absolute_uri(path) if request else path


class ImageSerializer(serializers.ModelSerializer):
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


class TaskSerializer(serializers.ModelSerializer):
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
        # The latest live frame; 404 until the backend has sent one.
        if task.status != TaskStatus.PROCESSING:
            return None
        return _absolute(self.context.get("request"), reverse("api-generation-preview", args=[task.pk]))

    def get_has_preview(self, task) -> bool:
        # One small query, and only for a running task (a history page holds few).
        if task.status != TaskStatus.PROCESSING:
            return False
        return TaskPreview.objects.filter(task_id=task.pk).exists()

    @extend_schema_field(ImageSerializer(many=True))
    def get_images(self, task) -> list[dict]:
        return ImageSerializer(self._images(task), many=True, context=self.context).data

    def _images(self, task):
        if task.status != TaskStatus.COMPLETED:
            return []
        # Uses the prefetch when the list selector made one.
        return sorted(task.images.all(), key=lambda i: i.index)


class RunSerializer(serializers.ModelSerializer):
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


class TaskDetailSerializer(TaskSerializer):
    """One task with its attempts (`runs`, oldest first): the status endpoint's answer.
    Lists and webhooks keep the plain shape (no query per task for its runs)."""

    runs = RunSerializer(many=True, read_only=True)  # oldest first

    class Meta(TaskSerializer.Meta):
        fields = [*TaskSerializer.Meta.fields, "runs"]
        read_only_fields = fields
