"""A test URLconf: the real URLs plus a page showing the template-input widgets
(generation/web/widgets.py), for the Chromium tests. Each POST that parses is kept in
RECEIVED (the live server runs in a thread of the test's own process), with the mask
file's bytes, so a test can read what the browser sent."""
from __future__ import annotations

import io

from django import forms
from django.http import HttpResponse
from django.template import engines
from django.urls import path

from config.urls import (  # noqa: F401
    handler400,
    handler403,
    handler404,
    handler500,
)
from config.urls import (
    urlpatterns as real_urlpatterns,
)
from generation.web.widgets import (
    ImageDropWidget,
    LoraRowsField,
    MaskEditorWidget,
    RangeNumberWidget,
    SearchableSelectWidget,
)

RECEIVED: list[dict] = []
LORAS = [("detail.safetensors", "Detail tweaker"), ("ink.safetensors", "Ink style"), ("film.safetensors", "Film grain")]
PICTURE_SIZE = (96, 64)

PAGE = """{% extends "base.html" %}
{% block title %}Widgets{% endblock %}
{% block scripts %}{{ form.media }}{% endblock %}
{% block content %}
<form method="post" enctype="multipart/form-data" class="card" id="widget-form" novalidate>
  {% csrf_token %}
  {% for field in form %}{% include "generation/_field.html" %}{% endfor %}
  <button type="submit" class="button button--primary" name="go" value="yes" data-send>Send</button>
</form>
{% if received %}<p data-received="{{ received }}">received</p>{% endif %}
{% endblock %}
"""


class WidgetTestForm(forms.Form):
    image = forms.ImageField(required=False, widget=ImageDropWidget)
    mask = forms.FileField(required=False, widget=MaskEditorWidget(source="image"))
    loras = LoraRowsField(choices=LORAS, rows=3, strength_min=-2, strength_max=2)
    cfg = forms.FloatField(min_value=1, max_value=30, widget=RangeNumberWidget(1, 30, 0.5))
    sampler = forms.ChoiceField(choices=[(f"s{i}", f"sampler {i}") for i in range(12)],
                                widget=SearchableSelectWidget)


def widget_page(request, source_url: str | None = None):
    form = WidgetTestForm(request.POST or None, request.FILES or None, initial={"cfg": 7, "sampler": "s0"})
    if source_url:
        form.fields["mask"].widget.source_url = source_url
    received = ""
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            mask = data["mask"]
            RECEIVED.append({
                "mask": mask.read() if mask else None,
                "mask_name": mask.name if mask else None,
                "image": data["image"].name if data["image"] else None,
                "loras": data["loras"],
                "cfg": data["cfg"],
                "sampler": data["sampler"],
                "go": request.POST.get("go"),
            })
            received = str(len(RECEIVED))
        else:
            RECEIVED.append({"errors": form.errors.get_json_data()})
            received = "errors"
    page = engines["django"].from_string(PAGE)
    return HttpResponse(page.render({"form": form, "received": received}, request))


def widget_page_from_url(request):
    return widget_page(request, source_url="/test-widgets/picture.png")


def picture(request):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", PICTURE_SIZE, "teal").save(buffer, "PNG")
    return HttpResponse(buffer.getvalue(), content_type="image/png")


urlpatterns = [
    path("test-widgets/", widget_page),
    path("test-widgets/from-url/", widget_page_from_url),
    path("test-widgets/picture.png", picture),
    *real_urlpatterns,
]
