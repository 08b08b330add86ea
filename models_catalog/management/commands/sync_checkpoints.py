from django.core.management.base import BaseCommand

from models_catalog.models import ComfyBackend
from models_catalog.services import catalog_sync


class Command(BaseCommand):
    help = ("Read the checkpoints, LoRAs, VAEs, upscale models and ControlNets each enabled ComfyUI backend offers "
            "(each loader's /object_info/{class}) into the catalog.")

    def add_arguments(self, parser):
        parser.add_argument("--backend", help="Only this backend (name).")

    def handle(self, *args, backend=None, **options):
        qs = ComfyBackend.objects.filter(enabled=True)
        if backend:
            qs = qs.filter(name=backend)
        summary = catalog_sync(backends=qs)
        self.stdout.write(str(summary))
        if summary.errors:
            return
