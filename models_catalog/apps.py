from django.apps import AppConfig
from django.db.models.signals import m2m_changed, post_delete, post_migrate, post_save
from django.utils.translation import gettext_lazy as _


class ModelsCatalogConfig(AppConfig):
    name = "models_catalog"
    verbose_name = _("Model catalog")

    def ready(self):
        post_migrate.connect(_register_backends_from_settings, sender=self)
        # Any change to the catalog saved here forgets what creates remembered of it.
        from .models import Checkpoint, ComfyBackend, ModelFile, TemplateInput, WorkflowTemplate
        from .remembered import forget

        for model in (Checkpoint, ComfyBackend, ModelFile, TemplateInput, WorkflowTemplate):
            post_save.connect(forget, sender=model, dispatch_uid=f"catalog-forget-save-{model.__name__}")
            post_delete.connect(forget, sender=model, dispatch_uid=f"catalog-forget-delete-{model.__name__}")
        for through in (ComfyBackend.checkpoints.through, ComfyBackend.model_files.through):
            m2m_changed.connect(forget, sender=through, dispatch_uid=f"catalog-forget-m2m-{through.__name__}")


def _register_backends_from_settings(sender, using, **kwargs):
    # Whatever starts first registers the backends of COMFYUI_URLS: migrate (here), the
    # workers' tick, or `manage.py setup`. No network here: the tick checks and syncs them.
    from .services import backends_from_settings

    backends_from_settings()
