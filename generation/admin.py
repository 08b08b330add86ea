"""Staff screens for generation tasks.

The task list must stay fast with millions of rows:

- no `date_hierarchy`: its drill-down runs `SELECT DISTINCT date_trunc(created_at)` over
  the whole (filtered) table on every page view, a full scan on SQLite and PostgreSQL
  alike (a function of the column cannot use the plain index). The "created" filter
  offers the same periods as plain range lookups on the indexed column instead;
- `show_full_result_count = False`: no second COUNT(*) of the whole table, and no
  facet counts (one COUNT per filter option);
- the paginator estimates large counts from PostgreSQL's statistics (exact below
  10,000 matches);
- ordering by `-id` (the primary key index), sorting only on indexed columns;
- the model filter lists the catalog (a few rows), not `DISTINCT model_name` over tasks;
- owner, backend and the first image come in the list query itself (no N+1).
"""
from __future__ import annotations

import json

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import OuterRef, Q, Subquery
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.translation import gettext, gettext_lazy as _

from models_catalog.models import Checkpoint

from .errors import GenerationError, TaskStateError
from .models import GeneratedImage, GenerationTask, TaskRun, WebhookDelivery
from .services import generation_cancel, generation_delete, generation_retry
from .templatetags.easel_time import absolute

# The admin's name in its header and every page title, in the reader's language. Set on
# the default site, which the root URLconf serves.
admin.site.site_header = _("Easel administration")
admin.site.site_title = _("Easel administration")


class EstimatedCountPaginator(Paginator):
    """COUNT(*) over a million-row PostgreSQL table reads every matching row. On
    PostgreSQL the unfiltered list uses the table's row estimate, and a filtered one
    counts exactly up to EXACT_COUNT_CAP matches (the scan stops there) and takes the
    planner's estimate beyond it. Exact everywhere else (SQLite)."""

    EXACT_COUNT_CAP = 10_000

    @cached_property
    def count(self):
        queryset = self.object_list
        query = getattr(queryset, "query", None)
        if connection.vendor != "postgresql" or query is None:
            return super().count
        if not query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [queryset.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] > self.EXACT_COUNT_CAP:
                return int(row[0])
            return super().count
        capped = queryset.order_by()[: self.EXACT_COUNT_CAP + 1].count()
        if capped <= self.EXACT_COUNT_CAP:
            return capped
        return max(capped, self._planner_rows(queryset))

    @staticmethod
    def _planner_rows(queryset) -> int:
        sql, params = queryset.order_by().values("pk").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])


class ModelFilter(admin.SimpleListFilter):
    title = _("model")
    parameter_name = "model"

    def lookups(self, request, model_admin):
        return [(c.name, c.shown_name) for c in Checkpoint.objects.order_by("name")]

    def queryset(self, request, queryset):
        return queryset.filter(model_name=self.value()) if self.value() else queryset


class GeneratedImageInline(admin.TabularInline):
    model = GeneratedImage
    extra = 0
    can_delete = False
    fields = ("picture", "index", "width", "height", "seed", "content_type", "size_bytes", "created_at")
    readonly_fields = fields

    @admin.display(description=_("picture"))
    def picture(self, image):
        # The API's owner-checked URLs; staff may read every image through them.
        return format_html(
            '<a href="{}" target="_blank" rel="noopener"><img src="{}" alt="" width="96" loading="lazy"></a>',
            reverse("api-generation-image-file", args=[image.pk]),
            reverse("api-generation-image-thumbnail", args=[image.pk]),
        )

    def has_add_permission(self, request, obj=None):
        return False


class TaskRunInline(admin.TabularInline):
    """The task's attempts, oldest first: where it ran, how each one ended and why."""

    model = TaskRun
    extra = 0
    can_delete = False
    fields = ("number", "backend_shown", "summary_shown", "outcome", "ended_by", "error_code_shown",
              "error_shown", "prompt_id", "assigned_at", "submitted_at", "started_at", "ended_at")
    readonly_fields = fields
    ordering = ("number",)

    # The name kept on the run: it still reads right after the backend is deleted.
    @admin.display(description=_("backend"))
    def backend_shown(self, run):
        return run.backend_label

    @admin.display(description=_("what happened"))
    def summary_shown(self, run):
        return run.summary

    @admin.display(description=_("error code"))
    def error_code_shown(self, run):
        return format_html("<code>{}</code>", run.error_code) if run.error_code else "-"

    # Stored in English with its message id: staff read it in their own language.
    @admin.display(description=_("error message"))
    def error_shown(self, run):
        return run.error_text or "-"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(GenerationTask)
