"""The template-input widgets without a browser (generation/web/widgets.py): what they
render (the no-script page and the hooks the scripts use, with the scripts' words in
the reader's language) and what their fields clean. The browser side is
tests/e2e/test_browser_mask_editor.py."""
from __future__ import annotations

import re

import pytest
from django import forms
from django.utils import translation

from generation.web.widgets import (
    ImageDropWidget,
    LoraRowsField,
    LoraRowsWidget,
    MaskEditorWidget,
    RangeNumberWidget,
    SearchableSelectWidget,
)

LORAS = [("detail.safetensors", "Detail tweaker"), ("ink.safetensors", "Ink style")]


class LoraForm(forms.Form):
    loras = LoraRowsField(choices=LORAS)


def _attrs(html: str, tag: str, name: str) -> str:
    match = re.search(rf'<{tag}[^>]*name="{re.escape(name)}"[^>]*>', html)
    assert match, f"no <{tag} name={name}> in {html}"
    return match.group(0)


# --- RangeNumberWidget ---------------------------------------------------------------

def test_a_range_number_is_a_number_box_with_its_bounds_for_the_slider():
    html = RangeNumberWidget(0, 1, 0.05).render("denoise", 0.75, attrs={"id": "id_denoise"})
    box = _attrs(html, "input", "denoise")
    assert 'type="number"' in box and 'value="0.75"' in box
    assert 'min="0"' in box and 'max="1"' in box and 'step="0.05"' in box
    assert "data-range-number" in html
    assert 'type="range"' not in html  # the slider is the script's, never the form's value


def test_bounds_are_written_as_the_browser_reads_them():
    html = RangeNumberWidget(-10, 10, 0.00001).render("x", None)
    assert 'min="-10"' in html and 'max="10"' in html and 'step="0.00001"' in html


def test_a_range_number_can_be_narrowed_but_not_turned_inside_out():
    widget = RangeNumberWidget(-10, 10, 0.01)
    widget.narrow(0, 2)
    assert 'min="0"' in widget.render("x", 1) and 'max="2"' in widget.render("x", 1)
    for bad in ((5, 5, 1), (3, 1, 1), (0, 1, 0), (0, float("inf"), 1)):
        with pytest.raises(ValueError):
            RangeNumberWidget(*bad)


def test_widgets_bring_their_scripts_deferred_once():
    class F(forms.Form):
        a = forms.FloatField(widget=RangeNumberWidget(0, 1, 0.1))
        b = forms.ChoiceField(choices=[("x", "x")], widget=SearchableSelectWidget)
        loras = LoraRowsField(choices=LORAS)
        image = forms.ImageField(widget=ImageDropWidget)
        mask = forms.FileField(widget=MaskEditorWidget(source="image"))

    media = str(F().media)
    assert media.count('src="/static/js/widgets.js" defer') == 1
    assert media.count('src="/static/js/mask_editor.js" defer') == 1


# --- SearchableSelectWidget ----------------------------------------------------------

def test_a_searchable_select_is_a_select_with_the_filters_words_on_it():
    widget = SearchableSelectWidget(choices=[(str(n), f"model {n}") for n in range(12)], threshold=5)
    html = widget.render("model", "3")
    assert "<select" in html and '<option value="3" selected>model 3</option>' in html
    assert 'data-threshold="5"' in html
    assert 'data-filter-label="Filter the list"' in html and 'data-no-match="Nothing matches."' in html
    with translation.override("zh-hans"):
        html = widget.render("model", "3")
    assert "Filter the list" not in html and "Nothing matches" not in html


# --- LoraRowsField -------------------------------------------------------------------

def test_lora_rows_clean_to_the_filled_rows_in_order():
    form = LoraForm(data={
        "loras_0_name": "ink.safetensors", "loras_0_strength": "0.65",
        "loras_1_name": "", "loras_1_strength": "3",  # an empty row: dropped, whatever its strength
        "loras_2_name": "detail.safetensors", "loras_2_strength": "",  # empty strength: the default
        "loras_3_name": "", "loras_3_strength": "",
    })
    assert form.is_valid(), form.errors
    assert form.cleaned_data["loras"] == [
        {"name": "ink.safetensors", "strength": 0.65},
        {"name": "detail.safetensors", "strength": 1.0},
    ]


