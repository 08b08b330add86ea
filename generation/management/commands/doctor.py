"""`manage.py doctor`: say what stops this studio from working, and how to fix it."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from generation.ops.doctor import ERROR, OK, WARNING, run_checks


class Command(BaseCommand):
    help = "Check the database, workers, backends, media storage, security settings and clocks."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the checks as JSON.")
        parser.add_argument("--strict", action="store_true", help="Warnings also make the exit code non-zero.")
        parser.add_argument(
            "--no-probe", action="store_true",
            help="Do not contact the backends; use what the last health check recorded.",
        )

    def handle(self, *args, **options):
        checks = run_checks(probe=not options["no_probe"])
        failing = {ERROR, WARNING} if options["strict"] else {ERROR}
        bad = any(c.level in failing for c in checks)
        if options["json"]:
            self.stdout.write(json.dumps({"ok": not bad, "checks": [c.as_dict() for c in checks]}, indent=2))
        else:
            style = {OK: self.style.SUCCESS, WARNING: self.style.WARNING, ERROR: self.style.ERROR}
            for check in checks:
                self.stdout.write(f"{style[check.level](check.level.upper().ljust(7))} {check.name}: {check.message}")
                if check.fix:
                    self.stdout.write(f"        fix: {check.fix}")
        if bad:
            # SystemExit rather than CommandError: the report above is the message.
            raise SystemExit(1)
