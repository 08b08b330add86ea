"""The catalog answers creates ask for, remembered a moment per process (models_catalog.remembered)."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from models_catalog.models import Checkpoint, WorkflowTemplate
from models_catalog.selectors import checkpoint_default, checkpoint_get_usable, template_default

pytestmark = pytest.mark.django_db


@pytest.fixture
def remembering(settings):
    settings.EASEL_CATALOG_CACHE_SECONDS = 60


def test_creates_read_the_defaults_once_then_from_memory(catalog, remembering):
    first = checkpoint_default()
    template = template_default()
    assert first.name == "demo-sd15" and template is not None
    with CaptureQueriesContext(connection) as queries:
        again, template_again = checkpoint_default(), template_default()
        assert checkpoint_get_usable(name="demo-sd15") is not None  # a first read of this name
        assert checkpoint_get_usable(name="demo-sd15") is not None
        template_again.input_list  # the inputs came with it
    assert len(queries) == 1, [q["sql"][:90] for q in queries]
    # Each caller its own copy: what one changes, the next does not see.
    assert again == first and again is not first
    again.default_steps = 99
    assert checkpoint_default().default_steps == 4


def test_a_change_saved_in_this_process_is_seen_at_once(catalog, remembering):
    assert checkpoint_default().name == "demo-sd15"
    other = Checkpoint.objects.create(name="demo-sdxl", ckpt_name="demo-sdxl.safetensors", is_default=True)
    other.backends.add(catalog["backend"])  # m2m: forgets too
    assert checkpoint_default().name == "demo-sdxl"
    WorkflowTemplate.objects.filter(is_default=True).update(enabled=False)  # no signal: remembered
    assert template_default() is not None
    catalog["checkpoint"].save()  # any catalog save forgets everything
    kind_templates = WorkflowTemplate.objects.filter(enabled=True, kind=WorkflowTemplate.KIND_TXT2IMG)
    assert (template_default() is None) == (not kind_templates.exists())


def test_off_when_seconds_is_zero(catalog, settings):
    settings.EASEL_CATALOG_CACHE_SECONDS = 0
    checkpoint_default()
    with CaptureQueriesContext(connection) as queries:
        checkpoint_default()
    assert len(queries) >= 1


def test_a_pump_reads_a_template_s_inputs_once_per_version(catalog, remembering):
    from models_catalog.selectors import template_inputs_attach

    first, second = WorkflowTemplate.objects.get(is_default=True, kind="txt2img"), None
    template_inputs_attach([first])
    expected = [row.name for row in first.input_list]
    assert expected and "prompt" in expected
    second = WorkflowTemplate.objects.get(pk=first.pk)
    with CaptureQueriesContext(connection) as queries:
        template_inputs_attach([second, None])
        assert [row.name for row in second.input_list] == expected
    assert len(queries) == 0
    # A new version (saved: `updated_at` moves) is read afresh.
    second.save()
    third = WorkflowTemplate.objects.get(pk=first.pk)
    with CaptureQueriesContext(connection) as queries:
        template_inputs_attach([third])
        third.input_list
    assert len(queries) == 1


def test_a_remembered_template_s_fields_are_worked_out_once_for_every_copy(catalog, remembering, monkeypatch):
    from models_catalog import templates

    fresh = templates.template_fields(WorkflowTemplate.objects.get(is_default=True, kind="txt2img"))
    worked = []
    row_spec = templates.row_spec
    monkeypatch.setattr(templates, "row_spec", lambda row, graph: worked.append(row.name) or row_spec(row, graph))
    answers = [templates.template_fields(template_default()) for _ in range(3)]
    assert answers == [fresh] * 3  # the same fields as worked out afresh
    assert sorted(worked) == sorted(field.name for field in fresh)  # once, not once per create
    answers[0].pop()  # a caller's list is its own
    assert templates.template_fields(template_default()) == fresh


def test_a_pump_works_a_template_s_fields_out_once_per_version(catalog, remembering, monkeypatch):
    from models_catalog import templates
    from models_catalog.selectors import template_inputs_attach

    fresh = templates.template_fields(WorkflowTemplate.objects.get(is_default=True, kind="txt2img"))
    worked = []
    row_spec = templates.row_spec
    monkeypatch.setattr(templates, "row_spec", lambda row, graph: worked.append(row.name) or row_spec(row, graph))
    claimed = [WorkflowTemplate.objects.get(is_default=True, kind="txt2img") for _ in range(3)]  # one a task
    template_inputs_attach(claimed)
    assert [templates.template_fields(t) for t in claimed] == [fresh] * 3
    assert sorted(worked) == sorted(field.name for field in fresh)  # once for the three
    # A new version (saved: `updated_at` moves) is worked out afresh.
    claimed[0].save()
    worked.clear()
    again = WorkflowTemplate.objects.get(pk=claimed[0].pk)
    template_inputs_attach([again])
    assert templates.template_fields(again) == fresh and sorted(worked) == sorted(field.name for field in fresh)
