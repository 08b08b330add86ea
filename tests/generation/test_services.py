"""generation_create's validation, the workflow it will render, and the job's claim."""
import pytest
from django.core.exceptions import ValidationError

from generation.comfy import render_workflow
from generation.fleet.runner import task_claim
from generation.limits import MAX_SEED
from generation.models import GenerationTask, TaskStatus
from generation.services import generation_create


def create(user, **overrides):
    values = {"prompt": "a lighthouse at dusk", "model_name": "demo-sd15"}
    values.update(overrides)
    return generation_create(user=user, **values)


def errors_of(excinfo) -> dict:
    return excinfo.value.message_dict


def test_create_stores_a_pending_task_with_checkpoint_defaults(catalog, make_user):
    task = create(make_user())
    assert task.status == TaskStatus.PENDING
    assert task.model_name == "demo-sd15"
    assert (task.width, task.height, task.steps) == (512, 512, 4)
    assert 0 <= task.seed <= MAX_SEED
    assert task.prompt_id and task.client_id.startswith("easel-")
    assert task.template.slug == "txt2img-basic"


def test_create_keeps_a_given_seed_and_picks_random_ones_otherwise(catalog, make_user):
    user = make_user()
    assert create(user, seed=42).seed == 42
    seeds = {create(user).seed for _ in range(5)}
    assert len(seeds) == 5


def test_create_accepts_the_ckpt_file_name_too(catalog, make_user):
    assert create(make_user(), model_name="demo-sd15.safetensors").checkpoint == catalog["checkpoint"]


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"negative_prompt": "x" * 2001}, "negative_prompt"),
        ({"model_name": "nope"}, "model_name"),
        ({"width": 100}, "width"),
        ({"height": 4096}, "height"),
        ({"width": 32}, "width"),
        ({"steps": 0}, "steps"),
        ({"steps": 151}, "steps"),
        ({"cfg": -1.0}, "cfg"),
        ({"sampler": "magic"}, "sampler"),
        ({"scheduler": "sometimes"}, "scheduler"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 9}, "batch_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_create_rejects_bad_input_naming_the_field_and_stores_nothing(catalog, make_user, overrides, field):
    with pytest.raises(ValidationError) as excinfo:
        create(make_user(), **overrides)
    assert field in errors_of(excinfo)
    assert not GenerationTask.objects.exists()


def test_disabled_or_unplaced_checkpoint_is_not_usable(catalog, make_user):
    checkpoint = catalog["checkpoint"]
    checkpoint.enabled = False
    checkpoint.save()
    with pytest.raises(ValidationError) as excinfo:
        create(make_user())
    assert "model_name" in errors_of(excinfo)
    checkpoint.enabled = True
    checkpoint.save()
    checkpoint.backends.clear()
    with pytest.raises(ValidationError):
        create(make_user())


def test_the_builtin_template_renders_every_parameter_into_the_graph(catalog, make_user):
    task = create(make_user(), negative_prompt="blurry", width=640, height=448, steps=9, cfg=5.5,
                  sampler="dpmpp_2m", scheduler="karras", seed=7, batch_size=2)
    values = {
        "checkpoint": "demo-sd15.safetensors", "prompt": task.prompt, "negative_prompt": "blurry",
        "width": 640, "height": 448, "batch_size": 2, "seed": 7, "steps": 9, "cfg": 5.5,
        "sampler": "dpmpp_2m", "scheduler": "karras",
    }
    graph = render_workflow(task.template.graph, task.template.bindings, values)
    assert graph["4"]["inputs"]["ckpt_name"] == "demo-sd15.safetensors"
    assert graph["6"]["inputs"]["text"] == "a lighthouse at dusk"
    assert graph["7"]["inputs"]["text"] == "blurry"
    assert graph["5"]["inputs"] == {"width": 640, "height": 448, "batch_size": 2}
    assert graph["3"]["inputs"]["seed"] == 7
    assert graph["3"]["inputs"]["sampler_name"] == "dpmpp_2m"
    assert graph["3"]["inputs"]["scheduler"] == "karras"
    assert graph["3"]["inputs"]["model"] == ["4", 0]  # links untouched
    assert task.template.graph["6"]["inputs"]["text"] != task.prompt  # template not mutated


def test_claim_needs_a_backend_assigned(catalog, make_user):
    task = create(make_user())
    assert task_claim(task_id=task.pk, owner="a") is None  # still in Easel's queue


def test_claim_is_single_until_the_lease_expires(catalog, make_user, settings):
    task = create(make_user())
    GenerationTask.objects.filter(pk=task.pk).update(backend=catalog["backend"])
    assert task_claim(task_id=task.pk, owner="a") is not None
    assert task_claim(task_id=task.pk, owner="b") is None
    GenerationTask.objects.filter(pk=task.pk).update(lease_until="2000-01-01T00:00:00Z")
    claimed = task_claim(task_id=task.pk, owner="b")
    assert claimed is not None and claimed.lease_owner == "b" and claimed.attempts == 2


def test_claim_refuses_finished_tasks(catalog, make_user):
    task = create(make_user())
    GenerationTask.objects.filter(pk=task.pk).update(backend=catalog["backend"])
    for status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
        GenerationTask.objects.filter(pk=task.pk).update(status=status)
        assert task_claim(task_id=task.pk, owner="x") is None


@pytest.mark.django_db
def test_every_problem_of_a_request_comes_at_once_in_one_wording(catalog, make_user):
    from django.utils import translation

    from generation.services import generation_check

    painter = make_user("painter")
    bad = {"prompt": "", "width": 100, "height": 4000, "steps": 0, "cfg": 99, "seed": -1, "batch_size": 9,
           "sampler": "nope"}
    errors = generation_check(user=painter, model_name="demo-sd15", **bad)
    assert set(errors) == {"prompt", "width", "height", "steps", "cfg", "seed", "batch_size", "sampler"}
    with pytest.raises(ValidationError) as refused:
        generation_create(user=painter, model_name="demo-sd15", **bad)
    assert refused.value.message_dict == errors
    assert not GenerationTask.objects.exists()
    with translation.override("zh-hans"):
        width = generation_check(user=painter, prompt="p", width=100)["width"][0]
    assert width.startswith("宽度必须是 8 的倍数")  # the field's name in the reader's language