class GenerationTaskAdmin(admin.ModelAdmin):
    # Owner and model sit under the prompt, the duration under the status and the date
    # is compact, so every column
    # fits beside the admin's two sidebars on a 1366 px laptop screen.
    list_display = ("id", "thumbnail", "summary", "status_badge", "backend", "created")
    list_display_links = ("id", "summary")
    list_filter = ("status", ("created_at", admin.DateFieldListFilter), "backend", ModelFilter)
    search_fields = ("prompt", "user__username", "=id")
    list_select_related = ("user", "backend")
    ordering = ("-id",)
    sortable_by = ("id", "created_at")
    show_full_result_count = False
    # Facet counts are one COUNT per filter option over the whole table.
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator

    def get_search_results(self, request, queryset, search_term):
        """Search without a join, so each part can use its own index.

        A number is a task id (primary key). Text matches the prompt (a trigram index on
        PostgreSQL, migration 0007) or the owner's username, written as `user_id IN
        (...)` so the planner can combine both indexes instead of scanning every task.
        """
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isdigit():
            return queryset.filter(pk=int(term)), False
        owners = get_user_model().objects.filter(username__icontains=term).values("pk")
        return queryset.filter(Q(prompt__icontains=term) | Q(user_id__in=owners)), False
    list_per_page = 50
    inlines = [TaskRunInline, GeneratedImageInline]
    actions = ["cancel_tasks", "retry_tasks"]

    class Media:
        css = {"all": ["admin_dashboard/dashboard.css"]}

    fieldsets = (
        (None, {"fields": ("id", "user", "status", "status_shown", "progress", "prompt", "negative_prompt")}),
        (
            _("Parameters"),
            {
                "fields": (
                    "model_name", "checkpoint", "template", "width", "height", "steps", "cfg", "sampler",
                    "scheduler", "seed", "batch_size", "denoise", "source_image", "callback_url", "api_token",
                )
            },
        ),
        (_("Error"), {"fields": ("error_code_shown", "error_shown", "error_fields_pretty", "previous_error_shown")}),
        (
            _("Execution"),
            {
                "fields": (
                    "backend", "prompt_id", "client_id", "attempts", "retries", "lease_owner", "lease_until",
                    "created_at", "assigned_at", "waiting_since", "submitted_at", "started_at", "completed_at",
                    "duration", "updated_at", "share_token", "shared_at", "files_removed_at",
                )
            },
        ),
        (_("Rendered ComfyUI prompt"), {"classes": ["collapse"], "fields": ("rendered_prompt_pretty",)}),
    )

    def get_readonly_fields(self, request, obj=None):
        # Every field is written by the system (or by the user who asked); staff act
        # through the actions, which go through the same services as the API.
        return [f for fs in self.fieldsets for f in fs[1]["fields"]]

    def get_queryset(self, request):
        first_image = (
            GeneratedImage.objects.filter(task=OuterRef("pk")).exclude(thumbnail="").order_by("index").values("pk")[:1]
        )
        return super().get_queryset(request).annotate(first_image_id=Subquery(first_image))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # A task's page is read-only; the change permission (object-less) gates the
        # cancel / retry actions.
        if obj is not None:
            return False
        return super().has_change_permission(request)

    # --- columns ------------------------------------------------------------------

    @admin.display(description=_("picture"))
    def thumbnail(self, task):
        if not getattr(task, "first_image_id", None):
            return ""
        url = reverse("api-generation-image-thumbnail", args=[task.first_image_id])
        return format_html('<img src="{}" alt="" width="48" height="48" loading="lazy" class="easel-thumb">', url)

    @admin.display(description=_("prompt"))
    def short_prompt(self, task):
        return task.prompt if len(task.prompt) <= 60 else task.prompt[:59] + "…"

    @admin.display(description=_("owner"))
    def owner(self, task):
        return task.user.username

    @admin.display(description=_("prompt"))
    def summary(self, task):
        return format_html(
            '<span class="easel-prompt">{}</span><span class="easel-meta">{} · {}</span>',
            self.short_prompt(task), self.owner(task), task.model_name,
        )

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, task):
        # The pages' one format, in the studio's time zone; it wraps after the date.
        return format_html('<time datetime="{}">{}</time>', timezone.localtime(task.created_at).isoformat(),
                           absolute(task.created_at))

    @admin.display(description=_("status"))
    def status_badge(self, task):
        badge = format_html('<span class="easel-status easel-status-{}">{}</span>', task.status,
                            task.get_status_display())
        took = self.duration(task)
        if took == "-":
            return badge
        return format_html('{}<span class="easel-meta" title="{}">{}</span>', badge, _("duration"), took)

    @admin.display(description=_("duration"))
    def duration(self, task):
        if task.started_at and task.completed_at:
            return f"{(task.completed_at - task.started_at).total_seconds():.1f} s"
        return "-"

    @admin.display(description=_("progress"))
    def progress(self, task):
        return f"{task.progress_value} / {task.progress_max}" if task.progress_max else "-"

    # The code API clients get (docs/api-contract.md): an identifier, shown as one.
    @admin.display(description=_("error code"))
    def error_code_shown(self, task):
        return format_html("<code>{}</code>", task.error_code) if task.error_code else "-"

    # The worker's messages are stored in English with their message id (task_text):
    # staff read them in their own language, like the task's owner does.
    @admin.display(description=_("status message"))
    def status_shown(self, task):
        return task.status_text or "-"

    @admin.display(description=_("error message"))
    def error_shown(self, task):
        return task.error_text or "-"

    @admin.display(description=_("earlier error"))
    def previous_error_shown(self, task):
        return task.previous_error_text or "-"

    @admin.display(description=_("error fields"))
    def error_fields_pretty(self, task):
        if not task.error_fields:
            return "-"
        return format_html("<pre>{}</pre>", json.dumps(task.error_fields_text, indent=2, ensure_ascii=False))

    @admin.display(description=_("rendered prompt"))
    def rendered_prompt_pretty(self, task):
        if task.rendered_prompt is None:
            return "-"
        return format_html("<pre>{}</pre>", json.dumps(task.rendered_prompt, indent=2, ensure_ascii=False))

    # --- actions (the services do the work) ---------------------------------------

    @staticmethod
    def _about(task, message: str) -> str:
        return gettext("#%(id)s: %(message)s") % {"id": task.pk, "message": message}

    def _each(self, request, queryset, service, done_message: str) -> None:
        for task in queryset.select_related("user").order_by("pk"):
            try:
                service(task=task)
            except TaskStateError as exc:
                self.message_user(request, self._about(task, exc.message), messages.WARNING)
            except GenerationError as exc:  # e.g. the owner's quota on retry
                self.message_user(request, self._about(task, exc.message), messages.ERROR)
            else:
                self.message_user(request, done_message % {"id": task.pk}, messages.SUCCESS)

    @admin.action(description=_("Cancel selected tasks"), permissions=["change"])
    def cancel_tasks(self, request, queryset):
        self._each(request, queryset, generation_cancel, gettext("#%(id)s cancelled."))

    @admin.action(description=_("Retry selected tasks"), permissions=["change"])
    def retry_tasks(self, request, queryset):
        self._each(request, queryset, generation_retry, gettext("#%(id)s queued again."))

    # The stock "delete selected" (with its confirmation page) ends in delete_queryset,
    # which goes through the service: files removed, a running prompt stopped.
    # Deleting one task from its page goes through the same service.
    def delete_model(self, request, obj):
        generation_delete(task=obj)

    def delete_queryset(self, request, queryset):
        for task in queryset.order_by("pk"):
            generation_delete(task=task)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The webhook delivery log, for staff: what was sent where, and how it went."""

    list_display = ("id", "event", "url", "state", "attempts", "last_status_code", "task_number", "user", "created_at")
    list_filter = ("state", "event")
    search_fields = ("url", "message_id", "=task__id", "user__username")
    list_select_related = ("user",)
    show_full_result_count = False
    # The last error is shown in the reader's language (error_shown) instead of as stored.
    # The last error in the reader's language, the payload as indented JSON (it is what
    # the receiver got, byte for byte the API's shape).
    fields = readonly_fields = [
        {"last_error": "error_shown", "payload": "payload_pretty"}.get(f.name, f.name)
        for f in WebhookDelivery._meta.fields if f.name != "last_error_params"
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("payload"))
    def payload_pretty(self, delivery):
        return format_html("<pre>{}</pre>", json.dumps(delivery.payload, indent=2, ensure_ascii=False))

    @admin.display(description=_("last error"))
    def error_shown(self, delivery):
        return delivery.error_text or "-"

    @admin.display(description=_("task"), ordering="task_id")
    def task_number(self, delivery):
        # The id only: the task may be gone (deleted tasks keep their delivery log).
        return delivery.task_id if delivery.task_id is not None else "-"