def test_no_lora_rows_sent_or_all_empty_is_an_empty_list():
    form = LoraForm(data={})
    assert form.is_valid() and form.cleaned_data["loras"] == []
    form = LoraForm(data={f"loras_{n}_name": "" for n in range(4)})
    assert form.is_valid() and form.cleaned_data["loras"] == []


def test_a_required_lora_field_asks_for_one():
    class F(forms.Form):
        loras = LoraRowsField(choices=LORAS, required=True)

    form = F(data={"loras_0_name": ""})
    assert not form.is_valid()
    assert form.errors["loras"] == ["Pick at least one LoRA."]


@pytest.mark.parametrize("name, strength, message", [
    ("other.safetensors", "1", "LoRA 2: “other.safetensors” is not one of the LoRAs offered."),
    ("ink.safetensors", "strong", "LoRA 2: the strength must be a number."),
    ("ink.safetensors", "nan", "LoRA 2: the strength must be a number."),
    ("ink.safetensors", "inf", "LoRA 2: the strength must be a number."),
    ("ink.safetensors", "10.5", "LoRA 2: the strength must be between -10 and 10."),
    ("ink.safetensors", "-11", "LoRA 2: the strength must be between -10 and 10."),
])
def test_bad_lora_rows_are_refused_naming_the_row(name, strength, message):
    form = LoraForm(data={"loras_0_name": "detail.safetensors", "loras_0_strength": "1",
                          "loras_1_name": name, "loras_1_strength": strength})
    assert not form.is_valid()
    assert form.errors["loras"] == [message]


def test_every_bad_row_is_reported_at_once_and_the_rows_are_shown_again():
    form = LoraForm(data={"loras_0_name": "ink.safetensors", "loras_0_strength": "99",
                          "loras_1_name": "gone.safetensors", "loras_1_strength": "1"})
    assert not form.is_valid()
    assert len(form.errors["loras"]) == 2
    html = str(form["loras"])
    assert 'value="99"' in _attrs(html, "input", "loras_0_strength")
    assert 'aria-invalid="true"' in _attrs(html, "select", "loras_0_name")


def test_the_strength_bounds_narrow_and_refuse_outside_them():
    class F(forms.Form):
        loras = LoraRowsField(choices=LORAS, rows=2, strength_min=0, strength_max=2, strength_step=0.05)

    html = str(F()["loras"])
    strength = _attrs(html, "input", "loras_0_strength")
    assert 'min="0"' in strength and 'max="2"' in strength and 'step="0.05"' in strength
    assert "loras_2_name" not in html  # two rows
    form = F(data={"loras_0_name": "ink.safetensors", "loras_0_strength": "-0.5"})
    assert not form.is_valid()
    assert form.errors["loras"] == ["LoRA 1: the strength must be between 0 and 2."]
    assert F(data={"loras_0_name": "ink.safetensors", "loras_0_strength": "1.5"}).is_valid()

    field = LoraRowsField(choices=LORAS)
    field.narrow(-1, 1.5)
    assert field.clean(["ink.safetensors", "1.5"]) == [{"name": "ink.safetensors", "strength": 1.5}]
    with pytest.raises(forms.ValidationError):
        field.clean(["ink.safetensors", "2"])


def test_the_strength_bounds_are_never_wider_than_loraloaders():
    with pytest.raises(ValueError):
        LoraRowsField(choices=LORAS, strength_max=20)
    with pytest.raises(ValueError):
        LoraRowsField(choices=LORAS, strength_min=2, strength_max=5)  # the default 1.0 falls outside
    assert LoraRowsField(choices=LORAS, strength_min=2, strength_max=5, strength_default=3).strength_default == 3


