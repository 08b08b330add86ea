import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Prefetch, Q
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext, gettext_lazy as _

from generation.comfy import ComfyError
from generation.models import ACTIVE_STATUSES
from generation.queue import enqueue

from .forms import (
    ComfyBackendAdminForm,
    TemplateInputForm,
    TemplateInputFormSet,
    WorkflowTemplateAdminForm,
    WorkflowTemplateImportForm,
)
from .models import Checkpoint, ComfyBackend, ModelFile, TemplateInput, WorkflowTemplate
from .services import backend_check, catalog_sync, checkpoint_make_default, comfy_client, volc_models_apply
from .templates import (
    errors_describe,
    inputs_detect,
    object_info_any,
    template_check,
    template_import,
    template_specs_refresh,
)


def _sync_message(summary) -> str:
    """The catalog sync summary in words (names, not just counts): checkpoints, then each
    kind of model file that changed."""
    def names(items):
        return ", ".join(items) if items else "-"

    checkpoints = summary.checkpoints
    text = gettext("Checkpoints added: %(added)s. Became available: %(now)s. No longer available: %(gone)s.") % {
        "added": names(checkpoints.added),
        "now": names(checkpoints.now_available),
        "gone": names(checkpoints.no_longer_available),
    }
    if checkpoints.added and Checkpoint.objects.filter(ckpt_name__in=checkpoints.added, enabled=False).exists():
        text += " " + gettext("New checkpoints are offered to users once you enable them.")
    labels = dict(ModelFile.KIND_CHOICES)
    for kind, changes in summary.files.items():
        if not (changes.added or changes.now_available or changes.no_longer_available):
            continue
        text += " " + gettext(
            "%(kind)s files added: %(added)s. Became available: %(now)s. No longer available: %(gone)s."
        ) % {
            "kind": labels[kind],
            "added": names(changes.added),
            "now": names(changes.now_available),
            "gone": names(changes.no_longer_available),
        }
    if any(ModelFile.objects.filter(kind=kind, file_name__in=added, enabled=False).exists()
           for kind, added in summary.files_added.items()):
        text += " " + gettext("New model files are offered to users once you enable them.")
    if summary.errors:
        text += " " + gettext("Unreachable: %(errors)s.") % {
            "errors": "; ".join(f"{name}: {error}" for name, error in summary.errors.items())
        }
    return text


def _dispatch_soon() -> None:
    # More capacity (a backend enabled or undrained): a dispatch job lets waiting tasks go now.
    transaction.on_commit(lambda: enqueue("generation_dispatch"))


