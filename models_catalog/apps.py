from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class ModelsCatalogConfig(AppConfig):
    name = "models_catalog"
    verbose_name = _("Model catalog")

    def ready(self):
        post_migrate.connect(_register_backends_from_settings, sender=self)


def _register_backends_from_settings(sender, using, **kwargs):
    # Whatever starts first registers the backends of COMFYUI_URLS: migrate (here), the
    # workers' tick, or `manage.py setup`. No network here: the tick checks and syncs them.
    from .services import backends_from_settings

    backends_from_settings()