def test_lora_rows_render_for_the_no_script_page_and_the_script():
    html = str(LoraForm(initial={"loras": [{"name": "ink.safetensors", "strength": 0.4}]})["loras"])
    assert len(re.findall(r"data-lora-row\b(?!s)", html)) == 4
    assert "hidden" not in re.search(r'<div class="lora-row"[^>]*>', html).group(0)  # all rows show
    first = re.search(r'<select name="loras_0_name".*?</select>', html, re.DOTALL).group(0)
    assert '<option value="ink.safetensors" selected>Ink style</option>' in first
    assert '<option value="">None</option>' in first
    assert 'value="0.4"' in _attrs(html, "input", "loras_0_strength")
    assert 'value="1.0"' in _attrs(html, "input", "loras_1_strength")  # an empty row starts at the default
    assert '<label for="id_loras_1_name">LoRA 2</label>' in html
    assert 'aria-label="Remove LoRA 3"' in html
    # The buttons only work with the script: hidden until it shows them.
    assert re.search(r"<button[^>]*data-lora-add hidden>Add a LoRA</button>", html)
    assert LoraForm()["loras"].id_for_label == "id_loras_0_name"


def test_lora_choices_can_be_set_after_the_form_is_made():
    form = LoraForm()
    form.fields["loras"].choices = [("new.safetensors", "New")]
    html = str(form["loras"])
    assert "new.safetensors" in html and "ink.safetensors" not in html
    # The class's field (and other forms) keep theirs.
    assert "ink.safetensors" in str(LoraForm()["loras"])
    bound = LoraForm(data={"loras_0_name": "new.safetensors"})
    bound.fields["loras"].choices = [("new.safetensors", "New")]
    assert bound.is_valid() and bound.cleaned_data["loras"] == [{"name": "new.safetensors", "strength": 1.0}]


def test_lora_rows_in_chinese():
    with translation.override("zh-hans"):
        html = str(LoraForm()["loras"])
    for english in ("Add a LoRA", "Remove", "Strength", ">None<"):
        assert english not in html


def test_a_lora_widget_needs_a_row():
    with pytest.raises(ValueError):
        LoraRowsWidget(rows=0)


# --- ImageDropWidget and MaskEditorWidget ---------------------------------------------

def test_an_image_drop_is_a_file_input_for_pictures():
    html = ImageDropWidget().render("image", None, attrs={"id": "id_image"})
    box = _attrs(html, "input", "image")
    assert 'type="file"' in box and 'accept="image/png,image/jpeg,image/webp"' in box
    assert "data-image-drop" in html and "data-image-drop-preview" in html
    assert 'data-refused="Only PNG, JPEG or WebP pictures can be used."' in html


def test_a_mask_editor_names_its_source_and_keeps_a_plain_file_input():
    widget = MaskEditorWidget(source="image", source_url="/images/7/")
    html = widget.render("mask", None, attrs={"id": "id_mask"})
    assert 'data-source-name="image"' in html and 'data-source-url="/images/7/"' in html
    box = _attrs(html, "input", "mask")
    assert 'type="file"' in box and "required" not in box  # the script fills it at submit
    for label in ("Brush", "Eraser", "Brush size", "Undo", "Clear", "Invert", "Fit", 'aria-label="Zoom in"',
                  'aria-label="Mask tools"'):
        assert label in html
    with translation.override("zh-hans"):
        html = widget.render("mask", None)
    for english in ("Brush", "Eraser", "Undo", "Invert", "Mask tools", "could not be loaded"):
        assert english not in html


def test_a_mask_arrives_as_an_ordinary_upload():
    from django.core.files.uploadedfile import SimpleUploadedFile

    class F(forms.Form):
        image = forms.FileField(required=False, widget=ImageDropWidget)
        mask = forms.FileField(required=False, widget=MaskEditorWidget(source="image"))

    upload = SimpleUploadedFile("mask.png", b"\x89PNG...", content_type="image/png")
    form = F(data={}, files={"mask": upload})
    assert form.is_valid() and form.cleaned_data["mask"] is upload
    form = F(data={}, files={})
    assert form.is_valid() and form.cleaned_data["mask"] is None  # nothing painted: the form's clean decides