@admin.register(ComfyBackend)
class ComfyBackendAdmin(admin.ModelAdmin):
    list_display = (
        "name_badge", "state_badge", "base_url", "last_seen_at", "comfyui_version", "devices_short",
        "queue_remaining", "in_flight", "max_in_flight", "loaded_checkpoint",
    )
    list_display_links = ("name_badge",)
    list_filter = ("kind", "enabled", "is_online", "draining", "is_demo")
    search_fields = ("name", "base_url")
    form = ComfyBackendAdminForm
    fields = (
        "name", "kind", "base_url", "enabled", "draining", "max_in_flight", "is_demo",
        "region", "access_key_id", "secret_access_key", "secret_state", "forget_secret", "requests_per_second",
        "offered_models", "is_online", "last_checked_at",
        "last_seen_at", "last_error", "comfyui_version", "devices_pretty", "queue_remaining", "loaded_checkpoint",
        "abandoned_prompts", "created_at",
    )
    readonly_fields = (
        "is_online", "last_checked_at", "last_seen_at", "last_error", "comfyui_version", "devices_pretty",
        "queue_remaining", "loaded_checkpoint", "abandoned_prompts", "created_at", "secret_state",
    )
    actions = [
        "test_connection", "sync_checkpoints", "enable", "disable", "drain", "undrain", "check_health",
    ]

    class Media:
        css = {"all": ["admin_dashboard/dashboard.css"]}

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(active_tasks=Count("tasks", filter=Q(tasks__status__in=ACTIVE_STATUSES)))
        )

    @admin.display(description=_("name"), ordering="name")
    def name_badge(self, backend):
        if backend.is_demo:
            return format_html(
                '{} <span class="easel-badge easel-badge-demo" title="{}">{}</span>',
                backend.name, gettext("Easel's built-in engine: placeholder pictures, no GPU."), gettext("demo"),
            )
        return backend.name

    @admin.display(description=_("state"))
    def state_badge(self, backend):
        return format_html(
            '<span class="easel-state easel-state-{}" title="{}">{}</span>',
            backend.state, backend.last_error, backend.state_label,
        )

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if obj.is_volcengine:
            # Its models are what staff just chose: offered at once, no server to read them from.
            volc_models_apply(backend=obj)
            _dispatch_soon()

    @admin.display(description=_("saved secret"))
    def secret_state(self, backend):
        # Whether one is saved, never what it is.
        return gettext("saved") if backend.secret_access_key else gettext("none saved")

    @admin.display(description=_("devices"))
    def devices_short(self, backend):
        return ", ".join(str(d.get("name") or d.get("type") or "?") for d in backend.devices or []) or "-"

    @admin.display(description=_("devices"))
    def devices_pretty(self, backend):
        return format_html("<pre>{}</pre>", json.dumps(backend.devices or [], indent=2))

    @admin.display(description=_("in flight now"), ordering="active_tasks")
    def in_flight(self, backend):
        return getattr(backend, "active_tasks", "-")

    @admin.action(description=_("Test connection"), permissions=["view"])
    def test_connection(self, request, queryset):
        for backend in queryset.order_by("name"):
            if not backend_check(backend=backend):
                self.message_user(
                    request,
                    gettext("%(name)s: unreachable: %(error)s") % {"name": backend.name, "error": backend.last_error},
                    messages.ERROR,
                )
                continue
            if backend.is_volcengine:
                self.message_user(request, gettext("%(name)s: online, VolcEngine, models: %(models)s.") % {
                    "name": backend.name, "models": ", ".join(backend.offered_models or []) or "-"}, messages.SUCCESS)
                continue
            try:
                count = str(len(comfy_client(backend).checkpoints()))
            except ComfyError as exc:
                count = gettext("unknown (%(error)s)") % {"error": exc}
            self.message_user(
                request,
                gettext(
                    "%(name)s: online, ComfyUI %(version)s, devices: %(devices)s, queue: %(queue)d, "
                    "checkpoints: %(count)s."
                )
                % {
                    "name": backend.name,
                    "version": backend.comfyui_version or "?",
                    "devices": self.devices_short(backend),
                    "queue": backend.queue_remaining,
                    "count": count,
                },
                messages.SUCCESS,
            )

    @admin.action(description=_("Check health now"), permissions=["view"])
    def check_health(self, request, queryset):
        for backend in queryset.order_by("name"):
            ok = backend_check(backend=backend)
            text = gettext("online") if ok else backend.last_error
            self.message_user(request, gettext("%(name)s: %(state)s") % {"name": backend.name, "state": text},
                              messages.SUCCESS if ok else messages.ERROR)

    @admin.action(description=_("Sync checkpoints and model files from these backends"), permissions=["change"])
    def sync_checkpoints(self, request, queryset):
        summary = catalog_sync(backends=queryset.order_by("name"))
        self.message_user(request, _sync_message(summary), messages.WARNING if summary.errors else messages.SUCCESS)

    def _set(self, request, queryset, message: str, **values) -> int:
        changed = queryset.update(**values)
        self.message_user(request, message % {"n": changed}, messages.SUCCESS)
        return changed

    @admin.action(description=_("Enable"), permissions=["change"])
    def enable(self, request, queryset):
        self._set(request, queryset, gettext("%(n)d backend(s) enabled."), enabled=True)
        _dispatch_soon()

    @admin.action(description=_("Disable (take no new work)"), permissions=["change"])
    def disable(self, request, queryset):
        self._set(request, queryset, gettext("%(n)d backend(s) disabled."), enabled=False)

    @admin.action(description=_("Drain: finish running work, take nothing new"), permissions=["change"])
    def drain(self, request, queryset):
        self._set(request, queryset, gettext("%(n)d backend(s) draining."), draining=True)

    @admin.action(description=_("Undrain: take new work again"), permissions=["change"])
    def undrain(self, request, queryset):
        self._set(request, queryset, gettext("%(n)d backend(s) taking work again."), draining=False)
        _dispatch_soon()


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ("name", "display_name", "ckpt_name", "enabled", "is_default", "available_on", "default_size",
                    "default_steps")
    list_editable = ("display_name", "enabled")
    list_filter = ("enabled", "is_default", "backends")
    search_fields = ("name", "display_name", "ckpt_name")
    filter_horizontal = ("backends",)
    fieldsets = (
        (None, {"fields": ("name", "ckpt_name", "display_name", "description", "enabled", "is_default",
                           "backends")}),
        (
            _("Defaults"),
            {
                "fields": (
                    "default_width", "default_height", "default_steps", "default_cfg", "default_sampler",
                    "default_scheduler",
                )
            },
        ),
    )
    actions = ["enable", "disable", "make_default", "sync_from_backends"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related(
            Prefetch("backends", queryset=ComfyBackend.objects.order_by("name").only("pk", "name"))
        )

    @admin.display(description=_("available on"))
    def available_on(self, checkpoint):
        names = [b.name for b in checkpoint.backends.all()]
        return ", ".join(names) if names else gettext("no backend")

    @admin.display(description=_("default size"))
    def default_size(self, checkpoint):
        return f"{checkpoint.default_width}×{checkpoint.default_height}"

    @admin.action(description=_("Enable"), permissions=["change"])
    def enable(self, request, queryset):
        n = queryset.update(enabled=True)
        self.message_user(request, gettext("%(n)d checkpoint(s) enabled.") % {"n": n}, messages.SUCCESS)

    @admin.action(description=_("Disable"), permissions=["change"])
    def disable(self, request, queryset):
        n = queryset.update(enabled=False)
        self.message_user(request, gettext("%(n)d checkpoint(s) disabled.") % {"n": n}, messages.SUCCESS)

    @admin.action(description=_("Make the default model (for tasks that name none)"), permissions=["change"])
    def make_default(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, gettext("Select exactly one checkpoint to make the default."),
                              messages.WARNING)
            return
        checkpoint = queryset.get()
        checkpoint_make_default(checkpoint=checkpoint)
        self.message_user(request, gettext("%(name)s is now the default model.") % {"name": checkpoint.shown_name},
                          messages.SUCCESS)

    def save_model(self, request, obj, form, change):
        if obj.is_default:
            # One default at a time: ticking the box here moves it from the old one.
            checkpoint_make_default(checkpoint=obj, save=True)
        else:
            super().save_model(request, obj, form, change)

    @admin.action(description=_("Sync from backends (every enabled backend)"), permissions=["change"])
    def sync_from_backends(self, request, queryset):
        summary = catalog_sync()
        self.message_user(request, _sync_message(summary), messages.WARNING if summary.errors else messages.SUCCESS)


@admin.register(ModelFile)
class ModelFileAdmin(admin.ModelAdmin):
    list_display = ("shown_name", "kind", "file_name", "enabled", "backend_count")
    list_display_links = ("shown_name",)
    list_filter = ("kind", "enabled", "backends")
    search_fields = ("display_name", "file_name", "description")
    filter_horizontal = ("backends",)
    fields = ("kind", "file_name", "display_name", "description", "enabled", "backends", "created_at")
    readonly_fields = ("created_at",)
    actions = ["enable", "disable", "sync_from_backends"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(backend_total=Count("backends", distinct=True))

    def get_readonly_fields(self, request, obj=None):
        # What ComfyUI calls the file is the server's, not staff's: fixed once the row exists.
        fixed = ("kind", "file_name") if obj is not None else ()
        return (*fixed, *self.readonly_fields)

    @admin.display(description=_("name"), ordering="display_name")
    def shown_name(self, obj):
        return obj.shown_name

    @admin.display(description=_("backends"), ordering="backend_total")
    def backend_count(self, obj):
        return obj.backend_total

    @admin.action(description=_("Enable"), permissions=["change"])
    def enable(self, request, queryset):
        n = queryset.update(enabled=True)
        self.message_user(request, gettext("%(n)d model file(s) enabled.") % {"n": n}, messages.SUCCESS)

    @admin.action(description=_("Disable"), permissions=["change"])
    def disable(self, request, queryset):
        n = queryset.update(enabled=False)
        self.message_user(request, gettext("%(n)d model file(s) disabled.") % {"n": n}, messages.SUCCESS)

    @admin.action(description=_("Sync from backends (every enabled backend)"), permissions=["change"])
    def sync_from_backends(self, request, queryset):
        summary = catalog_sync()
        self.message_user(request, _sync_message(summary), messages.WARNING if summary.errors else messages.SUCCESS)


class TemplateInputInline(admin.TabularInline):
    """The values users set: Easel's own parameters under their names, custom inputs under any other."""

    model = TemplateInput
    form = TemplateInputForm
    formset = TemplateInputFormSet
    extra = 0


@admin.register(WorkflowTemplate)
class WorkflowTemplateAdmin(admin.ModelAdmin):
    form = WorkflowTemplateAdminForm
    inlines = [TemplateInputInline]
    list_display = ("shown_name", "slug", "kind", "enabled", "is_default", "builtin")
    list_display_links = ("shown_name",)
    list_filter = ("kind", "enabled")
    search_fields = ("name", "slug")
    readonly_fields = ("builtin", "detected_inputs", "created_at", "updated_at")
    fields = (
        "name", "slug", "kind", "description", "enabled", "is_default", "execution_timeout",
        "detected_inputs", "graph", "builtin", "created_at", "updated_at",
    )
    actions = ["validate_against_backend"]
    change_list_template = "admin/models_catalog/workflowtemplate/change_list.html"

    @admin.display(description=_("name"), ordering="name")
    def shown_name(self, obj):
        return obj.shown_name

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None and obj.builtin:
            # The fields hold the English Easel shipped; say how readers see them.
            form.base_fields["name"].help_text = gettext(
                "Easel's own name, shown to each reader in their language (here: “%(shown)s”). "
                "A name you write instead is shown as you wrote it."
            ) % {"shown": obj.shown_name}
            form.base_fields["description"].help_text = gettext(
                "Easel's own description is shown to each reader in their language; one you write is shown as "
                "you wrote it."
            )
        return form

    @admin.display(description=_("detected inputs"))
    def detected_inputs(self, obj):
        # What Easel would propose by itself, to compare with (or copy into) the inputs below.
        if obj is None or not obj.pk:
            return "-"
        rows = [f"{row['name']}: [{row['node_id']}, {row['input_name']}]" for row in inputs_detect(obj.graph)]
        return format_html("<pre>{}</pre>", "\n".join(rows) or "-")

    def get_urls(self):
        custom = [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="models_catalog_workflowtemplate_import",
            ),
        ]
        # Before the default ones: "<path:object_id>/" would swallow "import/".
        return custom + super().get_urls()

    def import_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        node_errors: list[dict] = []
        form = WorkflowTemplateImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                template = template_import(
                    name=data["name"],
                    slug=data["slug"],
                    graph=data["workflow"],
                    kind=data["kind"] or None,
                    backend=data["backend"],
                    description=data["description"],
                )
            except ValidationError as exc:
                node_errors = self._place_errors(form, exc.message_dict, data["workflow"])
            else:
                self.log_addition(request, template, [{"added": {}}])
                self.message_user(
                    request,
                    gettext("Imported %(name)s (%(kind)s) with bindings for: %(params)s.")
                    % {
                        "name": template.shown_name,
                        "kind": template.get_kind_display(),
                        "params": ", ".join(template.bindings) or "-",
                    },
                    messages.SUCCESS,
                )
                return redirect(reverse("admin:models_catalog_workflowtemplate_change", args=[template.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("Import ComfyUI workflow"),
            "form": form,
            "node_errors": node_errors,
        }
        return TemplateResponse(request, "admin/models_catalog/workflowtemplate/import.html", context)

    @staticmethod
    def _place_errors(form, errors: dict[str, list[str]], graph) -> list[dict]:
        """Field errors onto the form; the rest as rows (node, class, messages) for a table."""
        rows = []
        for key, messages_ in errors.items():
            if key in form.fields:
                form.add_error(key, messages_)
            elif key == "graph":
                form.add_error("workflow", messages_)
            else:
                node = graph.get(key) if isinstance(graph, dict) else None
                rows.append(
                    {
                        "node": key if isinstance(node, dict) else "",
                        "class_type": node.get("class_type", "") if isinstance(node, dict) else "",
                        "label": "" if isinstance(node, dict) else gettext("Bindings") if key == "bindings" else key,
                        "messages": messages_,
                    }
                )
        return rows

    @admin.action(description=_("Validate against a backend"))
    def validate_against_backend(self, request, queryset):
        # One /object_info for all the selected templates: it is large on a real server.
        backend, object_info = object_info_any()
        if backend is None:
            self.message_user(
                request,
                gettext("No online backend answered: only the structure and inputs were checked."),
                messages.WARNING,
            )
        where = backend.name if backend else gettext("structure only")
        for template in queryset.order_by("name", "pk"):
            errors = template_check(template=template, object_info=object_info)
            if not errors:
                if object_info:
                    # The inputs' types and limits as this server has them.
                    template_specs_refresh(template=template, object_info=object_info)
                self.message_user(
                    request,
                    gettext("%(name)s: valid (%(where)s).") % {"name": template.shown_name, "where": where},
                    messages.SUCCESS,
                )
                continue
            for line in errors_describe(errors, template.graph):
                self.message_user(
                    request,
                    gettext("%(name)s (%(where)s): %(problem)s")
                    % {"name": template.shown_name, "where": where, "problem": line},
                    messages.ERROR,
                )
