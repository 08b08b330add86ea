"""Runs one task on a VolcEngine backend: submit once, store the provider's task id, poll, store the pictures.

The ComfyUI run (generation.fleet.runner) asks its backend about a prompt id Easel chose; the visual API has no
such id and no way to ask "did you get this?". So exactly-once rests on the order of writes instead: the intent
(`submitted_at`) is written before the submit and the provider's task id right after its answer. A run that finds
an id polls it (a restart, a hand-over to the next pump); one that finds the intent without an id cannot know
whether VolcEngine has the task, and fails the task rather than risk running (and billing) it twice. A submit
refused outright created nothing and is tried again within the task's timeout when the refusal is transient.

Fail-over follows the ComfyUI run's rules, bounded like them by the task's execution timeout counted from its first
start (a move keeps `started_at`):
- VolcEngine answers `not_found` or `expired` for the stored id: it holds nothing, so sending again cannot run the
  task twice. The task goes back to the queue (`transitions.fail_over` clears the provider's id and the intent) and is
  submitted anew wherever dispatch places it; once the timeout has run out it fails as `provider_task_lost`.
- The backend does not answer the polls for `EASEL_FAILOVER_GRACE_SECONDS` from the last contact and another backend
  offers the model: the task moves there; the abandoned provider task (no cancel exists) may still finish and be
  billed, which the run's reason says. With nowhere else to go it keeps polling here until the timeout.
- Every submit is refused outright (the service cannot be reached, or fails; a rate limit is an answer) for
  `EASEL_BACKEND_HANDBACK_SECONDS` and another backend offers the model: nothing reached VolcEngine, so the intent is
  withdrawn and the task goes back to the queue, as a ComfyUI task not yet sent.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_noop

from models_catalog.services import backend_mark, volc_client

from .. import transitions
from ..comfy import Message
from ..task_text import Text, message_fields, text
from ..volcengine.catalog import MODELS
from ..volcengine.client import BAD_PARAMS, CONTENT_REFUSED, QUOTA, AUTH, THROTTLED, Result, VolcClient, VolcError
from ..volcengine.pacing import Backoff, RateLimit
from .stops import TaskFailed, TaskGone

if TYPE_CHECKING:
    from .runner import TaskRunner

# Polls start soon (a picture takes seconds) and back off to this: no account is asked more than needed.
POLL_FIRST_DELAY = 1.0
POLL_LONGEST_DELAY = 10.0

# The task error code for each kind of refusal that ends a task.
_ERROR_CODES = {BAD_PARAMS: "invalid_parameters", CONTENT_REFUSED: "content_refused", QUOTA: "provider_quota",
                AUTH: "backend_auth"}

_limits: dict[tuple[int, float], RateLimit] = {}
_limits_lock = threading.Lock()


def rate_limit(backend_id: int, per_second: float) -> RateLimit:
    """The one limit every runner of this process shares for a backend (a changed rate makes a new one)."""
    with _limits_lock:
        key = (backend_id, per_second)
        if key not in _limits:
            _limits[key] = RateLimit(max(0.01, per_second))
        return _limits[key]


def _as_text(message: Message | str) -> Text | str:
    if not isinstance(message, Message):
        return message
    return text(message.msgid, **{k: _as_text(v) for k, v in message.params.items()})


def _failed(exc: VolcError) -> TaskFailed:
    return TaskFailed(_ERROR_CODES.get(exc.kind, "backend_error"), _as_text(exc.message))


class VolcRun:
    def __init__(self, runner: "TaskRunner") -> None:
        self.runner = runner
        self.task = runner.task
        self.backend = runner.task.backend
        self.client: VolcClient = volc_client(self.backend)
        # Each pump (a process of its own) gets its share of the account's rate, so all of them together never
        # exceed it (a share goes unused while another pump holds this backend's tasks: the safe side).
        self.limit = rate_limit(self.backend.pk, self.backend.requests_per_second / max(1, settings.EASEL_PUMPS))
        self.req_key = self.task.checkpoint.ckpt_name if self.task.checkpoint else self.task.model_name

    def run(self) -> None:
        task = self.task
        model = MODELS.get(self.req_key)
        if model is None or self.req_key not in (self.backend.offered_models or []):
            raise TaskFailed("invalid_parameters", text(
                gettext_noop("The model %(name)s is not offered by the VolcEngine backend %(backend)s."),
                name=self.req_key, backend=self.backend.name))
        if task.source_image_id is not None:
            raise TaskFailed("invalid_parameters", text(
                gettext_noop("The VolcEngine model %(name)s does not take a source image."), name=model.display_name))
        if not model.size_ok(task.width, task.height):
            message = text(gettext_noop("%(name)s makes pictures from %(low)d to %(high)d pixels a side."),
                           name=model.display_name, low=model.min_side, high=model.max_side)
            raise TaskFailed("invalid_parameters", message, {"width": [message], "height": [message]})
        task_id = task.provider_task_id
        if not task_id:
            if task.submitted_at:
                raise TaskFailed("submit_unconfirmed", text(gettext_noop(
                    "Sending this task to VolcEngine was not confirmed; it is not sent again so that it never runs "
                    "twice. Retry it to send it anew.")))
            task_id = self._submit(model.params(prompt=task.prompt, width=task.width, height=task.height,
                                                seed=task.seed, scale=None))
            if task_id is None:
                return  # handed back to the queue (the backend refused every try)
        if not transitions.start(task, owner=self.runner.owner):
            raise TaskGone()
        self.runner.lease_renewed = time.monotonic()
        result = self._poll(task_id)
        if result is None:
            return  # moved to another backend
        failure = result.failure()
        if failure is not None:
            self._lost(task_id, failure)
            return
        self.runner.log.info("VolcEngine task %s done with %d picture(s)", task_id, len(result.images))
        self.runner.complete_with(lambda index, data: self.runner.store_data(index, data), result.images)

    def _submit(self, params: dict) -> str | None:
        """The provider's task id; None when the task went back to the queue instead (see below)."""
        runner = self.runner
        # The intent, before the call: from here on the task counts as sent (see the module's docstring).
        runner.update(submitted_at=timezone.now(), rendered_prompt={"req_key": self.req_key, **params})
        backoff = Backoff(first=POLL_FIRST_DELAY, longest=POLL_LONGEST_DELAY)
        _timeout, deadline = runner._deadline()
        failing_since: float | None = None  # the first refusal by an unreachable or failing service
        while True:
            self.limit.wait()
            try:
                task_id = self.client.submit(self.req_key, params)
            except VolcError as exc:
                if exc.maybe_accepted:
                    raise TaskFailed("submit_unconfirmed", text(gettext_noop(
                        "VolcEngine's answer to sending this task was lost (%(e)s); it is not sent again so that it "
                        "never runs twice. Retry it to send it anew."), e=_as_text(exc.message))) from exc
                if not exc.retryable or timezone.now() >= deadline:
                    raise _failed(exc) from exc
                runner.log.info("VolcEngine refused the submit for now: %s", exc)
                self._say(_as_text(exc.message))
                if exc.kind != THROTTLED:  # a busy account is there; one that fails or cannot be reached is not
                    failing_since = self._unanswered(exc, failing_since)
                    # As a ComfyUI task not yet sent: back to the queue when another backend could take it. Every
                    # try was refused outright, so VolcEngine holds nothing and the intent is withdrawn first.
                    if (time.monotonic() - failing_since >= settings.EASEL_BACKEND_HANDBACK_SECONDS
                            and runner.elsewhere(self.backend)):
                        runner.update(submitted_at=None)
                        runner.hand_back(self.backend, text(gettext_noop("Waiting: backend %(name)s is unreachable."),
                                                            name=self.backend.name))
                        return None
                runner.wait(backoff.next())
                continue
            self._answered(failing_since)
            # Stored at once: a restart from here on polls this id instead of submitting again.
            runner.update(provider_task_id=task_id)
            runner.last_contact = time.monotonic()
            runner.log.info("submitted to VolcEngine %s as task %s", self.backend.name, task_id)
            return task_id

    def _poll(self, task_id: str) -> Result | None:
        """The task's answer once it stopped running, or None when the task was moved to another backend."""
        runner = self.runner
        backoff = Backoff(first=POLL_FIRST_DELAY, longest=POLL_LONGEST_DELAY)
        timeout, deadline = runner._deadline()
        failing_since: float | None = None  # the first failed poll since the last answer
        while True:
            if timezone.now() > deadline:
                raise TaskFailed("timeout", text(gettext_noop("Timed out after %(n)d s."), n=timeout))
            runner.heartbeat()
            self.limit.wait()
            try:
                result = self.client.result(self.req_key, task_id)
            except VolcError as exc:
                if not exc.retryable:
                    raise _failed(exc) from exc
                runner.log.info("polling VolcEngine failed for now: %s", exc)
                self._say(_as_text(exc.message))
                if exc.kind != THROTTLED:  # a busy account answered: it is there
                    failing_since = self._unanswered(exc, failing_since)
                    # From the last contact in this run (a resumed run that never reached it: its first failure).
                    away = time.monotonic() - (runner.last_contact or failing_since)
                    if away >= settings.EASEL_FAILOVER_GRACE_SECONDS and runner.elsewhere(self.backend):
                        runner.fail_over(self.backend, text(gettext_noop(
                            "Backend %(name)s did not answer for %(n)d s; moved back to the queue to run elsewhere. "
                            "Its VolcEngine task %(id)s was abandoned (VolcEngine cannot cancel it): it may still "
                            "finish there and be billed."), name=self.backend.name, n=int(away), id=task_id))
                        return None
            else:
                runner.last_contact = time.monotonic()
                failing_since = self._answered(failing_since)
                if not result.running:
                    return result
                self._say(text(gettext_noop("Queued at VolcEngine.")) if result.status == "in_queue"
                          else text(gettext_noop("VolcEngine is generating the picture.")))
            runner.wait(backoff.next())

    def _unanswered(self, exc: VolcError, since: float | None) -> float:
        """Since when the backend has not answered: `since`, or now for a first failure. It is marked offline then,
        like a ComfyUI backend that stops answering: dispatch sends it no more work (a task moved away must not come
        straight back), and the health check or its next answer brings it back."""
        if since is None:
            since = time.monotonic()
            backend_mark(backend_id=self.backend.pk, online=False, error=str(exc))
        return since

    def _answered(self, since: float | None) -> None:
        """The backend answered: online again if it had been marked offline (`since` set)."""
        if since is not None:
            backend_mark(backend_id=self.backend.pk, online=True)

    def _lost(self, task_id: str, failure: Message) -> None:
        """VolcEngine holds nothing under this id (`not_found`, `expired`): sending the task again cannot run it
        twice. It goes back to the queue while its execution timeout allows (the bound every move of a task has),
        and fails as lost after that."""
        runner = self.runner
        if timezone.now() >= runner._deadline()[1]:
            raise TaskFailed("provider_task_lost", _as_text(failure))
        runner.fail_over(self.backend, text(gettext_noop(
            "Backend %(name)s lost its VolcEngine task %(id)s (%(e)s); moved back to the queue to be sent again."),
            name=self.backend.name, id=task_id, e=_as_text(failure)))

    def _say(self, message: Text | str) -> None:
        if self.task.status_message != str(message):
            self.runner.update(**message_fields("status", message))


def volc_run(runner: "TaskRunner") -> None:
    VolcRun(runner).run()
