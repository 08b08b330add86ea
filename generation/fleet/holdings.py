"""Which pump drives which backend: a lease per backend, one pump at a time.

Several pumps (on one host or on several clusters) share the fleet by holding its
backends: a pump claims only the tasks of backends it holds, so no backend is ever
driven by two pumps at once. Each pump takes a fair share (the backends divided by the
pumps alive, rounded up) and gives back what it holds beyond it, so a pump that
starts beside another gets work within a beat. A lease is renewed by its pump's beat
and judged by the database's clock (hosts' clocks may disagree); one whose pump died
(SIGKILL) or stalled (SIGSTOP) runs out after EASEL_TASK_LEASE_SECONDS and is taken
by another pump at its next beat.

A backend taken from another pump (its lease ran out, or it was given back) is
"draining" while tasks on it are still leased by anyone else: the new holder claims
nothing there until the old runners have let go (a stalled pump's runners find their
task leases gone when they wake, a live one's hand over within a second). The task's
own lease and the "does the backend already know this prompt?" check stay, so a
takeover never submits a prompt again.
"""
from __future__ import annotations

import math

from django.db.models import BooleanField, ExpressionWrapper, Q
from django.db.models.functions import Now

from models_catalog.models import ComfyBackend

from .. import transitions
from ..models import ACTIVE_STATUSES, BackendLease, GenerationTask


def _live() -> Q:
    return Q(until__gte=Now())


def _free() -> Q:
    return Q(until__isnull=True) | Q(until__lt=Now())


class Holdings:
    """The backends one pump holds; `beat` renews, balances and reports what changed."""

    def __init__(self, owner: str, pump_id: int | None):
        self.owner = owner
        self.pump_id = pump_id
        self.held: set[int] = set()
        self.draining: set[int] = set()
        # Short of its share while a backend is free or being given back (its pump ending):
        # the pump beats again at its next poll rather than a beat later.
        self.wanting = False

    def drivable(self) -> set[int]:
        """The backends whose tasks this pump may claim now."""
        return self.held - self.draining

    def beat(self, pumps: int) -> set[int]:
        """Renew this pump's leases, take its share of the free backends, give back what
        it holds beyond that share; returns the backends it no longer holds (its runners
        there must hand over). `pumps`: how many pumps are alive, this one included."""
        before = self.held
        BackendLease.objects.filter(owner=self.owner).update(until=transitions.lease_until())
        leases = self._leases()
        held = {backend for backend, owner, _live, _pump in leases if owner == self.owner}
        share = math.ceil(len(leases) / max(pumps, 1))
        if len(held) > share:
            # Another pump came: the backends with the highest ids go back (any would do;
            # a fixed order keeps two pumps from trading the same ones back and forth).
            excess = sorted(held)[share:]
            BackendLease.objects.filter(owner=self.owner, backend_id__in=excess).update(owner="", pump=None, until=None)
            held -= set(excess)
        free = [backend for backend, owner, live, _pump in leases if not live or not owner]
        # A lease whose pump row is gone: that pump is ending and gives it back in a moment.
        ending = any(owner and live and pump is None for _backend, owner, live, pump in leases)
        if len(held) < share:
            if free:
                BackendLease.objects.filter(backend_id__in=sorted(free)[:share - len(held)]).filter(_free()).update(
                    owner=self.owner, pump_id=self.pump_id, until=transitions.lease_until())
                held = set(BackendLease.objects.filter(owner=self.owner).values_list("backend_id", flat=True))
        gained = held - before
        self.held = held
        self.wanting = len(held) < share and bool(ending or set(free) - held)
        self.draining = (self.draining & held) | gained
        self.drain_check()
        return before - held

    def drain_check(self) -> None:
        """Forget the draining backends no one else holds a task lease on any more."""
        if not self.draining:
            return
        busy = set(GenerationTask.objects.filter(backend_id__in=self.draining, status__in=ACTIVE_STATUSES,
                                                 lease_until__gte=Now())
                   .exclude(lease_owner__startswith=self.owner + ":")
                   .values_list("backend_id", flat=True).distinct())
        self.draining &= busy

    def _leases(self) -> list[tuple[int, str, bool, int | None]]:
        """(backend, owner, live, pump) for every backend, its lease row made on first sight."""
        backends = set(ComfyBackend.objects.values_list("pk", flat=True))
        rows = list(BackendLease.objects.filter(backend_id__in=backends)
                    .annotate(live=ExpressionWrapper(_live(), output_field=BooleanField()))
                    .values_list("backend_id", "owner", "live", "pump_id"))
        missing = backends - {row[0] for row in rows}
        if missing:
            BackendLease.objects.bulk_create([BackendLease(backend_id=b) for b in missing], ignore_conflicts=True)
            rows += [(b, "", False, None) for b in missing]
        return [(b, owner, bool(live), pump) for b, owner, live, pump in rows]

    def release(self) -> None:
        """Give back every backend (a pump ending, after its runners let go of their tasks)."""
        BackendLease.objects.filter(owner=self.owner).update(owner="", pump=None, until=None)
        self.held = set()
        self.draining = set()
        self.wanting = False


def backends_held() -> dict[int, list[str]]:
    """Pump id → the names of the backends it holds now."""
    held: dict[int, list[str]] = {}
    rows = (BackendLease.objects.filter(_live(), pump__isnull=False).exclude(owner="")
            .order_by("backend__name").values_list("pump_id", "backend__name"))
    for pump_id, name in rows:
        held.setdefault(pump_id, []).append(name)
    return held


def backends_unheld() -> list[str]:
    """The enabled backends no pump holds (nothing assigned to them starts)."""
    return list(ComfyBackend.objects.filter(enabled=True)
                .exclude(lease__in=BackendLease.objects.filter(_live()).exclude(owner=""))
                .order_by("name").values_list("name", flat=True))
