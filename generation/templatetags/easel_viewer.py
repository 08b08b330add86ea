"""The words of the picture viewer (static/js/viewer.js), from the catalogue like every
other word on the page: `{% viewer_labels %}` hands them to the script as a JSON block
(CSP-safe), in the reader's language."""
from __future__ import annotations

from django import template
from django.utils.html import json_script
from django.utils.translation import gettext

register = template.Library()


@register.simple_tag
def viewer_labels():
    return json_script({
        "zoomIn": gettext("Zoom in"),
        "zoomOut": gettext("Zoom out"),
        "fit": gettext("Fit to window"),
        "close": gettext("Close"),
        "dialog": gettext("Picture viewer"),
    }, "viewer-labels")
