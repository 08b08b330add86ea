"""Reads on the catalog."""
from __future__ import annotations

from django.db.models import Exists, OuterRef, QuerySet

from . import files as file_rule
from .models import Checkpoint, ComfyBackend, ModelFile, WorkflowTemplate
from .remembered import remembered
from .templates import template_fields, template_fields_keep


def checkpoint_list_usable() -> QuerySet[Checkpoint]:
    """Enabled checkpoints that at least one enabled backend has, annotated `online`.

    `online` says whether a backend taking work has it right now. Checkpoints whose
    backends are all offline stay usable (a task waits in the queue and runs when one
    returns); lists show them flagged, online ones first.
    """
    has_backend = ComfyBackend.objects.filter(enabled=True, checkpoints=OuterRef("pk"))
    has_online = ComfyBackend.objects.filter(enabled=True, is_online=True, draining=False, checkpoints=OuterRef("pk"))
    return (
        Checkpoint.objects.filter(enabled=True)
        .filter(Exists(has_backend))
        .annotate(online=Exists(has_online))
        # Staff's default first: forms start on it, like a task that names no model.
        .order_by("-is_default", "-online", "display_name", "name")
    )


def checkpoint_get_usable(*, name: str) -> Checkpoint | None:
    """Find a checkpoint by its Easel name or its ComfyUI file name (remembered a moment:
    every create asks)."""
    def load():
        qs = checkpoint_list_usable()
        return qs.filter(name=name).first() or qs.filter(ckpt_name=name).first()

    return remembered(("checkpoint", name), load)


def checkpoint_find_usable(*, names: list[str]) -> Checkpoint | None:
    """The usable checkpoint a picture's file names (the first name that matches): by
    Easel name, ComfyUI file name, or the file's stem without folder or extension, as
    A1111 writes it ("Model: dreamshaper_8" for dreamshaper_8.safetensors)."""
    names = [name for name in names if name]
    for name in names:
        found = checkpoint_get_usable(name=name)
        if found:
            return found
    stems = {_stem(name) for name in names}
    # Few checkpoints in any catalog: compared here rather than with a per-database regex.
    return next((c for c in checkpoint_list_usable() if _stem(c.ckpt_name) in stems), None)


def _stem(file_name: str) -> str:
    base = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def checkpoint_default() -> Checkpoint | None:
    """The model a task gets when it names none: the one staff made the default, or while
    that one is not usable, the oldest usable one (never whichever name sorts first: a new
    file on a backend must not take over every task sent without a model)."""
    def load():
        usable = checkpoint_list_usable()
        return usable.filter(is_default=True).first() or usable.order_by("created_at", "pk").first()

    return remembered(("checkpoint-default",), load)


def model_files_usable(*, kind: str) -> QuerySet[ModelFile]:
    """Enabled files of this kind that at least one enabled backend has, annotated `online`
    (as for checkpoints: a file whose backends are all offline stays usable, and waits)."""
    has_backend = ComfyBackend.objects.filter(enabled=True, model_files=OuterRef("pk"))
    has_online = ComfyBackend.objects.filter(enabled=True, is_online=True, draining=False, model_files=OuterRef("pk"))
    return (
        ModelFile.objects.filter(kind=kind, enabled=True)
        .filter(Exists(has_backend))
        .annotate(online=Exists(has_online))
        .order_by("-online", "display_name", "file_name")
    )


def model_file_get_usable(*, kind: str, file_name: str) -> ModelFile | None:
    return model_files_usable(kind=kind).filter(file_name=file_name).first()


def backends_having(files: dict[str, set[str]]) -> set[int] | None:
    """Ids of the backends that hold every file given (kind → file names): where a task
    that loads them can run. None when nothing is asked (no constraint).

    Only what the backends reported is asked for: enabled or not, online or not, the caller
    decides which of them may take work. Names that are no file (VAELoader's
    "pixel_space") are on every server and constrain nothing.
    """
    wanted = {kind: {n for n in names if file_rule.is_server_file(kind, n)} for kind, names in files.items()}
    wanted = {kind: names for kind, names in wanted.items() if names}
    if not wanted:
        return None
    having: set[int] | None = None
    for kind, names in sorted(wanted.items()):
        # One query per kind: backend → how many of the names it holds; all of them qualify.
        if kind == file_rule.CHECKPOINT:
            rows = Checkpoint.backends.through.objects.filter(checkpoint__ckpt_name__in=names).values_list(
                "comfybackend_id", "checkpoint__ckpt_name")
        else:
            rows = ModelFile.backends.through.objects.filter(
                modelfile__kind=kind, modelfile__file_name__in=names).values_list(
                "comfybackend_id", "modelfile__file_name")
        held: dict[int, set[str]] = {}
        for backend_id, name in rows:
            held.setdefault(backend_id, set()).add(name)
        ids = {backend_id for backend_id, names_held in held.items() if names_held >= names}
        having = ids if having is None else having & ids
        if not having:
            return set()
    return having or set()


