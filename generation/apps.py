from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = _("Generation")

    def ready(self):
        from django_q.signals import post_spawn

        # A qcluster that starts makes sure the pumps run (rather than at its first tick).
        post_spawn.connect(_pumps_on_spawn, dispatch_uid="easel-pumps-on-spawn")


def _pumps_on_spawn(sender, proc_name=None, **kwargs):
    import logging

    from .fleet.pump import pumps_ensure

    try:
        pumps_ensure()
    except Exception:  # a database not migrated yet, or away: the tick tries again
        logging.getLogger(__name__).warning("could not ensure the pumps at worker start", exc_info=True)
