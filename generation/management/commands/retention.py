import json

from django.core.management.base import BaseCommand

from generation.gallery.retention import retention_run


class Command(BaseCommand):
    help = (
        "Apply the retention rules now (EASEL_MAX_HISTORY_DAYS, EASEL_MAX_STORAGE_GB, orphan sweep); "
        "the 'easel-retention' schedule runs the same every hour."
    )

    def handle(self, *args, **options):
        summary = retention_run()
        self.stdout.write(json.dumps(summary, sort_keys=True))
