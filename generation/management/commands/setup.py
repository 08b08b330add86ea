"""`manage.py setup`: what a studio needs before its processes start, safe to run again.

The schema, the workers' heartbeat table, a first staff account (its password printed
once unless EASEL_ADMIN_PASSWORD is set), the backends named in COMFYUI_URLS and their
checkpoints. `manage.py studio` runs it; a deployment runs it once per release (the
compose file's `migrate` service does). Backends in COMFYUI_URLS are also registered by
`migrate` itself and by the workers' minute tick, whichever comes first.
"""
from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.services import staff_ensure
from models_catalog.services import backend_check, backends_from_settings, catalog_sync


class Command(BaseCommand):
    help = ("Prepare the studio: migrate, the heartbeat cache table, a first staff account, the backends "
            "of COMFYUI_URLS and their checkpoints.")

    def add_arguments(self, parser):
        parser.add_argument("--no-sync", action="store_true", help="Register the backends, do not ask them now.")

    def handle(self, *args, no_sync=False, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("createcachetable", verbosity=0)
        created = staff_ensure()
        if created:
            username, password = created
            if password:
                self.stdout.write(self.style.WARNING(
                    f"Created staff account '{username}' with password: {password}\n"
                    "  (shown once; change it under Account > Password)"
                ))
            else:
                self.stdout.write(f"Created staff account '{username}' (password from EASEL_ADMIN_PASSWORD).")
        backends = backends_from_settings()
        if backends:
            self.stdout.write("Backends from COMFYUI_URLS: " + ", ".join(b.name for b in backends))
        for backend in [] if no_sync else backends:
            was_online = backend.is_online
            # The check reads its checkpoints and files as it comes online; one that already was is synced here.
            if backend_check(backend=backend) and was_online:
                catalog_sync(backends=[backend])
            names = sorted(backend.checkpoints.values_list("name", flat=True))
            state = "online" if backend.is_online else f"unreachable ({backend.last_error})"
            self.stdout.write(f"  {backend.name}: {state}; checkpoints: {', '.join(names) or '-'}")
