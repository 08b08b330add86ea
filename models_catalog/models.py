"""The catalog: what can be generated, and where."""
from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from . import files
from .builtin import shipped_text


class ComfyBackend(models.Model):
    """One ComfyUI server (or Easel's built-in demo engine) that runs prompts, or one VolcEngine account's
    visual API (kind ``volcengine``: cloud text-to-image models, submitted and polled)."""

    KIND_COMFYUI = "comfyui"
    KIND_VOLCENGINE = "volcengine"
    KIND_CHOICES = [(KIND_COMFYUI, _("ComfyUI")), (KIND_VOLCENGINE, _("VolcEngine"))]

    name = models.CharField(_("name"), max_length=100, unique=True)
    kind = models.CharField(_("kind"), max_length=20, choices=KIND_CHOICES, default=KIND_COMFYUI)
    base_url = models.URLField(
        _("base URL"), max_length=300, unique=True,
        help_text=_("ComfyUI: the server's address. VolcEngine: the API endpoint, https://visual.volcengineapi.com."),
    )
    # VolcEngine only. The secret is write-only in the admin and never logged; both keys may be left empty to
    # use EASEL_VOLCENGINE_ACCESS_KEY_ID / EASEL_VOLCENGINE_SECRET_ACCESS_KEY from the environment.
    region = models.CharField(_("region"), max_length=50, blank=True, default="cn-north-1")
    access_key_id = models.CharField(_("access key id"), max_length=200, blank=True)
    secret_access_key = models.CharField(_("secret access key"), max_length=200, blank=True)
    requests_per_second = models.FloatField(
        _("requests per second"), default=1.0,
        help_text=_("VolcEngine: the account's QPS limit for this API; Easel never calls it faster."),
    )
    offered_models = models.JSONField(
        _("models offered"), default=list, blank=True, help_text=_("VolcEngine: the req_key of each model offered."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    is_demo = models.BooleanField(
        _("demo engine"), default=False, help_text=_("Easel's built-in engine: placeholder pictures, no GPU.")
    )
    is_online = models.BooleanField(_("online"), default=False)
    last_checked_at = models.DateTimeField(_("last health check"), null=True, blank=True)
    last_seen_at = models.DateTimeField(_("last seen"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    comfyui_version = models.CharField(_("ComfyUI version"), max_length=50, blank=True)
    devices = models.JSONField(_("devices"), default=list, blank=True)
    queue_remaining = models.PositiveIntegerField(_("ComfyUI queue length"), default=0)
    draining = models.BooleanField(
        _("draining"), default=False, help_text=_("Finish what it runs, take nothing new.")
    )
    # ComfyUI runs one prompt at a time; keeping one more submitted behind it means the
    # backend never idles between prompts while Easel does its bookkeeping.
    max_in_flight = models.PositiveSmallIntegerField(
        _("tasks in flight"), default=2, help_text=_("Tasks assigned to this backend at once (running + queued).")
    )
    # The checkpoint it ran last: routing prefers it to avoid a model reload.
    loaded_checkpoint = models.CharField(_("loaded checkpoint"), max_length=300, blank=True)
    # Prompts Easel moved elsewhere while this backend was away: taken off its queue
    # (or interrupted) as soon as it answers again, so they never run for nothing.
    abandoned_prompts = models.JSONField(_("prompts to take off it"), default=list, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("ComfyUI backend")
        verbose_name_plural = _("ComfyUI backends")

    def __str__(self) -> str:
        return self.name

    # What `state` says, in the reader's language (the names themselves are for code and CSS).
    STATE_LABELS = {
        "online": _("online"), "offline": _("offline"), "disabled": _("disabled"), "draining": _("draining"),
    }

    @property
    def state_label(self) -> str:
        return str(self.STATE_LABELS[self.state])

    @property
    def state(self) -> str:
        if not self.enabled:
            return "disabled"
        if self.draining:
            return "draining"
        return "online" if self.is_online else "offline"

    @property
    def accepts_work(self) -> bool:
        return self.enabled and self.is_online and not self.draining

    @property
    def is_volcengine(self) -> bool:
        return self.kind == self.KIND_VOLCENGINE


class Checkpoint(models.Model):
    """A model users can pick, known to ComfyUI by its file name."""

    name = models.SlugField(
        _("name"), max_length=200, unique=True, help_text=_("What API clients send as model_name.")
    )
    ckpt_name = models.CharField(_("ComfyUI file name"), max_length=300, unique=True)
    display_name = models.CharField(_("display name"), max_length=200, blank=True)
    description = models.TextField(_("description"), blank=True)
    # A checkpoint that appears on a backend waits for staff before users see it: the sync
    # adds it disabled (models_catalog.services.checkpoints_sync).
    enabled = models.BooleanField(_("enabled"), default=True)
    is_default = models.BooleanField(
        _("default model"), default=False,
        help_text=_("What a task gets when it names no model. One at a time; chosen by staff."),
    )
    backends = models.ManyToManyField(
        ComfyBackend, blank=True, related_name="checkpoints", verbose_name=_("available on")
    )
    default_width = models.PositiveIntegerField(_("default width"), default=512)
    default_height = models.PositiveIntegerField(_("default height"), default=512)
    default_steps = models.PositiveIntegerField(_("default steps"), default=20)
    default_cfg = models.FloatField(_("default CFG"), default=7.0)
    default_sampler = models.CharField(_("default sampler"), max_length=50, default="euler")
    default_scheduler = models.CharField(_("default scheduler"), max_length=50, default="normal")
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["display_name", "name"]
        verbose_name = _("checkpoint")
        verbose_name_plural = _("checkpoints")
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=models.Q(is_default=True),
                                    name="checkpoint_one_default"),
        ]

    def __str__(self) -> str:
        return self.display_name or self.name

    @property
    def shown_name(self) -> str:
        return self.display_name or self.name

    @property
    def shown_description(self) -> str:
        """The description in the reader's language when Easel wrote it (a demo model's)."""
        return shipped_text(self.description)


class ModelFile(models.Model):
    """A server file other than a checkpoint (a LoRA, a VAE, an upscale model, a ControlNet)
    that templates load, known to ComfyUI by its file name; one row per kind and file."""

    KIND_CHOICES = [
        (files.LORA, _("LoRA")),
        (files.VAE, _("VAE")),
        (files.UPSCALE_MODEL, _("upscale model")),
        (files.CONTROLNET, _("ControlNet")),
    ]

    kind = models.CharField(_("kind"), max_length=20, choices=KIND_CHOICES)
    file_name = models.CharField(_("ComfyUI file name"), max_length=300)
    display_name = models.CharField(_("display name"), max_length=200, blank=True)
    description = models.TextField(_("description"), blank=True)
    # Like a checkpoint: a file that appears on a backend waits for staff before users see
    # it (models_catalog.services.model_files_sync adds it disabled).
    enabled = models.BooleanField(_("enabled"), default=True)
    backends = models.ManyToManyField(
        ComfyBackend, blank=True, related_name="model_files", verbose_name=_("available on")
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["kind", "display_name", "file_name"]
        verbose_name = _("model file")
        verbose_name_plural = _("model files")
        constraints = [
            models.UniqueConstraint(fields=["kind", "file_name"], name="modelfile_one_per_kind_and_name"),
        ]

    def __str__(self) -> str:
        return self.shown_name

    @property
    def shown_name(self) -> str:
        return self.display_name or self.file_name

    @property
    def shown_description(self) -> str:
        """The description in the reader's language when Easel wrote it (a demo file's)."""
        return shipped_text(self.description)


class WorkflowTemplate(models.Model):
    """A ComfyUI API-format graph plus where Easel's parameters go in it."""

    KIND_TXT2IMG = "txt2img"
    KIND_IMG2IMG = "img2img"
    KIND_CHOICES = [(KIND_TXT2IMG, _("text to image")), (KIND_IMG2IMG, _("image to image"))]

    slug = models.SlugField(_("slug"), max_length=100, unique=True)
    name = models.CharField(_("name"), max_length=200)
    kind = models.CharField(_("kind"), max_length=20, choices=KIND_CHOICES, default=KIND_TXT2IMG)
    graph = models.JSONField(_("ComfyUI API-format graph"))
    description = models.TextField(_("description"), blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    is_default = models.BooleanField(_("default for its kind"), default=False)
    execution_timeout = models.PositiveIntegerField(
        _("execution timeout (s)"), null=True, blank=True, help_text=_("Empty: the studio's default.")
    )
    builtin = models.BooleanField(_("built in"), default=False, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("workflow template")
        verbose_name_plural = _("workflow templates")

    def __str__(self) -> str:
        return self.shown_name

    # A built-in template's name and description are stored in English and shown in the
    # reader's language while they are what Easel shipped; staff's own words as written.
    @property
    def shown_name(self) -> str:
        return shipped_text(self.name) if self.builtin else self.name

    @property
    def shown_description(self) -> str:
        return shipped_text(self.description) if self.builtin else self.description

    # What the template takes is what its inputs say: the one rule pages, the API and
    # the service follow (e.g. whether a source image is sent). Read through
    # `self.inputs.all()`, so a prefetch serves every call.
    @property
    def input_list(self) -> list[TemplateInput]:
        if not self.pk:
            return []
        # Read once per instance (a create asks `takes()` several times); kept where a
        # prefetch would keep it, so `refresh_from_db()` forgets it.
        if "inputs" not in getattr(self, "_prefetched_objects_cache", {}):
            models.prefetch_related_objects([self], "inputs")
        return list(self.inputs.all())

    @property
    def bindings(self) -> dict[str, list]:
        """Input name → [node_id, input_name]: where each value goes in the graph."""
        return {i.name: [i.node_id, i.input_name] for i in self.input_list}

    def takes(self, parameter: str) -> bool:
        return any(i.name == parameter for i in self.input_list)

    @property
    def takes_image(self) -> bool:
        return self.takes("image")

    @property
    def takes_denoise(self) -> bool:
        return self.takes("denoise")


class TemplateInput(models.Model):
    """One value users set: a literal input ([node_id, input_name]) of the template's graph.

    Easel's own parameters (prompt, checkpoint, width, seed, …: PARAMETER_NAMES in
    models_catalog.templates) are inputs under their names and are sent as a request's
    top-level fields; any other name is a custom input, sent under `inputs`. Type and
    limits come from ComfyUI's /object_info (models_catalog.inputs); staff may narrow them.
    """

    GROUP_BASIC = "basic"
    GROUP_ADVANCED = "advanced"
    GROUP_CHOICES = [(GROUP_BASIC, _("basic")), (GROUP_ADVANCED, _("advanced"))]

    template = models.ForeignKey(
        WorkflowTemplate, on_delete=models.CASCADE, related_name="inputs", verbose_name=_("template")
    )
    name = models.SlugField(
        _("name"), max_length=50, help_text=_("What API clients send (a request field or a key of inputs).")
    )
    node_id = models.CharField(_("node"), max_length=50)
    input_name = models.CharField(_("node input"), max_length=100)
    label = models.CharField(_("label"), max_length=200, blank=True)
    help_text = models.CharField(_("help text"), max_length=500, blank=True)
    group = models.CharField(_("group"), max_length=20, choices=GROUP_CHOICES, default=GROUP_BASIC)
    default = models.JSONField(
        _("default"), null=True, blank=True, help_text=_("Empty: the graph's own value.")
    )
    order = models.PositiveSmallIntegerField(_("order"), default=0)
    minimum = models.FloatField(_("minimum"), null=True, blank=True, help_text=_("Narrows ComfyUI's minimum."))
    maximum = models.FloatField(_("maximum"), null=True, blank=True, help_text=_("Narrows ComfyUI's maximum."))
    step = models.FloatField(_("step"), null=True, blank=True)
    # ComfyUI's own [type, options] of the input as /object_info gave it when the input
    # was saved: the type and limits, even while no backend answers.
    spec = models.JSONField(_("ComfyUI input spec"), default=list, blank=True)
    optional = models.BooleanField(
        _("optional"), default=False,
        help_text=_("Left empty, the node is taken out of the graph (an unused LoRA slot, for example)."),
    )

    class Meta:
        ordering = ["order", "pk"]
        verbose_name = _("template input")
        verbose_name_plural = _("template inputs")
        constraints = [models.UniqueConstraint(fields=["template", "name"], name="template_input_unique_name")]

    def __str__(self) -> str:
        return self.name
