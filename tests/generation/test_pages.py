"""The server-rendered pages: sign-in, generate, task, history, files, delete."""
from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image

from generation.models import GeneratedImage, GenerationTask, TaskPreview, TaskStatus
from models_catalog.builtin import ensure_builtin_templates
from models_catalog.models import Checkpoint, ComfyBackend, WorkflowTemplate

PASSWORD = "correct horse battery"
XSS = '<script>alert("x")</script>'


# --- fixtures (kept here so this file does not depend on the shared conftest) -------


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user(username="alice", email="alice@example.com", password=PASSWORD)


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user(username="bob", email="bob@example.com", password=PASSWORD)


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(bob):
    from django.test import Client

    c = Client()
    c.force_login(bob)
    return c


@pytest.fixture
def backend(db):
    return ComfyBackend.objects.create(name="demo", base_url="http://127.0.0.1:8189", is_demo=True, is_online=False)


@pytest.fixture
def checkpoint(backend):
    ensure_builtin_templates(WorkflowTemplate)
    ckpt = Checkpoint.objects.create(
        name="demo-model", ckpt_name="demo.safetensors", display_name="Demo model", description="Draws placeholders."
    )
    ckpt.backends.add(backend)
    return ckpt


@pytest.fixture
def worker_alive(monkeypatch):
    monkeypatch.setattr("generation.web.status.worker_status", lambda: {"alive": True, "clusters": [{"id": "x"}]})


@pytest.fixture
def worker_dead(monkeypatch):
    monkeypatch.setattr("generation.web.status.worker_status", lambda: {"alive": False, "clusters": []})


def make_task(user, **extra) -> GenerationTask:
    values = dict(
        user=user, prompt="a red fox", model_name="demo-model", width=512, height=512, steps=20, cfg=7.0,
        sampler="euler", scheduler="normal", seed=42,
    )
    values.update(extra)
    return GenerationTask.objects.create(**values)


def _png(fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "purple").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def completed_image(alice, media):
    task = make_task(alice, status=TaskStatus.COMPLETED)
    image = GeneratedImage(task=task, index=0, width=8, height=8, seed=42, size_bytes=10)
    image.file.save("out.png", ContentFile(_png()), save=False)
    image.thumbnail.save("thumb.webp", ContentFile(_png("WEBP")), save=False)
    image.save()
    return image


def form_data(**extra) -> dict:
    data = {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "",
        "model": "demo-model",
        "size": "768x512",
        "width": "",
        "height": "",
        "steps": "12",
        "cfg": "6.5",
        "sampler": "euler",
        "scheduler": "karras",
        "seed": "",
        "batch_size": "2",
    }
    data.update(extra)
    return data


# --- sign-in and access ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name,args",
    [("generation:generate", []), ("generation:history", []), ("generation:task", [1]), ("generation:image", [1])],
)
def test_pages_need_sign_in(client, db, name, args):
    url = reverse(name, args=args)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))
    assert f"next={url}" in response["Location"]


