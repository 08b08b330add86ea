"""The pump: one django-q2 job follows many prompts at once.

A run used to be one job per prompt, each holding a whole worker process for the
length of its generation, so a fleet of N backends needed about 2N workers and a
backend added in the admin gave nothing until someone raised Q_WORKERS. A pump job
instead holds backends (a lease per backend, `generation.fleet.holdings`: no backend is
driven by two pumps at once), claims every assigned task of those backends (the task's
own lease, taken with a conditional UPDATE) and follows each in a thread of its own
(the run logic of `generation.fleet.runner`). Workers no longer depend on the number of
backends: a new backend is held at the next beat and its tasks claimed within a poll.

A pump runs for EASEL_PUMP_SECONDS, well below the cluster's timeout, so it never
looks like a stuck job; then it hands its prompts over: each runner releases its
task's lease without touching the prompt, the pump gives its backends back, and the
successor pump (queued before this one ends) takes them and follows the prompts on
them, never submitting one again. A pump that dies (SIGKILL) stops renewing its
leases: its backends and tasks are taken by another pump once the leases run out
(EASEL_TASK_LEASE_SECONDS). A pump that loses a backend (it stalled past the lease, or
gives it back to a pump that started beside it) hands its runners there over at once.
`pumps_ensure` keeps EASEL_PUMPS of them alive; the tick, dispatch and a pump ending
call it.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext_noop
from django_q.conf import Conf
from django_q.status import Stat

from config.db import close_lost_connection, connection_lost, retry_once_if_lost
from models_catalog.models import ComfyBackend
from models_catalog.services import backend_check, backends_health_check

from .. import transitions
from ..models import ACTIVE_STATUSES, GenerationTask, Pump
from ..queue import enqueue
from ..task_text import text
from . import locks
from .dispatch import PROBE_INTERVAL_SECONDS, dispatch, waiting_exists
from .feeds import Feeds
from .holdings import Holdings
from .progress import ProgressBatch
from .runner import TaskRunner, tasks_claimed

logger = logging.getLogger(__name__)

# How often a pump looks for tasks to claim, and writes its heartbeat.
POLL_SECONDS = 0.5
BEAT_SECONDS = 2.0
# A pump whose beat is older than this is dead (it beats every BEAT_SECONDS), or was
# queued and never started (a copy that starts late finds itself surplus and ends).
STALE_SECONDS = 10.0
# Runner threads keep their database connection between prompts while the pump follows
# at most this many (more would hold connections PostgreSQL may not have to spare).
KEEP_CONNECTIONS = 32
# Passes of dispatch at least this far apart: runners that end close together (and the
# creates of a burst) are served by one pass, not one each. The spacing grows with the
# prompts the pump follows, up to DISPATCH_SPACING: a small fleet ends few prompts in a
# moment, and a fixed 0.1 s capped one engine of tiny prompts at max_in_flight / 0.1 a
# second; a large one ends many, and 0.2 s (at 16 prompts) made 8 engines of tiny tasks
# 5 % faster than 0.1 s with dispatch's share of the pump's CPU smaller. A backend holds
# a second prompt meanwhile (max_in_flight), so it does not idle while its freed slot
# waits; bench/dispatch.py keeps 0.96 with 8 engines at 0.3 s a prompt.
DISPATCH_SPACING = 0.2
DISPATCH_SPACING_PER_PROMPT = DISPATCH_SPACING / 16
# How often a pump asks the offline backends that hold prompts Easel moved away from
# whether they are back: one that resumes (a host unfrozen, a network healed) runs on
# whatever it was running, so the sooner those prompts are taken off it, the less GPU
# time goes to images nobody will see. The probe's own timeout is short.
RETURN_PROBE_SECONDS = 1.0
RETURN_PROBE_TIMEOUT = 2.0
# How long an ending pump waits for its runners to hand over (each notices within a second).
HANDOVER_SECONDS = 30.0


def pumps_alive():
    return Pump.objects.filter(heartbeat_at__gte=Now() - timedelta(seconds=STALE_SECONDS))


def kept_alive():
    """The live pumps the cluster keeps (EASEL_PUMPS of them); one run by hand is extra."""
    return pumps_alive().filter(extra=False)


# An assigned task no live pump holds for this long is "not followed" (a claim takes a poll).
UNFOLLOWED_AFTER = timedelta(seconds=30)


def tasks_unfollowed() -> int:
    """Assigned, unfinished tasks whose lease lapsed (or was never taken) a while ago."""
    return (GenerationTask.objects.filter(status__in=ACTIVE_STATUSES, backend__isnull=False)
            .filter(Q(lease_until__lt=Now() - UNFOLLOWED_AFTER)
                    | Q(lease_until__isnull=True, assigned_at__lt=Now() - UNFOLLOWED_AFTER))
            .count())


def pumps_ensure() -> int:
    """Queue pump jobs until EASEL_PUMPS are alive (or queued); returns how many it queued.

    Cheap (one count), so dispatch and the tick call it every time."""
    wanted = settings.EASEL_PUMPS
    if wanted - kept_alive().count() <= 0:
        return 0
    with transaction.atomic():
        # Counted again under a lock: two callers at once (each worker of a starting
        # cluster asks) must not both queue the missing pump.
        locks.transaction_lock(locks.PUMPS)
        missing = wanted - kept_alive().count()
        if missing <= 0:
            return 0
        Pump.objects.filter(heartbeat_at__lt=Now() - timedelta(seconds=STALE_SECONDS)).delete()
        for _ in range(missing):
            # Counted as alive from now: a pump waiting for a free worker is not queued twice.
            pump = Pump.objects.create(heartbeat_at=timezone.now())
            enqueue("pump_run", pump.pk, task_name=f"easel-pump-{pump.pk}", group="easel-pump")
    logger.info("queued %d pump job(s)", missing)
    return missing


class PumpRun:
    """One pump job: claims tasks, runs each in a thread, beats, then hands over."""

    def __init__(self, pump_id: int, *, seconds: float | None = None, slots: int | None = None,
                 extra: bool = False, watch: "ClusterWatch | None" = None):
        self.pump_id = pump_id
        self.watch = watch
        # One started by hand (manage.py pump) runs beside the others, whatever EASEL_PUMPS says.
        self.extra = extra
        self.seconds = settings.EASEL_PUMP_SECONDS if seconds is None else seconds
        self.slots = slots or settings.EASEL_PUMP_SLOTS
        self.stopping = threading.Event()
        # Set when a runner ends: its slot is free and its dispatch may have assigned
        # more, so the pump claims at once rather than at its next poll.
        self.wake = threading.Event()
        self.dispatch_due = threading.Event()
        self.dispatched_at = 0.0
        # When the loop looks for tasks to claim next (see _claim).
        self.claim_due = True
        self.claimed_at = 0.0
        self.progress = ProgressBatch()
        self.name = f"pump{pump_id}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # One socket per backend for all the prompts this pump follows there.
        self.feeds = Feeds(self.name)
        # The backends this pump drives, and for each the event its runners there hand
        # over on (set when the pump ends or loses the backend).
        self.holdings = Holdings(self.name, pump_id)
        self.stops: dict[int, threading.Event] = {}
        self.running: dict[int, Future] = {}
        self.pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix=f"easel-pump{pump_id}")
        # One probe at a time, off the loop (a frozen backend answers only by a timeout).
        self.prober = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"easel-probe{pump_id}")
        self.probing: Future | None = None
        self.probed_at = 0.0

    def run(self) -> None:
        now = timezone.now()
        started = Pump.objects.filter(pk=self.pump_id, started_at__isnull=True).update(
            host=socket.gethostname()[:200], pid=os.getpid(), started_at=now, heartbeat_at=now)
        # More pumps started than wanted (queued twice, or a late copy): the oldest stay.
        # Ranked by id, so two that start at the same moment never both step aside.
        surplus = not self.extra and kept_alive().filter(
            started_at__isnull=False, pk__lt=self.pump_id).count() >= settings.EASEL_PUMPS
        if not started or surplus:
            # A stale copy of this job (django-q2 retried it), or more pumps than wanted.
            Pump.objects.filter(pk=self.pump_id, started_at=now).delete()
            logger.info("pump %s not needed; ending", self.pump_id)
            return
        logger.info("pump %s started (%s, %d slots, %.0f s)", self.pump_id, self.name, self.slots, self.seconds)
        deadline = time.monotonic() + self.seconds
        last_beat = last_progress = 0.0
        try:
            while time.monotonic() < deadline and not self.stopping.is_set():
                try:
                    self._reap()
                    if self.holdings.wanting or time.monotonic() - last_beat >= BEAT_SECONDS:
                        self._hold()
                    self.feeds.sweep()
                    self._probe_returning()
                    self._dispatch_due()
                    self._claim()
                    if time.monotonic() - last_progress >= settings.EASEL_PROGRESS_WRITE_INTERVAL:
                        last_progress = time.monotonic()
                        self.progress.flush()
                    if time.monotonic() - last_beat >= BEAT_SECONDS:
                        last_beat = time.monotonic()
                        if not Pump.objects.filter(pk=self.pump_id).update(
                                heartbeat_at=timezone.now(), running=len(self.running)):
                            logger.warning("pump %s: its row is gone; ending", self.pump_id)
                            break
                        if self.watch is not None and self.watch.stopping():
                            logger.info("pump %s: its cluster is stopping; handing over", self.pump_id)
                            break
                except (OperationalError, InterfaceError) as exc:
                    if not connection_lost(exc):
                        raise
                    # The database went away (a restart, a failover, a cut connection):
                    # the runners go on with their own connections; this loop connects
                    # again at its next poll. A pump that stays away past STALE_SECONDS
                    # is replaced, and finds its row gone when it is back.
                    logger.warning("pump %s: database connection lost; trying again", self.pump_id)
                    close_lost_connection()
                    last_beat = 0.0
                self.wake.wait(self._pause())
                self.wake.clear()
        finally:
            self._hand_over()

    def stop(self) -> None:
        self.stopping.set()

    # --- holding backends --------------------------------------------------------------

    def _hold(self) -> None:
        """Renew and balance this pump's backends (`Holdings.beat`); the runners on one
        it no longer holds hand over at once (another pump drives it now, or will)."""
        alive = pumps_alive().filter(started_at__isnull=False).count()
        self.claim_due = True  # a backend taken now has tasks to claim at once
        for backend_id in self.holdings.beat(pumps=alive):
            logger.warning("pump %s no longer holds backend %s; handing its prompts there over",
                           self.pump_id, backend_id)
            self.stops.pop(backend_id, threading.Event()).set()

    # --- claiming ----------------------------------------------------------------------

    def _slot_freed(self) -> None:
        """A runner ended its task (from its own thread): dispatch in the loop, once for
        every ending since the last pass, then claim what it assigned."""
        self.dispatch_due.set()
        self.wake.set()

    def _pause(self) -> float:
        """Until the next pass of the loop: a poll, or what is left of the dispatch spacing."""
        if self.dispatch_due.is_set():
            return max(0.0, self._spacing() - (time.monotonic() - self.dispatched_at))
        return POLL_SECONDS

    def _spacing(self) -> float:
        return min(DISPATCH_SPACING, DISPATCH_SPACING_PER_PROMPT * len(self.running))

    def _dispatch_due(self) -> None:
        if time.monotonic() - self.dispatched_at < self._spacing():
            return  # the loop comes back when the spacing is over (_pause)
        # Its runners ended tasks, or tasks wait for a backend: created, retried, handed
        # back, or waiting for a backend to come free. One read a poll finds the last
        # kind, so a create writes nothing for dispatch (a flag it wrote cost a fifth
        # of its statements); with every backend full the pass ends after two reads.
        if not self.dispatch_due.is_set() and not waiting_exists():
            return
        self.dispatch_due.clear()
        self.dispatched_at = time.monotonic()
        try:
            if dispatch(pumps=False, probe=False):  # (probing is the prober's: _probe_returning)
                self.claim_due = True
        except Exception as exc:
            if connection_lost(exc):
                self.dispatch_due.set()
                raise
            # The tick dispatches again; never stop the pump over it.
            logger.exception("pump %s: dispatch failed", self.pump_id)

    def _probe_returning(self) -> None:
        """Off the loop, one probe at a time: the offline backends holding prompts Easel
        moved away from (every RETURN_PROBE_SECONDS), and while tasks wait, every other
        offline one not asked for dispatch's PROBE_INTERVAL_SECONDS, so one that is back
        gets work at the next pass. (Dispatch passes in this loop never probe: a frozen
        backend answers only by a timeout, and tasks waiting make a pass every poll.)"""
        if time.monotonic() - self.probed_at < RETURN_PROBE_SECONDS:
            return
        if self.probing is not None and not self.probing.done():
            return
        self.probed_at = time.monotonic()
        offline = list(ComfyBackend.objects.filter(enabled=True, is_online=False).values_list("pk", "abandoned_prompts"))
        holding = [pk for pk, prompts in offline if prompts]
        others = len(offline) > len(holding) and waiting_exists()
        if holding or others:
            self.probing = self.prober.submit(_probe, holding, others)

    def _reap(self) -> None:
        for task_id in [t for t, f in self.running.items() if f.done()]:
            self.running.pop(task_id)

    def _claim(self) -> None:
        free = self.slots - len(self.running)
        if free <= 0:
            return
        # Each ending wakes the loop, but what it frees is assigned by the next pass, which
        # comes a spacing later: look right after a pass of this pump that assigned tasks,
        # else once a poll (tasks others assigned, leases that ran out, a backend taken
        # over), not at every wake (a read an ending, finding nothing, was a tenth of the
        # pump's CPU).
        if not self.claim_due and time.monotonic() - self.claimed_at < POLL_SECONDS:
            return
        self.claim_due = False
        self.claimed_at = time.monotonic()
        self.holdings.drain_check()
        drivable = self.holdings.drivable()
        if not drivable:
            return
        claimable = list(
            GenerationTask.objects.filter(status__in=ACTIVE_STATUSES, backend_id__in=drivable)
            .filter(transitions.lease_lapsed())
            .exclude(pk__in=list(self.running))
            .order_by("assigned_at", "id")
            .values_list("pk", flat=True)[:free]
        )
        if not claimable:
            return
        try:
            # All in one UPDATE, each task under its own owner, then read back the ones
            # this pump got (another may have been quicker for some).
            transitions.claim_many(claimable, owner_prefix=self.name)
            tasks = list(tasks_claimed(claimable, owner_prefix=self.name))
        except (OperationalError, InterfaceError) as exc:
            if connection_lost(exc):
                # The claims may have been committed before the cut: let go of them
                # rather than hold the tasks, with no runner, until their leases end.
                close_lost_connection()
                for task_id in claimable:
                    _release_quietly(task_id, f"{self.name}:{task_id}")
            raise
        for task in tasks:
            stop = self.stops.setdefault(task.backend_id, threading.Event())
            self.running[task.pk] = self.pool.submit(self._follow, task, task.lease_owner, stop)

    def _follow(self, task: GenerationTask, owner: str, stop: threading.Event) -> None:
        # This thread's connection, kept from its last task, may have died meanwhile.
        if connection.connection is not None and not connection.is_usable():
            connection.close()
        runner = TaskRunner(task, owner, stop=stop, on_slot_free=self._slot_freed, progress=self.progress,
                            feeds=self.feeds)
        try:
            runner.run()
        except Exception as exc:
            if connection_lost(exc):
                # The database went away under the run, not the run itself: the prompt
                # runs on, the lease is let go below on a new connection, and the next
                # claim follows the prompt on its backend (never submitting it again).
                logger.warning("run of task %s: database connection lost; handing it back", task.pk)
                close_lost_connection()
            else:
                # A bug must not leave the task spinning forever: fail it readably.
                logger.exception("run of task %s failed", task.pk)
                runner.fail("internal_error",
                            text(gettext_noop("Easel hit an internal error while running this task.")))
        finally:
            try:
                # Leave the task claimable at once if this runner stops without finishing
                # it (a task it completed or failed has no lease left to let go of).
                if not runner.ended:
                    # The successor follows this prompt on a socket under the same client
                    # id: this pump's must be closed first (generation.fleet.feeds).
                    if self.stopping.is_set():
                        self.feeds.close_all()
                    elif stop.is_set():
                        self.feeds.close_backend(task.backend.base_url)
                    _release_quietly(task.pk, owner)
            finally:
                # This thread's own connection: kept for its next task (a new PostgreSQL
                # connection per prompt costs more than the prompt's own queries), unless
                # it saw an error or the pump is busier than connections are kept for.
                if connection.errors_occurred or len(self.running) > KEEP_CONNECTIONS:
                    connection.close()
                self.wake.set()

    # --- ending ------------------------------------------------------------------------

    def _hand_over(self) -> None:
        """Stop following: each runner lets go of its task at its next heartbeat (the
        prompt runs on); the successor pump, queued first, takes them over."""
        self.stopping.set()
        for stop in self.stops.values():
            stop.set()
        try:
            retry_once_if_lost(lambda: Pump.objects.filter(pk=self.pump_id).delete(), what="pump row")
        except Exception:  # a stale row is deleted by the next pumps_ensure
            logger.exception("pump %s could not delete its row", self.pump_id)
        try:
            pumps_ensure()
        except Exception:
            logger.exception("pump %s could not queue its successor; the tick will", self.pump_id)
        done, pending = wait(list(self.running.values()), timeout=HANDOVER_SECONDS)
        self.feeds.close_all()
        if pending:
            logger.warning("pump %s: %d runner(s) still busy after %.0f s", self.pump_id, len(pending),
                           HANDOVER_SECONDS)
        try:
            # After the runners let go: the next holder claims nothing while a task of
            # the backend is still leased, but gets going at once when nothing is.
            retry_once_if_lost(self.holdings.release, what="backend leases")
        except Exception:  # they run out by themselves (EASEL_TASK_LEASE_SECONDS)
            logger.exception("pump %s could not give its backends back", self.pump_id)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.prober.shutdown(wait=False, cancel_futures=True)
        logger.info("pump %s handed over %d task(s)", self.pump_id, len(self.running))


def _probe(backend_ids: list[int], others: bool) -> None:
    """Ask these offline backends whether they are back; one that answers has the prompts
    Easel moved away from it taken off first (`backend_check`). With `others`, then the
    rest of the offline ones, as dispatch would."""
    try:
        for backend in ComfyBackend.objects.filter(pk__in=backend_ids):
            backend_check(backend=backend, timeout=RETURN_PROBE_TIMEOUT)
        if others:  # (the loop saw tasks waiting)
            backends_health_check(only_offline=True, min_interval=PROBE_INTERVAL_SECONDS)
    except Exception:
        logger.exception("probe of returning backends failed")
    finally:
        connection.close()  # this thread's own; probes are rare


def _release_quietly(task_id: int, owner: str) -> None:
    """Let go of a task's lease, on a new connection if the old one died; when the
    database stays away the lease runs out by itself (EASEL_TASK_LEASE_SECONDS)."""
    try:
        retry_once_if_lost(lambda: transitions.release(task_id, owner=owner), what=f"release of task {task_id}")
    except Exception:
        logger.exception("could not release task %s; its lease runs out", task_id)


class ClusterWatch:
    """Is the qcluster this worker belongs to stopping?

    django-q2 stops a cluster by letting each worker finish its job first: a pump would
    hold the stop for up to EASEL_PUMP_SECONDS (and be killed by a supervisor's timeout
    without handing over). The sentinel writes its state ("Stopping") into the cluster's
    heartbeat, and a sentinel that is gone leaves its workers to another parent."""

    def __init__(self):
        self.parent = os.getppid()
        self.cluster_id = None
        self._find_cluster()

    def _find_cluster(self) -> None:
        # A pump that starts with its cluster may run before the cluster's first
        # heartbeat is written: looked for again at each check until found.
        try:
            for stat in Stat.get_all():
                if stat.sentinel == self.parent:
                    self.cluster_id = stat.cluster_id
        except Exception:  # no cache, no heartbeat: the parent check still works
            logger.warning("pump: could not read the cluster's heartbeat", exc_info=True)

    def stopping(self) -> bool:
        if os.getppid() != self.parent:
            return True  # the sentinel died (the whole group was signalled)
        if self.cluster_id is None:
            self._find_cluster()
        if self.cluster_id is None:
            return False
        try:
            # A lapsed heartbeat reads as a plain Status ("Stopped"): only "Stopping" counts.
            return Stat.get(pid=0, cluster_id=self.cluster_id).status == Conf.STOPPING
        except Exception:
            return False


def pump_run(*, pump_id: int) -> None:
    run = PumpRun(pump_id, watch=ClusterWatch())
    if threading.current_thread() is not threading.main_thread():
        run.run()  # signals reach only the main thread (a test running jobs in-process)
        return
    # SIGTERM (a supervisor stopping the studio's process group, or django-q2's own
    # timeout) hands over first, then ends the worker as it would have.
    terminated = threading.Event()

    def on_term(signum, frame):
        terminated.set()
        run.stop()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        run.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if terminated.is_set():
        os.kill(os.getpid(), signal.SIGTERM)
