"""Run one pump in the foreground (development and debugging): the loop a pump job runs
in a qcluster worker, with its log on the terminal. Ctrl+C hands over and stops."""
from __future__ import annotations

import signal

from django.core.management.base import BaseCommand
from django.utils import timezone

from generation.fleet.pump import PumpRun
from generation.models import Pump


class Command(BaseCommand):
    help = "Follow the prompts of assigned tasks in the foreground, like a pump job of the qcluster."

    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=None,
                            help="how long to run before handing over (default: EASEL_PUMP_SECONDS)")
        parser.add_argument("--slots", type=int, default=None, help="prompts followed at once (EASEL_PUMP_SLOTS)")

    def handle(self, *args, seconds=None, slots=None, **options):
        pump = Pump.objects.create(heartbeat_at=timezone.now(), extra=True)
        run = PumpRun(pump.pk, seconds=seconds, slots=slots, extra=True)
        signal.signal(signal.SIGINT, lambda *_: run.stop())
        signal.signal(signal.SIGTERM, lambda *_: run.stop())
        self.stdout.write(f"pump {pump.pk} running ({run.name}); Ctrl+C to hand over and stop")
        run.run()
        self.stdout.write("handed over")
