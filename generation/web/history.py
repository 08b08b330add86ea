"""The history page: the user's tasks with search and filters, bulk delete and zip download."""
from __future__ import annotations

from datetime import datetime, time as dtime, timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _, ngettext
from django.views.decorators.http import require_GET, require_POST

from ..gallery.zips import images_zip_response
from ..models import GeneratedImage, GenerationTask, TaskStatus
from ..selectors import generation_list
from ..services import generation_delete
from .forms import HistoryFilterForm

HISTORY_PAGE_SIZE = 24
BULK_LIMIT = 200
# The history's own query parameters: what a bulk action carries back to the list.
HISTORY_PARAMS = ("q", "status", "model", "date_from", "date_to", "page")


def _day_start(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, dtime.min))


def _history_filters(request) -> tuple[HistoryFilterForm, dict]:
    models = (
        GenerationTask.objects.filter(user=request.user).order_by("model_name").values_list("model_name", flat=True)
        .distinct()
    )
    form = HistoryFilterForm(request.GET or None, models=list(models), statuses=TaskStatus.choices)
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


@login_required
def history(request):
    form, filters = _history_filters(request)
    paginator = Paginator(generation_list(user=request.user, **filters), HISTORY_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page,
        "paginator": paginator,
        "filter_form": form,
        "filtered": any(v for v in filters.values()),
        "query": query.urlencode(),
        # Bulk delete comes back to this very list (filters and page).
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