def template_default(*, kind: str = WorkflowTemplate.KIND_TXT2IMG) -> WorkflowTemplate | None:
    def load():
        qs = WorkflowTemplate.objects.filter(enabled=True, kind=kind)
        template = qs.filter(is_default=True).order_by("pk").first() or qs.order_by("pk").first()
        if template is not None:
            template.input_list  # read with it, so every copy handed out shares the inputs
            template_fields_keep(template)  # and what they make of them
        return template

    return remembered(("template-default", kind), load)


def template_list_enabled(*, kind: str | None = None) -> list[WorkflowTemplate]:
    """Enabled templates (of one kind, if given), each kind's default first, with their inputs."""
    qs = WorkflowTemplate.objects.filter(enabled=True).prefetch_related("inputs")
    if kind is not None:
        qs = qs.filter(kind=kind)
    return list(qs.order_by("-is_default", "pk"))


def template_inputs_attach(templates) -> None:
    """Give each template its inputs, and the fields made of them, from memory: a pump
    reads them for every task it claims, and they change only with the template
    (remembered per version: its `updated_at`, and forgotten at once when saved in this
    process). Working the fields out again for every task was a fourteenth of a pump's CPU."""
    for template in templates:
        if template is None:
            continue
        if "inputs" not in getattr(template, "_prefetched_objects_cache", {}):
            rows = remembered(("template-inputs", template.pk, template.updated_at),
                              lambda template=template: list(template.inputs.all()))
            # Kept where prefetch_related keeps them, so `input_list` reads no more.
            inputs = template.inputs.all()
            inputs._result_cache, inputs._prefetch_done = rows, True
            template._prefetched_objects_cache = {**getattr(template, "_prefetched_objects_cache", {}),
                                                  "inputs": inputs}
        template_fields_keep(template, remembered(("template-fields", template.pk, template.updated_at),
                                                  lambda template=template: tuple(template_fields(template))))


def template_get_enabled(*, slug: str) -> WorkflowTemplate | None:
    def load():
        template = WorkflowTemplate.objects.filter(slug=slug, enabled=True).first()
        if template is not None:
            template.input_list
            template_fields_keep(template)
        return template

    return remembered(("template", slug), load)


def usable_file_titles(kind: str) -> list[tuple[str, str]]:
    """(ComfyUI file name, name shown) of the files of this kind users may pick: what a
    template input that lists server files offers (checkpoints included)."""
    if kind == file_rule.CHECKPOINT:
        return [(c.ckpt_name, c.shown_name) for c in checkpoint_list_usable()]
    return [(f.file_name, f.shown_name) for f in model_files_usable(kind=kind)]


def usable_files_online(kind: str) -> list[tuple[str, str, bool]]:
    """(ComfyUI file name, name shown, whether a backend taking work holds it now)."""
    if kind == file_rule.CHECKPOINT:
        return [(c.ckpt_name, c.shown_name, c.online) for c in checkpoint_list_usable()]
    return [(f.file_name, f.shown_name, f.online) for f in model_files_usable(kind=kind)]


def online_holders() -> dict[str, dict[str, list[int]]]:
    """Which backends taking work right now (enabled, online, not draining) hold what:
    {"checkpoint": {Easel checkpoint name: [backend ids]}, <file kind>: {file name: [ids]}}.
    Two queries, whatever the size of the catalog; what pages use to say that no server
    online has a whole combination (a model and its LoRAs) before a task waits for one."""
    online = ComfyBackend.objects.filter(enabled=True, is_online=True, draining=False).values("pk")
    held: dict[str, dict[str, list[int]]] = {file_rule.CHECKPOINT: {}}
    rows = Checkpoint.backends.through.objects.filter(comfybackend__in=online, checkpoint__enabled=True)
    for name, backend_id in rows.values_list("checkpoint__name", "comfybackend_id").order_by("comfybackend_id"):
        held[file_rule.CHECKPOINT].setdefault(name, []).append(backend_id)
    rows = ModelFile.backends.through.objects.filter(comfybackend__in=online, modelfile__enabled=True)
    for kind, name, backend_id in rows.values_list(
            "modelfile__kind", "modelfile__file_name", "comfybackend_id").order_by("comfybackend_id"):
        held.setdefault(kind, {}).setdefault(name, []).append(backend_id)
    return held


def usable_file_names(kind: str) -> list[str]:
    return [name for name, _title in usable_file_titles(kind)]