def test_sign_up_lands_on_generate(client, db):
    response = client.post(
        reverse("accounts:signup"),
        {"username": "carol", "email": "carol@example.com", "password1": PASSWORD, "password2": PASSWORD},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("generation:generate")
    assert response.context["user"].username == "carol"
    assert b"carol" in response.content


def test_sign_up_errors_are_beside_the_field(client, db):
    response = client.post(
        reverse("accounts:signup"), {"username": "dave", "password1": PASSWORD, "password2": "different thing"}
    )
    assert response.status_code == 200
    assert 'id="id_password2_errors"' in response.content.decode()


def test_sign_in_with_email(client, alice):
    response = client.post(reverse("accounts:login"), {"username": "ALICE@example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("generation:generate")
    assert client.get(reverse("generation:generate")).context["user"] == alice


def test_sign_out_is_a_post_form(alice_client):
    page = alice_client.get(reverse("generation:history")).content.decode()
    assert f'action="{reverse("accounts:logout")}" method="post"' in page
    assert alice_client.post(reverse("accounts:logout")).status_code == 302
    assert alice_client.get(reverse("generation:history")).status_code == 302


def test_staff_see_admin_link(client, alice):
    client.force_login(alice)
    assert 'href="/admin/"' not in client.get(reverse("generation:history")).content.decode()
    alice.is_staff = True
    alice.save()
    assert 'href="/admin/"' in client.get(reverse("generation:history")).content.decode()


# --- generate -----------------------------------------------------------------------------


def test_generate_page_lists_models(alice_client, checkpoint):
    page = alice_client.get(reverse("generation:generate")).content.decode()
    assert "Demo model" in page and "Draws placeholders." in page
    assert 'src="/static/js/generate.js"' in page
    assert "<script>" not in page  # no inline script: CSP-ready


def test_generate_creates_task_and_redirects(alice_client, alice, checkpoint):
    response = alice_client.post(reverse("generation:generate"), form_data(seed="7"))
    task = GenerationTask.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("generation:task", args=[task.pk])
    assert task.user == alice and task.status == TaskStatus.PENDING
    assert (task.width, task.height, task.steps, task.cfg) == (768, 512, 12, 6.5)
    assert (task.scheduler, task.seed, task.batch_size, task.checkpoint) == ("karras", 7, 2, checkpoint)


def test_generate_custom_size_and_random_seed(alice_client, checkpoint):
    alice_client.post(reverse("generation:generate"), form_data(size="custom", width="640", height="384"))
    task = GenerationTask.objects.get()
    assert (task.width, task.height) == (640, 384)
    assert task.seed >= 0


def test_generate_error_beside_field_keeps_values(alice_client, checkpoint):
    response = alice_client.post(
        reverse("generation:generate"), form_data(size="custom", width="100", height="512", prompt="keep me")
    )
    assert response.status_code == 200
    assert not GenerationTask.objects.exists()
    page = response.content.decode()
    errors_at = page.index('id="id_width_errors"')
    # The message sits inside the width field's block, not somewhere else on the page.
    assert page.rfind('for="id_width"', 0, errors_at) > page.rfind('for="id_size"', 0, errors_at)
    assert "multiple of 8" in page[errors_at : errors_at + 300]
    assert "keep me" in page
    assert 'name="width" value="100"' in page


def test_generate_unknown_model_error_goes_to_model_field(alice_client, checkpoint, monkeypatch):
    # The page lists the model, then it leaves the catalog before the form is sent.
    from django.core.exceptions import ValidationError

    def refuse(**kwargs):
        raise ValidationError({"model_name": ["Unknown or unavailable model: demo-model."]})

    monkeypatch.setattr("generation.web.generate.generation_create", refuse)
    page = alice_client.post(reverse("generation:generate"), form_data()).content.decode()
    errors_at = page.index('id="id_model_errors"')
    assert "Unknown or unavailable model" in page[errors_at : errors_at + 300]


def test_generate_empty_prompt_uses_service_message(alice_client, checkpoint):
    page = alice_client.post(reverse("generation:generate"), form_data(prompt="  ")).content.decode()
    assert 'id="id_prompt_errors"' in page
    assert "Write a prompt" in page


def test_banner_when_no_worker_or_backend(alice_client, checkpoint, worker_dead):
    page = alice_client.get(reverse("generation:generate")).content.decode()
    assert "Tasks will wait." in page
    assert "qcluster" not in page  # the how-to-fix hint is for staff


def test_banner_staff_hint(client, alice, checkpoint, worker_dead):
    alice.is_staff = True
    alice.save()
    client.force_login(alice)
    page = client.get(reverse("generation:generate")).content.decode()
    assert "python manage.py qcluster" in page
    assert reverse("admin:models_catalog_comfybackend_changelist") in page


def test_banner_when_backend_offline_even_with_worker(alice_client, checkpoint, worker_alive):
    assert "Tasks will wait." in alice_client.get(reverse("generation:generate")).content.decode()


def test_no_banner_when_worker_and_backend_up(alice_client, checkpoint, backend, worker_alive):
    backend.is_online = True
    backend.save()
    assert "Tasks will wait." not in alice_client.get(reverse("generation:generate")).content.decode()


def test_generate_shows_latest_tasks(alice_client, alice, bob):
    make_task(alice, prompt="mine")
    make_task(bob, prompt="theirs")
    page = alice_client.get(reverse("generation:generate")).content.decode()
    assert "mine" in page and "theirs" not in page


# --- task page, history, files --------------------------------------------------------------


def test_task_page_shows_parameters_and_live_config(alice_client, alice):
    task = make_task(alice, status=TaskStatus.PROCESSING, progress_value=3, progress_max=20,
                     progress_node="KSampler", status_message="waiting: backend unreachable")
    page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
    for text in ("a red fox", "512 × 512", "euler", "normal", "42", "Step 3 of 20", "Drawing",
                 "waiting: backend unreachable", 'id="task-poll"', reverse("generation:task_state", args=[task.pk])):
        assert text in page, text
    assert 'width="512" height="512"' in page  # the preview's space is reserved


def test_task_page_completed_shows_images(alice_client, completed_image):
    task = completed_image.task
    page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
    assert reverse("generation:image_thumb", args=[completed_image.pk]) in page
    assert reverse("generation:image", args=[completed_image.pk]) + "?download=1" in page
    assert 'id="task-poll"' not in page


def test_task_page_failed_shows_error_fields(alice_client, alice):
    task = make_task(
        alice, status=TaskStatus.FAILED, error_message="ComfyUI rejected the workflow",
        error_fields={"model_name": ["ckpt missing on server"]},
    )
    page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
    assert "ComfyUI rejected the workflow" in page
    assert "ckpt missing on server" in page


def test_prompt_is_escaped_on_task_and_history(alice_client, alice):
    task = make_task(alice, prompt=XSS, negative_prompt=XSS)
    for url in (reverse("generation:task", args=[task.pk]), reverse("generation:history"),
                reverse("generation:generate")):
        page = alice_client.get(url).content.decode()
        assert XSS not in page, url
        assert "&lt;script&gt;" in page, url


def test_other_users_get_404(bob_client, alice, completed_image):
    task = completed_image.task
    TaskPreview.objects.create(task=task, image=_png("JPEG"))
    for url in (
        reverse("generation:task", args=[task.pk]),
        reverse("generation:task_preview", args=[task.pk]),
        reverse("generation:task_delete", args=[task.pk]),
        reverse("generation:image", args=[completed_image.pk]),
        reverse("generation:image_thumb", args=[completed_image.pk]),
    ):
        assert bob_client.get(url).status_code == 404, url
    assert bob_client.post(reverse("generation:task_delete", args=[task.pk]), {"confirm": "yes"}).status_code == 404
    assert GenerationTask.objects.filter(pk=task.pk).exists()


def test_staff_can_see_other_users_task(client, bob, completed_image):
    bob.is_staff = True
    bob.save()
    client.force_login(bob)
    assert client.get(reverse("generation:task", args=[completed_image.task_id])).status_code == 200
    assert client.get(reverse("generation:image", args=[completed_image.pk])).status_code == 200


def test_owner_gets_preview_image_and_thumbnail(alice_client, completed_image):
    task = completed_image.task
    preview_url = reverse("generation:task_preview", args=[task.pk])
    none = alice_client.get(preview_url)
    assert none.status_code == 204 and none.content == b"" and none["Cache-Control"] == "no-store"  # no frame yet
    assert alice_client.get(preview_url + "?v=5").status_code == 204
    TaskPreview.objects.create(task=task, image=b"jpegbytes")
    response = alice_client.get(preview_url + "?t=123")
    assert response.status_code == 200 and response.content == b"jpegbytes"
    assert response["Content-Type"] == "image/jpeg"

    full = alice_client.get(reverse("generation:image", args=[completed_image.pk]))
    assert full.status_code == 200 and full["Content-Type"] == "image/png"
    assert b"".join(full.streaming_content) == _png()
    assert not full["Content-Disposition"].startswith("attachment")
    thumb = alice_client.get(reverse("generation:image_thumb", args=[completed_image.pk]))
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/webp"


def test_download_sets_attachment(alice_client, completed_image):
    response = alice_client.get(reverse("generation:image", args=[completed_image.pk]) + "?download=1")
    assert response["Content-Disposition"].startswith("attachment")
    assert f"easel-{completed_image.task_id}-0.png" in response["Content-Disposition"]


def _link(html: str, rel: str) -> str | None:
    import re

    found = re.search(rf'href="(\?[^"]*)" rel="{rel}"', html)
    return found[1].replace("&amp;", "&") if found else None


def test_history_paginates_newest_first(alice_client, alice):
    tasks = [make_task(alice, prompt=f"prompt number {i}") for i in range(30)]
    url = reverse("generation:history")
    first = alice_client.get(url)
    assert list(first.context["page"].object_list) == list(reversed(tasks))[:24]
    html = first.content.decode()
    assert "prompt number 29" in html and _link(html, "prev") is None
    # Older: the rest; a task created meanwhile shifts nothing (the link names a place, not a number).
    make_task(alice, prompt="created meanwhile")
    second = alice_client.get(url + _link(html, "next"))
    assert [t.pk for t in second.context["page"].object_list] == [t.pk for t in reversed(tasks[:6])]
    html = second.content.decode()
    assert _link(html, "next") is None and "created meanwhile" not in html
    # Newer, from there: the 24 before it, and then the newest one is newer still.
    back = alice_client.get(url + _link(html, "prev"))
    assert list(back.context["page"].object_list) == list(reversed(tasks))[:24]
    assert _link(back.content.decode(), "prev")
    # Old numbered links and places that lead nowhere show the first page.
    for query in ("?page=99", "?older=junk", "?newer=99999999999999999999.1", "?older=1.99999999999999999999"):
        response = alice_client.get(url + query)
        assert response.status_code == 200 and response.context["page"].object_list[0].prompt == "created meanwhile"


def _history_queries(client, query: str = "") -> tuple[list[str], str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("generation:history") + query)
    assert response.status_code == 200
    return [q["sql"] for q in captured], response.content.decode()


def test_history_page_costs_the_same_however_long_the_history(alice_client, alice, checkpoint):
    """No COUNT and no DISTINCT model_name over the user's tasks (250-300 ms each at
    100,000 of them), and as many queries for a long history, at its top and further on,
    as for a short one."""
    for i in range(3):
        task = make_task(alice, prompt=f"fox {i}", status=TaskStatus.COMPLETED)
        _add_image(task)
    short, _html = _history_queries(alice_client)
    GenerationTask.objects.bulk_create([
        GenerationTask(user=alice, prompt=f"old fox {i}", model_name=f"model-{i % 7}", width=64, height=64, steps=4,
                       cfg=7, sampler="euler", scheduler="normal", seed=i) for i in range(120)
    ])
    top, html = _history_queries(alice_client)
    further, _html = _history_queries(alice_client, _link(html, "next"))
    filtered, html = _history_queries(alice_client, "?q=fox&model=model-3&status=pending")
    assert _link(html, "next") is None and "old fox 3" in html
    for queries in (short, top, further, filtered):
        assert len(queries) == len(short), "\n".join(queries)
        on_tasks = [q for q in queries if 'FROM "generation_generationtask"' in q]
        assert not [q for q in on_tasks if "COUNT(" in q.upper()], on_tasks
        assert not [q for q in on_tasks if "DISTINCT" in q.upper()], on_tasks
        # Each read of the tasks stops after a page (and one more, to know if there is an older page).
        assert on_tasks and all(q.rstrip().endswith("LIMIT 25") for q in on_tasks), on_tasks


def test_history_model_filter_offers_the_catalog(alice_client, alice, checkpoint):
    Checkpoint.objects.create(name="sdxl-base", ckpt_name="sdxl.safetensors", display_name="SDXL base")
    make_task(alice, prompt="a fox", model_name="removed-model")
    html = alice_client.get(reverse("generation:history")).content.decode()
    # The catalog's models under their names, whether or not a task used them yet.
    assert '<option value="demo-model">Demo model</option>' in html
    assert '<option value="sdxl-base">SDXL base</option>' in html
    assert "removed-model" not in html
    # A model gone from the catalog can still be asked for, and is then offered.
    response = alice_client.get(reverse("generation:history") + "?model=removed-model")
    assert [t.prompt for t in response.context["page"].object_list] == ["a fox"]
    assert '<option value="removed-model" selected>removed-model</option>' in response.content.decode()


def test_history_empty_state(alice_client):
    page = alice_client.get(reverse("generation:history")).content.decode()
    assert "No pictures yet" in page


def test_history_shows_only_own_tasks(alice_client, alice, bob):
    make_task(bob, prompt="bob's secret")
    assert "bob&#x27;s secret" not in alice_client.get(reverse("generation:history")).content.decode()


# --- delete -----------------------------------------------------------------------------------


def test_delete_without_confirmation_shows_confirm_page(alice_client, alice):
    task = make_task(alice)
    url = reverse("generation:task_delete", args=[task.pk])
    for response in (alice_client.get(url), alice_client.post(url)):
        assert response.status_code == 200
        assert 'name="confirm" value="yes"' in response.content.decode()
    assert GenerationTask.objects.filter(pk=task.pk).exists()


def test_delete_removes_task_and_redirects_to_history(alice_client, completed_image, media):
    task = completed_image.task
    stored = media / completed_image.file.name
    assert stored.exists()
    response = alice_client.post(
        reverse("generation:task_delete", args=[task.pk]), {"confirm": "yes"}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("generation:history")
    assert not GenerationTask.objects.filter(pk=task.pk).exists()
    assert not GeneratedImage.objects.exists()
    assert "deleted" in response.content.decode()


def test_task_page_delete_form_asks_with_confirm(alice_client, alice):
    task = make_task(alice)
    page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
    assert f'action="{reverse("generation:task_delete", args=[task.pk])}"' in page
    assert "data-confirm=" in page


def test_language_switcher_and_404_page(alice_client):
    page = alice_client.get(reverse("generation:history")).content.decode()
    assert 'action="/i18n/setlang/"' in page and "简体中文" in page
    response = alice_client.get("/no-such-page/")
    assert response.status_code == 404
    assert "Nothing here" in response.content.decode()


# --- task page actions --------------------------------------------------------------------

CSP = "config.csp.ContentSecurityPolicyMiddleware"


@pytest.fixture
def csp(settings):
    # The lead registers the middleware in settings; these tests do not depend on that.
    if CSP not in settings.MIDDLEWARE:
        settings.MIDDLEWARE = [*settings.MIDDLEWARE[:1], CSP, *settings.MIDDLEWARE[1:]]


def _add_image(task, index=0, color="purple"):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    image = GeneratedImage(task=task, index=index, width=8, height=8, seed=task.seed + index, size_bytes=10)
    image.file.save(f"out{index}.png", ContentFile(buffer.getvalue()), save=False)
    image.thumbnail.save(f"thumb{index}.webp", ContentFile(_png("WEBP")), save=False)
    image.save()
    return image


def _post(client, name, *args, **data):
    return client.post(reverse(name, args=args), data)


def test_cancel_pending_task(alice_client, alice):
    task = make_task(alice)
    page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
    assert reverse("generation:task_cancel", args=[task.pk]) in page
    assert reverse("generation:task_retry", args=[task.pk]) not in page
    response = _post(alice_client, "generation:task_cancel", task.pk)
    assert response.status_code == 302 and response["Location"] == reverse("generation:task", args=[task.pk])
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED
    # Cancelling again says why it cannot, without an error page.
    again = alice_client.post(reverse("generation:task_cancel", args=[task.pk]), follow=True)
    assert again.status_code == 200 and "already finished" in again.content.decode()


def test_retry_failed_and_cancelled_tasks(alice_client, alice, checkpoint):
    for status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        task = make_task(alice, status=status, error_message="boom")
        page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
        assert reverse("generation:task_retry", args=[task.pk]) in page
        assert reverse("generation:task_cancel", args=[task.pk]) not in page
        _post(alice_client, "generation:task_retry", task.pk)
        task.refresh_from_db()
        assert task.status == TaskStatus.PENDING and task.retries == 1 and task.error_message == ""


def test_retry_completed_task_is_refused(alice_client, completed_image):
    response = alice_client.post(reverse("generation:task_retry", args=[completed_image.task_id]), follow=True)
    assert "Only failed or cancelled tasks can be retried." in response.content.decode()


def test_cancel_and_retry_need_post(alice_client, alice):
    task = make_task(alice)
    assert alice_client.get(reverse("generation:task_cancel", args=[task.pk])).status_code == 405
    assert alice_client.get(reverse("generation:task_retry", args=[task.pk])).status_code == 405


def test_queue_position_and_stage(alice_client, alice, bob):
    make_task(bob)
    make_task(alice)
    third = make_task(alice)
    page = alice_client.get(reverse("generation:task", args=[third.pk])).content.decode()
    assert "3rd in the queue" in page and "Waiting in the queue" in page
    state = alice_client.get(reverse("generation:task_state", args=[third.pk])).json()
    # state.json carries the whole live panel now; these are its first keys, unchanged.
    assert {k: state[k] for k in ("status", "queue_position", "queue_text", "stage")} == {
        "status": "pending", "queue_position": 3, "queue_text": "3rd in the queue", "stage": "Waiting in the queue"}
    running = make_task(alice, status=TaskStatus.PROCESSING, progress_node="VAEDecode")
    state = alice_client.get(reverse("generation:task_state", args=[running.pk])).json()
    assert state["queue_position"] is None and state["stage"] == "Decoding the picture"


def test_use_these_settings_again_prefills_generate(alice_client, alice, checkpoint):
    task = make_task(alice, prompt="a blue heron", negative_prompt="blurry", steps=9, cfg=5.5, seed=1234,
                     width=640, height=384, scheduler="karras")
    page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
    start = page.index('href="/?') + len('href="')
    link = page[start : page.index('"', start)].replace("&amp;", "&")
    form = alice_client.get(link).context["form"]
    for name, value in {"prompt": "a blue heron", "negative_prompt": "blurry", "steps": "9", "cfg": "5.5",
                        "seed": "1234", "size": "custom", "width": "640", "height": "384",
                        "scheduler": "karras"}.items():
        assert str(form[name].value()) == value, name
    assert not form["seed_random"].value()


def test_vary_seed_submits_same_settings_with_new_seed(alice_client, alice, checkpoint):
    task = make_task(alice, prompt="a heron", steps=9, seed=5, status=TaskStatus.COMPLETED, checkpoint=checkpoint)
    response = _post(alice_client, "generation:task_vary", task.pk)
    new = GenerationTask.objects.exclude(pk=task.pk).get()
    assert response["Location"] == reverse("generation:task", args=[new.pk])
    assert (new.prompt, new.steps, new.model_name) == ("a heron", 9, "demo-model") and new.seed != 5


def test_use_result_as_source_image(alice_client, completed_image):
    response = _post(alice_client, "generation:image_use_as_source", completed_image.pk)
    from generation.models import SourceImage

    source = SourceImage.objects.get()
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(reverse("generation:generate")) and f"source=s{source.pk}" in location
    assert "template=img2img-basic" in location
    page = alice_client.get(location)
    assert page.context["show_source"] and page.context["form"]["template"].value() == "img2img-basic"
    assert f'value="s{source.pk}" checked' in page.content.decode()


def test_task_zip_has_every_image(alice_client, completed_image):
    import zipfile

    task = completed_image.task
    _add_image(task, index=1, color="green")
    response = alice_client.get(reverse("generation:task_zip", args=[task.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith("attachment") and f"easel-{task.pk}.zip" in response["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.namelist() == [f"easel-{task.pk}-0.png", f"easel-{task.pk}-1.png"]
    assert archive.read(f"easel-{task.pk}-0.png") == _png()
    assert archive.testzip() is None


def test_task_zip_is_owner_only_even_for_staff(client, bob, completed_image):
    bob.is_staff = True
    bob.save()
    client.force_login(bob)
    assert client.get(reverse("generation:task_zip", args=[completed_image.task_id])).status_code == 404


def test_viewer_links_on_task_page(alice_client, completed_image):
    page = alice_client.get(reverse("generation:task", args=[completed_image.task_id])).content.decode()
    assert "data-viewer" in page and 'src="/static/js/viewer.js"' in page


def test_comfy_errors_shown_beside_parameters(alice_client, alice):
    task = make_task(alice, status=TaskStatus.FAILED, error_message="ComfyUI rejected the workflow",
                     error_fields={"steps": ["steps: 0 is below the minimum 1"], "__all__": ["graph problem"]})
    page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
    row = page.index('data-param="steps"')
    assert "steps: 0 is below the minimum 1" in page[row : page.index("</div>", row)]
    assert "param--error" in page[page.rfind("<div", 0, row) : row]
    assert "graph problem" in page


# --- generate page: templates, img2img, seed ------------------------------------------------


def test_template_picker_shows_when_several_enabled(alice_client, checkpoint):
    page = alice_client.get(reverse("generation:generate"))
    html = page.content.decode()
    assert page.context["show_templates"]
    assert 'name="template"' in html and "Image to image" in html and "Text to image" in html
    WorkflowTemplate.objects.exclude(slug="txt2img-basic").update(enabled=False)
    html = alice_client.get(reverse("generation:generate")).content.decode()
    assert '<select name="template"' not in html and 'type="hidden" name="template" value="txt2img-basic"' in html


def test_img2img_upload_creates_task_with_source(alice_client, alice, checkpoint):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("me.png", _png(), content_type="image/png")
    response = alice_client.post(
        reverse("generation:generate"), form_data(template="img2img-basic", denoise="0.4", source_file=upload)
    )
    task = GenerationTask.objects.get()
    assert response.status_code == 302
    assert task.template.slug == "img2img-basic" and task.source_image.user == alice and task.denoise == 0.4


def test_img2img_picks_past_upload(alice_client, alice, checkpoint):
    from generation.gallery.uploads import source_image_create

    source = source_image_create(user=alice, file=io.BytesIO(_png()), name="old.png")
    page = alice_client.get(reverse("generation:generate") + "?template=img2img-basic").content.decode()
    assert reverse("generation:source_file", args=[source.pk]) in page
    alice_client.post(reverse("generation:generate"), form_data(template="img2img-basic", source=f"s{source.pk}"))
    assert GenerationTask.objects.get().source_image == source


def test_img2img_other_users_upload_is_refused(alice_client, bob, checkpoint):
    from generation.gallery.uploads import source_image_create

    theirs = source_image_create(user=bob, file=io.BytesIO(_png()), name="bob.png")
    page = alice_client.post(
        reverse("generation:generate"), form_data(template="img2img-basic", source=f"s{theirs.pk}")
    ).content.decode()
    assert not GenerationTask.objects.exists()
    assert 'id="id_source_errors"' in page
    assert alice_client.get(reverse("generation:source_file", args=[theirs.pk])).status_code == 404


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("notes.png", b"this is not a picture", "not a supported picture"),
        ("big.png", b"x" * 2048, "too large"),
    ],
)
def test_img2img_upload_errors_beside_the_field(alice_client, checkpoint, settings, name, content, message):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.EASEL_MAX_UPLOAD_BYTES = 1024
    upload = SimpleUploadedFile(name, content, content_type="image/png")
    response = alice_client.post(
        reverse("generation:generate"), form_data(template="img2img-basic", source_file=upload, prompt="keep")
    )
    assert response.status_code == 200 and not GenerationTask.objects.exists()
    page = response.content.decode()
    errors_at = page.index('id="id_source_file_errors"')
    assert message in page[errors_at : errors_at + 300]
    assert page.rfind('for="id_source_file"', 0, errors_at) > page.rfind('for="id_prompt"', 0, errors_at)
    assert "data-source-section" in page and "data-source-section hidden" not in page


def test_img2img_without_source_asks_for_one(alice_client, checkpoint):
    page = alice_client.post(reverse("generation:generate"), form_data(template="img2img-basic")).content.decode()
    assert not GenerationTask.objects.exists()
    assert "Upload a picture or pick one" in page


def test_random_seed_toggle_wins_over_typed_seed(alice_client, checkpoint):
    alice_client.post(reverse("generation:generate"), form_data(seed="77", seed_random="on"))
    assert GenerationTask.objects.get().seed != 77  # a random 63-bit seed: 77 by chance is 2**-63
    GenerationTask.objects.all().delete()
    alice_client.post(reverse("generation:generate"), form_data(seed="77"))
    assert GenerationTask.objects.get().seed == 77


def test_reuse_last_seed_button(alice_client, alice, checkpoint):
    make_task(alice, seed=31337)
    page = alice_client.get(reverse("generation:generate")).content.decode()
    assert 'data-last-seed="31337"' in page
    assert "data-restore" in page  # a fresh form restores the browser's remembered choices
    assert "data-restore" not in alice_client.get(reverse("generation:generate") + "?steps=5").content.decode()


def test_quota_exceeded_is_a_form_error(alice_client, alice, checkpoint):
    alice.daily_image_quota = 1
    alice.save()
    response = alice_client.post(reverse("generation:generate"), form_data(batch_size="2"))
    # It says what is left and what the request needs, not a ratio of used to limit.
    assert response.status_code == 200 and "1 image left today; this request needs 2." in response.content.decode()


# --- history: search, filters, bulk --------------------------------------------------------


def test_history_search_and_filters(alice_client, alice):
    from datetime import timedelta

    from django.utils import timezone

    fox = make_task(alice, prompt="a red fox", status=TaskStatus.COMPLETED)
    owl = make_task(alice, prompt="an owl at night", model_name="other-model")
    old = make_task(alice, prompt="an old fox")
    GenerationTask.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    url = reverse("generation:history")

    def ids(query):
        return {t.pk for t in alice_client.get(url + query).context["page"].object_list}

    assert ids("?q=FOX") == {fox.pk, old.pk}
    assert ids("?status=completed") == {fox.pk}
    assert ids("?model=other-model") == {owl.pk}
    today = timezone.localdate().isoformat()
    assert ids(f"?date_from={today}&date_to={today}") == {fox.pk, owl.pk}
    before = (timezone.localdate() - timedelta(days=5)).isoformat()
    assert ids(f"?date_to={before}") == {old.pk}
    page = alice_client.get(url + "?q=zebra").content.decode()
    assert "Nothing matches" in page


def test_history_paging_keeps_filters(alice_client, alice):
    for i in range(30):
        make_task(alice, prompt=f"fox {i}")
    page = alice_client.get(reverse("generation:history") + "?q=fox").content.decode()
    assert _link(page, "next").startswith("?q=fox&older=")
    older = alice_client.get(reverse("generation:history") + _link(page, "next")).content.decode()
    assert _link(older, "prev").startswith("?q=fox&newer=")


def test_bulk_delete_with_confirmation(alice_client, alice, bob):
    mine = [make_task(alice, prompt=f"mine {i}") for i in range(3)]
    theirs = make_task(bob)
    url = reverse("generation:history_delete")
    ids = [mine[0].pk, mine[1].pk, theirs.pk]
    confirm = alice_client.post(url, {"ids": ids})
    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert "Delete 2 tasks?" in page and "mine 0" in page and 'name="confirm" value="yes"' in page
    assert GenerationTask.objects.count() == 4
    alice_client.post(url, {"ids": ids, "confirm": "yes"})
    assert set(GenerationTask.objects.values_list("pk", flat=True)) == {mine[2].pk, theirs.pk}


def test_bulk_zip(alice_client, alice, bob, completed_image):
    import zipfile

    other = make_task(alice, status=TaskStatus.COMPLETED)
    _add_image(other)
    theirs = make_task(bob, status=TaskStatus.COMPLETED)
    _add_image(theirs)
    response = alice_client.get(
        reverse("generation:history_zip"), {"ids": [completed_image.task_id, other.pk, theirs.pk]}
    )
    assert response.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert sorted(names) == sorted([f"easel-{completed_image.task_id}-0.png", f"easel-{other.pk}-0.png"])
    # Nothing of anyone else's, ever: only bob's id gives no zip.
    assert alice_client.get(reverse("generation:history_zip"), {"ids": [theirs.pk]}).status_code == 302


def test_history_has_bulk_checkboxes(alice_client, alice):
    task = make_task(alice)
    page = alice_client.get(reverse("generation:history")).content.decode()
    assert f'name="ids" value="{task.pk}" form="bulk-form"' in page


# --- sharing --------------------------------------------------------------------------------


def test_share_and_revoke(alice_client, client, completed_image):
    from django.test import Client

    task = completed_image.task
    # A seed long enough never to turn up by chance inside a random CSRF token.
    task.prompt, task.negative_prompt, task.seed = "a shared fox", "secret negative", 987654321987654
    task.save()
    _post(alice_client, "generation:task_share", task.pk)
    task.refresh_from_db()
    token = task.share_token
    assert token and len(token) >= 32 and task.shared_at
    # Idempotent: sharing again keeps the same link.
    _post(alice_client, "generation:task_share", task.pk)
    task.refresh_from_db()
    assert task.share_token == token
    share_url = reverse("generation:shared_task", args=[token])
    assert share_url in alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()

    anonymous = Client()
    page = anonymous.get(share_url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "a shared fox" in html
    for hidden in ("alice", "secret negative", "euler", str(task.seed), f"/tasks/{task.pk}/"):
        assert hidden not in html, hidden
    image_url = reverse("generation:shared_image", args=[token, completed_image.pk])
    assert image_url in html
    image = anonymous.get(image_url)
    assert image.status_code == 200 and image.content == _png()  # a Pillow PNG: no metadata to strip
    assert anonymous.get(reverse("generation:shared_image_thumb", args=[token, completed_image.pk])).status_code == 200

    _post(alice_client, "generation:task_unshare", task.pk)
    assert anonymous.get(share_url).status_code == 404
    assert anonymous.get(image_url).status_code == 404


def test_share_token_only_opens_its_own_images(alice_client, alice, completed_image):
    from generation.gallery.sharing import task_share

    other = make_task(alice, status=TaskStatus.COMPLETED)
    other_image = _add_image(other)
    token = task_share(task=completed_image.task)
    assert alice_client.get(reverse("generation:shared_image", args=[token, other_image.pk])).status_code == 404
    assert alice_client.get(reverse("generation:shared_task", args=["not-a-token"])).status_code == 404


def test_share_needs_a_finished_task_and_the_owner(alice_client, bob_client, alice, completed_image):
    pending = make_task(alice)
    _post(alice_client, "generation:task_share", pending.pk)
    pending.refresh_from_db()
    assert pending.share_token is None
    assert _post(bob_client, "generation:task_share", completed_image.task_id).status_code == 404
    completed_image.task.refresh_from_db()
    assert completed_image.task.share_token is None


# --- owner isolation on every page -----------------------------------------------------------


def test_other_user_gets_404_on_every_task_page(bob_client, alice, completed_image):
    from generation.gallery.sharing import task_share
    from generation.gallery.uploads import source_image_create

    task = completed_image.task
    source = source_image_create(user=alice, file=io.BytesIO(_png()), name="a.png")
    gets = [
        reverse("generation:task", args=[task.pk]),
        reverse("generation:task_state", args=[task.pk]),
        reverse("generation:task_zip", args=[task.pk]),
        reverse("generation:image", args=[completed_image.pk]),
        reverse("generation:image_thumb", args=[completed_image.pk]),
        reverse("generation:source_file", args=[source.pk]),
    ]
    for url in gets:
        assert bob_client.get(url).status_code == 404, url
    for name in ("task_cancel", "task_retry", "task_vary", "task_share", "task_unshare"):
        assert bob_client.post(reverse(f"generation:{name}", args=[task.pk])).status_code == 404, name
    assert bob_client.post(reverse("generation:image_use_as_source", args=[completed_image.pk])).status_code == 404
    token = task_share(task=task)
    assert bob_client.post(reverse("generation:task_unshare", args=[task.pk])).status_code == 404
    task.refresh_from_db()
    assert task.share_token == token and GenerationTask.objects.count() == 1


# --- account page ------------------------------------------------------------------------------


def test_account_page_shows_quota(alice_client, alice):
    make_task(alice, batch_size=3)
    page = alice_client.get(reverse("accounts:me")).content.decode()
    assert "3 of 200 used, 197 left." in page
    assert "Resets in" in page
    assert reverse("accounts:password_change") in page
    assert 'action="/i18n/setlang/"' in page and "data-theme-choice" in page


def test_account_token_shown_once_then_listed_and_revoked(alice_client, alice):
    from accounts.models import ApiToken

    url = reverse("accounts:me")
    response = alice_client.post(url, {"name": "my phone", "expiry_days": "7"})
    assert response.status_code == 302 and response["Location"] == url
    token = ApiToken.objects.get(user=alice)
    assert token.name == "my phone"
    assert 6.9 < (token.expiry - token.created).total_seconds() / 86400 < 7.1
    first = alice_client.get(url)
    html = first.content.decode()
    start = html.index("data-new-token")
    clear = html[html.rfind('value="', 0, start) + 7 : html.index('"', html.rfind('value="', 0, start) + 7)]
    assert clear.startswith(token.token_key) and len(clear) > 40
    assert first["Cache-Control"] == "no-store"
    # The token works against the API...
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    assert api.get("/api/v1/generation/history").status_code == 200
    # ...and is never shown again.
    again = alice_client.get(url).content.decode()
    assert clear not in again and "my phone" in again and token.token_key[:8] in again
    alice_client.post(reverse("accounts:token_revoke", args=[token.token_key]))
    assert not ApiToken.objects.filter(user=alice).exists()
    assert api.get("/api/v1/generation/history").status_code == 401


def test_account_token_form_errors(alice_client, alice):
    response = alice_client.post(reverse("accounts:me"), {"name": "", "expiry_days": "999"})
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="id_name_errors"' in page and 'id="id_expiry_days_errors"' in page


def test_cannot_revoke_someone_elses_token(bob_client, alice):
    from accounts.models import ApiToken
    from accounts.services import token_create

    token, _clear = token_create(user=alice, name="alice's")
    bob_client.post(reverse("accounts:token_revoke", args=[token.token_key]))
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_account_needs_sign_in(client, db):
    assert client.get(reverse("accounts:me")).status_code == 302


# --- CSP and no inline script or style --------------------------------------------------------


def _pages(alice, completed_image):
    from generation.gallery.sharing import task_share

    failed = make_task(alice, status=TaskStatus.FAILED, error_fields={"steps": ["bad"]})
    running = make_task(alice, status=TaskStatus.PROCESSING)
    token = task_share(task=completed_image.task)
    return [
        reverse("generation:generate"),
        reverse("generation:generate") + "?template=img2img-basic",
        reverse("generation:history"),
        reverse("generation:task", args=[completed_image.task_id]),
        reverse("generation:task", args=[failed.pk]),
        reverse("generation:task", args=[running.pk]),
        reverse("generation:task_delete", args=[failed.pk]),
        reverse("generation:shared_task", args=[token]),
        reverse("accounts:me"),
        reverse("accounts:password_change"),
        "/no-such-page/",
    ]


def test_csp_header_and_no_inline_script_or_style(csp, alice_client, alice, checkpoint, completed_image):
    import re

    for url in _pages(alice, completed_image):
        response = alice_client.get(url)
        assert response.status_code in (200, 404), url
        policy = response["Content-Security-Policy"]
        for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'",
                          "frame-ancestors 'none'", "form-action 'self'", "img-src 'self' data: blob:"):
            assert directive in policy, (url, directive)
        html = response.content.decode()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (url, tag)
        assert not re.search(r"<style\b", html), url
        assert not re.search(r"\sstyle=", html), url
        assert not re.search(r"\son[a-z]+=", html), url


def test_csp_on_signed_out_pages_only_for_html(csp, client, db):
    for url in (reverse("accounts:login"), reverse("accounts:signup")):
        response = client.get(url)
        assert "script-src 'self'" in response["Content-Security-Policy"], url
    assert "Content-Security-Policy" not in client.get("/api/v1/generation/history")


def test_task_page_names_the_backend_that_ran_it(alice_client, alice):
    backend = ComfyBackend.objects.create(name="gpu-east-1", base_url="http://127.0.0.1:9")
    task = make_task(alice, status=TaskStatus.COMPLETED, backend=backend)
    body = alice_client.get(f"/tasks/{task.pk}/").content.decode()
    assert "gpu-east-1" in body


# --- the live panel says one thing (the issue "The first week of real users", item 2) --------


def _live_panel(page: str) -> str:
    start = page.index("data-task-live")
    return page[start : page.index("</section>", start)]


def test_an_assigned_task_on_an_idle_backend_is_not_said_to_wait_for_one(alice_client, alice, backend):
    backend.is_online = True
    backend.save()
    task = make_task(alice, backend=backend)  # the dispatcher gave it the only backend, which is idle
    panel = _live_panel(alice_client.get(reverse("generation:task", args=[task.pk])).content.decode())
    assert "Sent to an image server, about to start" in panel
    assert "Waiting for a free backend" not in panel
    state = alice_client.get(reverse("generation:task_state", args=[task.pk])).json()
    assert state["stage"] == "Sent to an image server, about to start" and state["line"] == ""
    # Nothing is counted yet: the bar has no value (indeterminate), not an empty 0 of 1.
    assert "<progress data-progress" in panel and 'value="' not in panel[panel.index("<progress"):]


def test_a_running_node_is_named_once_and_the_script_gets_the_same_words(alice_client, alice):
    task = make_task(alice, status=TaskStatus.PROCESSING, progress_value=3, progress_max=20,
                     progress_node="KSampler")
    panel = _live_panel(alice_client.get(reverse("generation:task", args=[task.pk])).content.decode())
    assert panel.count("Drawing") == 1, panel
    state = alice_client.get(reverse("generation:task_state", args=[task.pk])).json()
    assert (state["stage"], state["line"]) == ("Drawing", "Step 3 of 20")
    assert state["progress"] == {"value": 3, "max": 20, "percent": 15}
    for words in (state["stage"], state["line"]):
        assert words in panel
    assert 'max="20" value="3"' in panel


def test_an_unreachable_backend_is_not_about_to_start(alice_client, alice, backend):
    from django.utils.translation import gettext_noop

    from generation.task_text import message_fields, text

    task = make_task(alice, backend=backend, **message_fields(
        "status", text(gettext_noop("Backend %(name)s is unreachable, retrying."), name="demo")))
    state = alice_client.get(reverse("generation:task_state", args=[task.pk])).json()
    assert state["stage"] == "Waiting for the image server"
    assert state["message"] == "Backend demo is unreachable, retrying."


def test_a_retried_task_says_so_and_shows_its_earlier_failure(alice_client, alice, checkpoint):
    from django.utils.translation import gettext_noop

    from generation.task_text import message_fields, text

    task = make_task(alice, status=TaskStatus.FAILED, error_code="timeout",
                     **message_fields("error", text(gettext_noop("Timed out after %(n)d s."), n=120)))
    page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
    assert "Retried" not in page and "earlier attempt" not in page
    _post(alice_client, "generation:task_retry", task.pk)
    task.refresh_from_db()
    assert task.retries == 1 and task.error_message == ""
    page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
    assert "Retried 1 time" in page
    assert "The earlier attempt failed: Timed out after 120 s." in page
    # In the reader's language, like the error itself.
    chinese = alice_client.get(reverse("generation:task", args=[task.pk]), HTTP_ACCEPT_LANGUAGE="zh-Hans")
    assert "已超时（120 秒）。" in chinese.content.decode()

    # Cancelled and retried again: the count goes on, and the failure is still the earlier one.
    _post(alice_client, "generation:task_cancel", task.pk)
    _post(alice_client, "generation:task_retry", task.pk)
    page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
    assert "Retried 2 times" in page and "The earlier attempt failed: Timed out after 120 s." in page


def test_the_status_api_says_whether_a_preview_frame_exists(alice_client, alice):
    """The task page asks for the frame only when this says so (no 404 before the first)."""
    task = make_task(alice, status=TaskStatus.PROCESSING)
    url = reverse("api-generation-status", args=[task.pk])
    body = alice_client.get(url).json()
    assert body["has_preview"] is False and body["preview_url"]  # the URL is promised while processing
    TaskPreview.objects.create(task=task, image=_png("JPEG"))
    assert alice_client.get(url).json()["has_preview"] is True
    GenerationTask.objects.filter(pk=task.pk).update(status=TaskStatus.CANCELLED)
    assert alice_client.get(url).json()["has_preview"] is False


# --- what a new user met on the pages (item 4) ---------------------------------------------------


def test_sign_up_shows_the_password_rules_before_the_first_try(client, db):
    from django.contrib.auth.password_validation import password_validators_help_texts

    page = client.get(reverse("accounts:signup")).content.decode()
    rules = password_validators_help_texts()
    assert len(rules) == 4  # settings.AUTH_PASSWORD_VALIDATORS
    helptext_at = page.index('id="id_password1_helptext"')
    for rule in rules:
        assert rule.replace("’", "&#x27;") in page[helptext_at:] or rule in page[helptext_at:], rule
    assert 'aria-describedby="id_password1_helptext"' in page
    chinese = client.get(reverse("accounts:signup"), HTTP_ACCEPT_LANGUAGE="zh-Hans").content.decode()
    assert "你的密码必须包含至少 8 个字符。" in chinese


def test_bulk_delete_without_script_comes_back_to_the_filtered_history(alice_client, alice):
    foxes = [make_task(alice, prompt=f"fox {i}") for i in range(3)]
    history = alice_client.get(reverse("generation:history") + "?q=fox&status=pending&older=1762000000000000.9").content.decode()
    assert 'name="filters" value="q=fox&amp;status=pending&amp;older=1762000000000000.9"' in history
    url = reverse("generation:history_delete")
    ids = [foxes[0].pk, foxes[1].pk]
    confirm = alice_client.post(url, {"ids": ids, "filters": "q=fox&status=pending&older=1762000000000000.9"}).content.decode()
    assert 'name="filters" value="q=fox&amp;status=pending&amp;older=1762000000000000.9"' in confirm
    assert 'href="/history/?q=fox&amp;status=pending&amp;older=1762000000000000.9"' in confirm  # "Keep them"
    done = alice_client.post(url, {"ids": ids, "filters": "q=fox&status=pending&older=1762000000000000.9", "confirm": "yes"})
    assert done.status_code == 302 and done["Location"] == "/history/?q=fox&status=pending&older=1762000000000000.9"
    assert list(GenerationTask.objects.values_list("pk", flat=True)) == [foxes[2].pk]
    # Only the history's own parameters go back, and only to the history.
    evil = alice_client.post(url, {"ids": [foxes[2].pk], "confirm": "yes",
                                   "filters": "q=x&next=https://evil.example/&status=//evil.example"})
    assert evil["Location"] == "/history/?q=x&status=%2F%2Fevil.example"


def test_single_and_bulk_delete_confirm_the_same_way(alice_client, alice):
    task = make_task(alice, prompt="the one")
    single = alice_client.get(reverse("generation:task_delete", args=[task.pk])).content.decode()
    bulk = alice_client.post(reverse("generation:history_delete"), {"ids": [task.pk]}).content.decode()
    for page in (single, bulk):
        assert 'class="card confirm-delete"' in page and '<ul class="confirm-list">' in page
        assert f'<span class="mono">#{task.pk}</span> the one' in page
        assert "The task and all its images will be deleted. This cannot be undone." in page
    # With script, both ask with the same question before posting.
    history = alice_client.get(reverse("generation:history")).content.decode()
    assert 'data-confirm="Delete the selected tasks and their images? This cannot be undone."' in history
    assert 'data-confirm-other="Delete %(n)s tasks and their images? This cannot be undone."' in history
    task_page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
    assert 'data-confirm="Delete this task and its images? This cannot be undone."' in task_page


def test_one_date_format_and_fresh_times_on_every_page(alice_client, alice, completed_image):
    from datetime import timedelta

    from django.utils import timezone

    from accounts.services import token_create
    from generation.templatetags.easel_time import absolute

    old = make_task(alice, prompt="an old one")
    GenerationTask.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    old.refresh_from_db()
    token, _clear = token_create(user=alice, name="laptop")
    history = alice_client.get(reverse("generation:history")).content.decode()
    # Fresh: said in words; older: the one absolute format. Both are <time> with the absolute form as title.
    assert f'title="{absolute(completed_image.task.created_at)}" data-when>just now</time>' in history
    assert f'title="{absolute(old.created_at)}" data-when>{absolute(old.created_at)}</time>' in history
    assert "ago</time>" not in history.replace("just now", "")  # no more "0 minutes ago"
    task = alice_client.get(reverse("generation:task", args=[old.pk])).content.decode()
    assert f"Created <time datetime=\"{timezone.localtime(old.created_at).isoformat(timespec='seconds')}\"" in task
    assert f">{absolute(old.created_at)}</time>" in task
    account = alice_client.get(reverse("accounts:me")).content.decode()
    assert f'title="{absolute(token.expiry)}" data-when>{absolute(token.expiry)}</time>' in account
    assert "data-when>just now</time>" in account  # the token was created a moment ago
    assert 'id="easel-time"' in account  # the words the script keeps them fresh with


def test_task_page_shows_the_generation_time(alice_client, alice):
    from datetime import timedelta

    from django.utils import timezone

    started = timezone.now() - timedelta(minutes=5)
    quick = make_task(alice, status=TaskStatus.COMPLETED, started_at=started,
                      completed_at=started + timedelta(seconds=4.5))
    slow = make_task(alice, status=TaskStatus.COMPLETED, started_at=started,
                     completed_at=started + timedelta(seconds=125))
    running = make_task(alice, status=TaskStatus.PROCESSING, started_at=started)

    def shown(task):
        page = alice_client.get(reverse("generation:task", args=[task.pk])).content.decode()
        if 'data-param="generation_time"' not in page:
            return None
        row = page[page.index('data-param="generation_time"'):]
        return row[row.index("<dd"):row.index("</dd>")].rpartition(">")[2]

    assert shown(quick) == "4.5 s"
    assert shown(slow) == "2 min 05 s"
    assert shown(running) is None


def test_every_problem_of_the_form_shows_at_once_in_the_services_words(alice_client, checkpoint, api_client_for,
                                                                        alice):
    """A seed that is not even a number no longer hides the size, steps and CFG problems."""
    page = alice_client.post(reverse("generation:generate"), form_data(
        seed="not-a-number", size="custom", width="100", height="64", steps="0", cfg="99",
    )).content.decode()
    assert not GenerationTask.objects.exists()
    for field in ("seed", "width", "steps", "cfg"):
        assert f'id="id_{field}_errors"' in page, field
    assert "Steps must be between 1 and" in page and "CFG must be between 0 and 30." in page
    assert "Width must be a multiple of 8" in page
    # The API says the same things in the same words.
    response = api_client_for(alice).post("/api/v1/generation/create-async", {
        "prompt": "a fox", "seed": "not-a-number", "width": 100, "steps": 0, "cfg": 99}, format="json")
    fields = response.json()["error"]["fields"]
    assert response.status_code == 400 and set(fields) >= {"seed", "width", "steps", "cfg"}
    assert fields["steps"][0].startswith("Steps must be between 1 and")
    assert fields["cfg"] == ["CFG must be between 0 and 30."]


# --- the tools: a template's own inputs on the page ----------------------------------


@pytest.fixture
def loras(backend):
    from models_catalog.models import ModelFile

    for name in ("ink.safetensors", "neon.safetensors"):
        ModelFile.objects.create(kind="lora", file_name=name, display_name=name.split(".")[0].title()).backends.add(
            backend)
    ModelFile.objects.create(kind="upscale_model", file_name="up-2x.pth").backends.add(backend)


def test_a_tool_builds_its_form_from_the_templates_inputs(alice_client, checkpoint, loras):
    html = alice_client.get(reverse("generation:generate") + "?template=txt2img-loras").content.decode()
    # The four LoRA slots are one rows field: a pick-list and a strength slider per row.
    assert "data-lora-rows" in html and 'name="in_loras_0_name"' in html and 'name="in_loras_3_name"' in html
    assert 'name="in_loras_0_strength"' in html and 'min="-4"' in html and 'max="4"' in html
    assert ">Ink (offline, will wait)</option>" in html and "Add a LoRA" in html
    assert 'name="in_lora_1"' not in html and 'name="in_lora_1_strength"' not in html
    assert 'name="in_lora_1_clip_strength"' not in html  # the row's strength sets both
    assert "js/widgets.js" in html
    plain = alice_client.get(reverse("generation:generate")).content.decode()
    assert "data-lora-rows" not in plain
    # A tool without LoRA slots keeps a field per input (the upscale model's pick-list).
    upscale = alice_client.get(reverse("generation:generate") + "?template=upscale").content.decode()
    assert 'name="in_upscale_model"' in upscale and "data-lora-rows" not in upscale


def test_a_tool_creates_its_task_from_the_page(alice_client, checkpoint, loras):
    # Row 2 filled, row 1 left empty: each row is its own slot.
    response = alice_client.post(reverse("generation:generate"), form_data(
        template="txt2img-loras", in_loras_0_name="", in_loras_1_name="neon.safetensors",
        in_loras_1_strength="0.7"))
    assert response.status_code == 302, response.content.decode()[:3000]
    task = GenerationTask.objects.get()
    assert task.inputs["lora_2"] == "neon.safetensors" and task.inputs["lora_2_strength"] == 0.7
    assert task.inputs["lora_2_clip_strength"] == 0.7
    assert task.inputs["lora_1"] is None and task.required_files == {"lora": ["neon.safetensors"]}
    # A strength out of the template's bounds is shown on the rows, naming the row.
    response = alice_client.post(reverse("generation:generate"), form_data(
        template="txt2img-loras", in_loras_0_name="ink.safetensors", in_loras_0_strength="9"))
    assert response.status_code == 200
    assert response.context["form"].errors["in_loras"] == ["LoRA 1: the strength must be between -4 and 4."]
    assert 'id="id_in_loras_errors"' in response.content.decode()


def test_the_services_lora_errors_go_on_the_rows_naming_the_row(alice_client, checkpoint, loras):
    from generation.web.forms import GenerateForm
    from generation.web.generate import _enabled_templates

    form = GenerateForm(form_data(template="txt2img-loras", in_loras_2_name="ink.safetensors"),
                        checkpoints=[checkpoint], templates=_enabled_templates())
    assert form.is_valid(), form.errors
    assert form.service_kwargs()["inputs"]["lora_3"] == "ink.safetensors"
    form.apply_service_errors({"lora_3": ["Not on any server."], "lora_1_strength": ["Too strong."],
                               "prompt": ["Write a prompt."]})
    assert form.errors["in_loras"] == ["LoRA 3: Not on any server.", "LoRA 1: Too strong."]
    assert form.errors["prompt"] == ["Write a prompt."]


@pytest.fixture
def two_servers(checkpoint, loras, backend):
    """Two online servers with the model: one has the Ink LoRA, the other the Neon one;
    the upscale model is only on the offline server."""
    from models_catalog.models import ModelFile

    first = ComfyBackend.objects.create(name="one", base_url="http://127.0.0.1:8190", is_online=True)
    second = ComfyBackend.objects.create(name="two", base_url="http://127.0.0.1:8191", is_online=True)
    checkpoint.backends.add(first, second)
    ModelFile.objects.get(file_name="ink.safetensors").backends.add(first)
    ModelFile.objects.get(file_name="neon.safetensors").backends.add(second)
    return first, second



def test_the_page_says_when_no_online_server_has_the_whole_combination(alice_client, two_servers):
    url = reverse("generation:generate")
    response = alice_client.get(url + "?template=txt2img-loras")
    html = response.content.decode()
    # Each model and LoRA with the online servers holding it, for the script (no extra request).
    info = response.context["availability"]
    first, second = two_servers
    assert info["fields"]["model"] == "checkpoint" and info["fields"]["in_loras_0_name"] == "lora"
    assert sorted(info["files"]["checkpoint"]["demo-model"]["backends"]) == sorted([first.pk, second.pk])
    assert info["files"]["lora"]["ink.safetensors"] == {"title": "Ink", "backends": [first.pk]}
    assert 'id="availability-info"' in html
    # The model alone is on both: no warning (the element waits, hidden, for the script).
    assert response.context["availability_warning"] == ""
    assert re.search(r'data-availability-warning [^>]*role="status" hidden></p>', html)
    # Ink and Neon are each online, but never on the same server.
    response = alice_client.post(url, form_data(
        template="txt2img-loras", steps="0", in_loras_0_name="ink.safetensors", in_loras_1_name="neon.safetensors"))
    assert response.status_code == 200
    assert response.context["availability_warning"] == (
        "No image server that is online has all of these: Demo model, Ink, Neon. The task will wait until one does.")
    assert response.context["availability_warning"] in response.content.decode()
    # One of them is fine.
    response = alice_client.post(url, form_data(template="txt2img-loras", steps="0", in_loras_0_name="ink.safetensors"))
    assert response.context["availability_warning"] == ""
    # The upscale model offered first is on no online server: said for the initial values.
    response = alice_client.get(url + "?template=upscale")
    assert response.context["availability_warning"] == (
        "No image server that is online has all of these: up-2x.pth. The task will wait until one does.")
    assert "model" not in response.context["availability"]["fields"]  # an upscale uses no checkpoint


def test_the_availability_warning_is_chinese_in_chinese(client, alice, two_servers):
    client.force_login(alice)
    response = client.post(reverse("generation:generate"), form_data(
        template="txt2img-loras", steps="0", in_loras_0_name="ink.safetensors", in_loras_1_name="neon.safetensors"),
        HTTP_ACCEPT_LANGUAGE="zh-Hans")
    warning = response.context["availability_warning"]
    assert "Ink" in warning and "Neon" in warning and "No image server" not in warning
    assert "%(names)s" in response.context["availability_message"]


def test_inpaint_from_the_page_stores_the_drawn_mask(alice_client, alice, checkpoint):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from generation.models import SourceImage

    html = alice_client.get(reverse("generation:generate") + "?template=inpaint").content.decode()
    assert "data-mask-editor" in html and "js/mask_editor.js" in html
    source = SimpleUploadedFile("me.png", _png(), content_type="image/png")
    mask = SimpleUploadedFile("mask.png", _png(), content_type="image/png")
    response = alice_client.post(reverse("generation:generate"), form_data(
        template="inpaint", source_file=source, in_mask=mask))
    assert response.status_code == 302, response.content.decode()[:3000]
    task = GenerationTask.objects.get()
    stored = SourceImage.objects.get(pk=task.inputs["mask"])
    assert stored.user == alice and task.source_image.user == alice
    # Without a mask the page says what is missing, beside the mask.
    response = alice_client.post(reverse("generation:generate"), form_data(
        template="inpaint", source_file=SimpleUploadedFile("me.png", _png(), content_type="image/png")))
    assert response.status_code == 200 and "in_mask" in response.context["form"].errors


def test_a_mask_of_another_size_is_refused_beside_the_mask(alice_client, checkpoint):
    from django.core.files.uploadedfile import SimpleUploadedFile

    def picture(size):
        buffer = io.BytesIO()
        Image.new("RGB", size, "white").save(buffer, format="PNG")
        return buffer.getvalue()

    response = alice_client.post(reverse("generation:generate"), form_data(
        template="inpaint", source_file=SimpleUploadedFile("me.png", picture((16, 8)), content_type="image/png"),
        in_mask=SimpleUploadedFile("mask.png", picture((8, 8)), content_type="image/png")))
    assert response.status_code == 200 and not GenerationTask.objects.exists()
    assert response.context["form"].errors["in_mask"] == [
        "The mask is 8 × 8 pixels but the picture is 16 × 8: it must have the picture's size."]
