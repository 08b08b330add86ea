"""The history page: the user's tasks with search and filters, bulk delete and zip download."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time as dtime, timedelta, timezone as dt_timezone

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q, QuerySet
from django.http import QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _, ngettext
from django.views.decorators.http import require_GET, require_POST

from config.bounds import INT64_MAX
from models_catalog.models import Checkpoint

from ..gallery.zips import images_zip_response
from ..models import GeneratedImage, GenerationTask, TaskStatus
from ..selectors import generation_list
from ..services import generation_delete
from .forms import HistoryFilterForm

HISTORY_PAGE_SIZE = 24
BULK_LIMIT = 200
# Where a page starts: after (older than) or before (newer than) a task's place.
OLDER, NEWER = "older", "newer"
# The history's own query parameters: what a bulk action carries back to the list.
HISTORY_PARAMS = ("q", "status", "model", "date_from", "date_to", OLDER, NEWER)
MODEL_MAX_LENGTH = 300

_EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
_PLACE = re.compile(r"(-?\d{1,18})\.(\d{1,19})")


def _day_start(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, dtime.min))


def _model_choices(request) -> list[tuple[str, str]]:
    """The model filter's choices: the catalog's checkpoints (a few rows staff keep),
    never the user's tasks (a DISTINCT over all of them costs more the longer the
    history). A name asked for that the catalog no longer has (a removed model, an old
    link) is offered too, so its tasks can still be found."""
    choices = [(c.name, c.shown_name) for c in Checkpoint.objects.order_by("display_name", "name")]
    asked = request.GET.get("model", "")
    if asked and len(asked) <= MODEL_MAX_LENGTH and asked not in {name for name, _label in choices}:
        choices.append((asked, asked))
    return choices


def _history_filters(request) -> tuple[HistoryFilterForm, dict]:
    form = HistoryFilterForm(request.GET or None, models=_model_choices(request), statuses=TaskStatus.choices)
    filters: dict = {}
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        filters = {
            "search": data.get("q") or None,
            "status": data.get("status") or None,
            "model_name": data.get("model") or None,
            "created_after": _day_start(data["date_from"]) if data.get("date_from") else None,
            # The end date is inclusive for people: up to the start of the next day.
            "created_before": _day_start(data["date_to"] + timedelta(days=1)) if data.get("date_to") else None,
        }
    return form, filters


def _place(task: GenerationTask) -> str:
    """A task's place in the list (newest first) for a link: its creation time in
    microseconds since 1970, then its id (the list's order: -created_at, -id)."""
    delta = task.created_at - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}.{task.pk}"


def _parse_place(text: str | None) -> tuple[datetime, int] | None:
    """The place of a link; None for anything else (the list then starts at the top)."""
    match = _PLACE.fullmatch(text or "")
    if not match or int(match[2]) > INT64_MAX:
        return None
    try:
        return _EPOCH + timedelta(microseconds=int(match[1])), int(match[2])
    except OverflowError:
        return None


@dataclass
class HistoryPage:
    """One page of the history: its tasks, and whether older and newer ones follow."""

    object_list: list[GenerationTask]
    has_older: bool
    has_newer: bool

    @property
    def older(self) -> str:
        return _place(self.object_list[-1])

    @property
    def newer(self) -> str:
        return _place(self.object_list[0])

    @property
    def whole(self) -> bool:
        """Everything the filters match is on this page (so its length is their count)."""
        return not (self.has_older or self.has_newer)


def history_page(tasks: QuerySet[GenerationTask], *, older: str | None = None, newer: str | None = None,
                 size: int = HISTORY_PAGE_SIZE) -> HistoryPage:
    """A page of `tasks` (ordered newest first, by -created_at and -id) older or newer
    than a place, found through the (user, -created_at, -id) index: keyset paging, so a
    page costs the same at the top of a long history as at its end, nothing counts all of
    it, and tasks created meanwhile never shift a page (as the API's cursor pages)."""
    if place := _parse_place(older):
        when, pk = place
        rows = list(tasks.filter(Q(created_at__lt=when) | Q(created_at=when, pk__lt=pk))[: size + 1])
        if rows:
            return HistoryPage(rows[:size], has_older=len(rows) > size, has_newer=True)
    elif place := _parse_place(newer):
        when, pk = place
        rows = list(tasks.filter(Q(created_at__gt=when) | Q(created_at=when, pk__gt=pk)).reverse()[: size + 1])
        # A full page, or else this is the top of the list: shown as the first page is.
        if len(rows) >= size:
            return HistoryPage(rows[:size][::-1], has_older=True, has_newer=len(rows) > size)
    # The top of the list (also for a place that leads nowhere: tasks deleted meanwhile).
    rows = list(tasks[: size + 1])
    return HistoryPage(rows[:size], has_older=len(rows) > size, has_newer=False)


@login_required
def history(request):
    form, filters = _history_filters(request)
    page = history_page(generation_list(user=request.user, **filters),
                        older=request.GET.get(OLDER), newer=request.GET.get(NEWER))
    query = request.GET.copy()
    for key in (OLDER, NEWER, "page"):  # "page": the numbered pages of old links
        query.pop(key, None)
    context = {
        "page": page,
        "filter_form": form,
        "filtered": any(v for v in filters.values()),
        "query": query.urlencode(),
        # Bulk delete comes back to this very list (filters and place).
        "filters": request.GET.urlencode(),
    }
    return render(request, "generation/history.html", context)


def history_url(query: str) -> str:
    """The history page with the filters (and page) of `query`, a history query string.

    Only the history's own parameters are kept and the path is always ours, so a
    posted value can only lead back to a history page.
    """
    given = QueryDict(query or "")
    kept = [(key, value) for key in HISTORY_PARAMS for value in given.getlist(key)[:1] if value]
    url = reverse("generation:history")
    return f"{url}?{urlencode(kept)}" if kept else url


def _selected_tasks(request, data) -> list[GenerationTask]:
    ids = [int(i) for i in data.getlist("ids") if str(i).isdigit()][:BULK_LIMIT]
    # Only the caller's own tasks: anyone else's id is silently not there.
    return list(GenerationTask.objects.filter(user=request.user, pk__in=ids).order_by("-created_at", "-id"))


@login_required
@require_POST
def history_delete(request):
    """Delete several tasks: the first POST shows what will go, confirm=yes deletes."""
    filters = request.POST.get("filters", "")
    back = history_url(filters)
    tasks = _selected_tasks(request, request.POST)
    if not tasks:
        messages.error(request, _("Select at least one task first."))
        return redirect(back)
    if request.POST.get("confirm") == "yes":
        for task in tasks:
            generation_delete(task=task)
        messages.success(
            request, ngettext("%(n)d task deleted.", "%(n)d tasks deleted.", len(tasks)) % {"n": len(tasks)}
        )
        return redirect(back)
    return render(request, "generation/history_confirm_delete.html",
                  {"tasks": tasks, "filters": filters, "back": back})


@login_required
@require_GET
def history_zip(request):
    tasks = _selected_tasks(request, request.GET)
    if not tasks:
        messages.error(request, _("Select at least one task first."))
        return redirect(history_url(request.GET.get("filters", "")))
    images = (
        GeneratedImage.objects.filter(task__in=[t.pk for t in tasks], task__status=TaskStatus.COMPLETED)
        .order_by("-task__created_at", "-task_id", "index")
    )
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    return images_zip_response(images=images, filename=f"easel-{stamp}.zip")
