"""Dates and times on the pages, one way everywhere.

`{% when value %}` says "just now", "5 minutes ago", "in 3 hours" for times within a
day, and the studio's one date-and-time format (`absolute`) otherwise. It renders a
`<time datetime=…>` whose title holds the absolute form; easel.js keeps the words
fresh while the page stays open, with the labels `{% when_labels %}` hands it, and
falls back to the title once a time is no longer fresh. So the script never formats a
date itself: every date shown is formatted here, in the studio's time zone
(TIME_ZONE, Django's current time zone).

`{% datetime value %}` is the absolute form alone, for records (a task's start and end).
"""
from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, json_script
from django.utils.translation import gettext, ngettext, pgettext

register = template.Library()

MINUTE, HOUR, DAY = 60, 3600, 86400

# Each phrase's plural forms for a count n (not yet filled in: the script fills them too).
# Written out as ngettext calls so makemessages finds them.
PHRASES = {
    "minutesAgo": lambda n: ngettext("%(n)d minute ago", "%(n)d minutes ago", n),
    "hoursAgo": lambda n: ngettext("%(n)d hour ago", "%(n)d hours ago", n),
    "inMinutes": lambda n: ngettext("in %(n)d minute", "in %(n)d minutes", n),
    "inHours": lambda n: ngettext("in %(n)d hour", "in %(n)d hours", n),
}


def absolute(value: datetime) -> str:
    """The studio's one date-and-time format, in its time zone and the reader's language."""
    # Translators: a PHP date() format (Django's date filter): month, day, year, 24-hour time.
    return date_format(timezone.localtime(value), pgettext("date and time format", "M j, Y, H:i"))


def relative(value: datetime, now: datetime | None = None) -> str | None:
    """"just now", "5 minutes ago", "in 3 hours"… within a day of now; None beyond."""
    seconds = (value - (now or timezone.now())).total_seconds()
    past, span = seconds <= 0, abs(seconds)
    if span < MINUTE:
        return gettext("just now") if past else gettext("in a moment")
    if span < HOUR:
        n, phrase = int(span // MINUTE), ("minutesAgo" if past else "inMinutes")
    elif span < DAY:
        n, phrase = int(span // HOUR), ("hoursAgo" if past else "inHours")
    else:
        return None
    return PHRASES[phrase](n) % {"n": n}


def _iso(value: datetime) -> str:
    return timezone.localtime(value).isoformat(timespec="seconds")


@register.simple_tag
def when(value):
    """A moment as people say it: relative when fresh, else the absolute form."""
    if not value:
        return ""
    full = absolute(value)
    return format_html('<time datetime="{}" title="{}" data-when>{}</time>', _iso(value), full,
                       relative(value) or full)


@register.simple_tag(name="datetime")
def datetime_tag(value):
    """The absolute form alone, in a <time> element."""
    if not value:
        return ""
    return format_html('<time datetime="{}">{}</time>', _iso(value), absolute(value))


@register.simple_tag
def when_labels():
    """The words the page script uses to keep {% when %} fresh (a JSON block, CSP-safe).

    `now` is the server's clock, so a visitor's wrong clock does not skew the words.
    """
    return json_script({
        "now": timezone.now().isoformat(timespec="seconds"),
        "justNow": gettext("just now"),
        "inAMoment": gettext("in a moment"),
        # [one, other]: the forms for 1 and for 2 (English and Chinese need no more).
        **{name: [forms(1), forms(2)] for name, forms in PHRASES.items()},
    }, "easel-time")
