"""The zh-Hans walk: every page a user and staff can open, in Chinese, with a studio's
worth of data in it, and no English left on any of them.

From the issue "The first week of real users": "the zh-Hans walk of every page and the
admin finds no English". The studio below holds what a week of use leaves: tasks in
every state (a ComfyUI execution error, a timeout, a retry, a share, an upload), API
tokens of every kind, webhook deliveries, backends online, offline, draining, disabled
and the demo engine, its checkpoints, the built-in workflow templates, the dashboard's
statistics and health checks. Each page is read as a Chinese reader sees it (tests/
i18n_text.py: the text, the tooltips and labels, what the pages' scripts will write)
and every run of English words left is listed. What the test wrote as user data, and
the words of ComfyUI, urllib3 and django-q2 quoted as they wrote them, may stay; the
rest is Easel's to translate. The browser half (what scripts write once they run) is
tests/e2e/test_browser_i18n.py.
"""
from __future__ import annotations

import io
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.html import escape
from PIL import Image

from generation.limits import SAMPLERS, SCHEDULERS
from tests.conftest import free_port
from tests.i18n_text import english_runs, visible_text

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.api_error_urls")]

PASSWORD = "correct horse battery"
ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-Hans"}
CAPTURES = Path(__file__).resolve().parent / "fixtures" / "comfyui"

# Everything the studio below holds that a person wrote (names, prompts, descriptions)
# or another system said (ComfyUI's exception, urllib3's connection error): shown as
# written, in whatever language it was written. Filled by the fixture.
WRITTEN: list[str] = []


def written(*values: str) -> str:
    WRITTEN.extend(values)
    return values[0]


@pytest.fixture(autouse=True)
def _reset():
    WRITTEN.clear()
    yield
    translation.deactivate()


def _png(color: str, size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def studio(settings, monkeypatch, tmp_path, operator_group, no_cluster):
    """A studio after a week of use. Returns the objects the walk opens.

    No cluster runs meanwhile: it would run, fail over or recover the tasks staged here."""
    from accounts.models import ApiToken
    from accounts.services import token_create
    from generation import transitions
    from generation.comfy import ComfyClient
    from generation.fleet.runner import Outcome, TaskFailed, TaskRunner, task_claim
    from generation.gallery.results import result_store
    from generation.gallery.sharing import task_share
    from generation.gallery.uploads import source_image_create
    from generation.models import GenerationTask, WebhookDelivery
    from generation.ops.rollup import roll_up
    from generation.services import generation_create, generation_retry
    from generation.task_text import message_fields, text
    from generation.webhooks.delivery import webhook_deliver
    from models_catalog.builtin import ensure_builtin_templates
    from models_catalog.models import Checkpoint, ComfyBackend, WorkflowTemplate
    from models_catalog.services import backend_check, catalog_sync, checkpoints_sync
    from models_catalog.templates import rows_from_bindings, template_inputs_create

    settings.MEDIA_ROOT = tmp_path
    settings.EASEL_WEBHOOK_ALLOW_PRIVATE = True
    settings.EASEL_WEBHOOK_MAX_ATTEMPTS = 1
    cluster = {"id": "5f0c9a1e-2b7d-4c11-9e0a-3d2f1b6c8a71", "host": "worker-host-01", "status": "Idle",
               "workers": 2, "started_at": (timezone.now() - timedelta(hours=3)).isoformat()}
    written(cluster["host"])
    alive = {"alive": True, "clusters": [cluster]}
    for where in ("generation.web.status", "generation.ops.doctor", "generation.ops.stats"):
        monkeypatch.setattr(f"{where}.worker_status", lambda: alive)

    User = get_user_model()
    boss = User.objects.create_superuser(username=written("boss"), email=written("boss@example.com"),
                                         password=PASSWORD)
    mei = User.objects.create_user(username=written("mei"), email=written("mei@example.com"), password=PASSWORD,
                                   display_name=written("Mei Lin"))
    jun = User.objects.create_user(username=written("jun"), email=written("jun@example.com"), password=PASSWORD)
    operator = User.objects.create_user(username=written("operator7"), password=PASSWORD, is_staff=True)
    operator.groups.add(operator_group)

    # Backends: the demo engine, a GPU online, one unreachable (its error as urllib3
    # words it), one draining, one disabled. Their names are staff's words; none is a
    # word Easel uses itself ("demo"), which the walk would then no longer see. Every
    # address is a closed local port, so an admin action that asks a backend fails at
    # once instead of waiting for a timeout.
    def address():
        return f"http://127.0.0.1:{free_port()}"

    demo = ComfyBackend.objects.create(
        name="demo-1", base_url=address(), is_demo=True, is_online=True,
        comfyui_version="0.3.64", devices=[{"name": written("Easel demo engine"), "type": "cpu"}],
        last_seen_at=timezone.now(), last_checked_at=timezone.now(),
    )
    gpu = ComfyBackend.objects.create(
        name=written("gpu-east"), base_url=address(), is_online=True, comfyui_version="0.3.64",
        devices=[{"name": written("cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync"), "type": "cuda",
                  "vram_total": 25386483712, "vram_free": 20000000000}],
        loaded_checkpoint="sdxl_base_1.0.safetensors", last_seen_at=timezone.now(),
        abandoned_prompts=["0b6d2c5e-9f61-4f0c-8d36-2a7e5d7c1b90"],
    )
    offline = ComfyBackend.objects.create(name=written("gpu-west"), base_url=address(), is_online=True)
    assert not backend_check(backend=offline, timeout=1)
    offline.refresh_from_db()
    written(offline.last_error)
    # What the catalog sync says of it (the admin's sync action shows it): urllib3's words.
    written(*catalog_sync(backends=[offline]).errors.values())
    offline.refresh_from_db()
    written(offline.last_error)
    ComfyBackend.objects.create(name=written("gpu-north"), base_url=address(), is_online=True,
                                draining=True)
    ComfyBackend.objects.create(name=written("gpu-old"), base_url=address(), enabled=False)

    # The catalog as the sync leaves it: the demo engine's checkpoints (with Easel's
    # description of a demo model), a real one staff described in their own words.
    monkeypatch.setattr(ComfyClient, "checkpoints", lambda self: ["demo-sd15.safetensors", "demo-sdxl.safetensors"])
    summary = checkpoints_sync(backends=[demo])
    assert not summary.errors
    # The file names, and the display names the sync makes of them.
    for names in Checkpoint.objects.values_list("display_name", "ckpt_name"):
        written(*names)
    sdxl = Checkpoint.objects.create(
        name=written("sdxl-base"), ckpt_name="sdxl_base_1.0.safetensors", display_name=written("SDXL base"),
        description=written("Staff notes: photoreal, slow above 1024 px."), enabled=True,
    )
    sdxl.backends.add(gpu, offline)
    Checkpoint.objects.create(name=written("unused"), ckpt_name=written("unused.ckpt"), enabled=False)
    ensure_builtin_templates(WorkflowTemplate)
    staff_template = WorkflowTemplate.objects.get(slug="txt2img-basic")
    # A template's slug and its inputs' names are identifiers API clients send, the same in
    # every language (the admin shows them beside their translated labels).
    for template in WorkflowTemplate.objects.all():
        written(template.slug, *template.inputs.values_list("name", flat=True))
    portrait = WorkflowTemplate.objects.create(
        slug=written("portrait-hires"), name=written("Portrait hires"), kind="txt2img", graph=staff_template.graph,
        description=written("Staff template: two passes, sharper faces."),
    )
    template_inputs_create(template=portrait, rows=rows_from_bindings(staff_template.bindings))

    demo_model = Checkpoint.objects.filter(backends=demo).order_by("name").first()
    prompts = []

    def task(prompt, **extra):
        request = dict(prompt=written(prompt), model_name=demo_model.name, steps=8, seed=1234)
        request.update(extra)
        prompts.append(prompt)
        return generation_create(user=mei, **request)

    queued = task("a lighthouse at dusk", negative_prompt=written("blurry, low quality"))
    waiting = task("a harbour in fog")
    transitions.assign(waiting, backend_id=offline.pk)
    GenerationTask.objects.filter(pk=waiting.pk).update(
        **message_fields("status", text("Backend %(name)s is unreachable, retrying.", name=offline.name)),
        waiting_since=timezone.now() - timedelta(seconds=20),
    )

    def on_backend(row, backend):
        transitions.assign(row, backend_id=backend.pk)
        owner = f"job-{row.pk}"
        claimed = task_claim(task_id=row.pk, owner=owner)
        transitions.start(claimed, owner=owner)
        return TaskRunner(claimed, owner)

    running = on_backend(task("a red fox in snow"), demo)
    running.update(progress_value=5, progress_max=8, progress_node="KSampler")

    done = on_backend(task("two cats on a sofa", batch_size=2), demo)
    images = [result_store(task=done.task, index=i, data=_png(c)) for i, c in enumerate(("purple", "teal"))]
    transitions.complete(done.task, owner=done.owner, size=(64, 48))
    share_token = task_share(task=GenerationTask.objects.get(pk=done.task.pk))

    # ComfyUI's own execution error, as the runner meets it (a capture from ComfyUI 0.3.64).
    history = json.loads((CAPTURES / "history_failed.json").read_text())
    error = next(iter(history.values()))["status"]["messages"][-1][1]
    written(error["exception_type"], str(error["exception_message"]).strip())
    broken = on_backend(task("a broken source"), demo)
    try:
        broken._finish(Outcome("error", [], error))
    except TaskFailed as exc:
        broken.fail(exc.code, exc.message, exc.fields)

    # ComfyUI refusing graphs, as the runner meets it (captures from ComfyUI 0.3.64): bad
    # parameters put beside their fields, and a link no parameter explains.
    from generation.comfy import ComfyPromptRejected
    from generation.fleet.runner import rejected as rejection

    captured = {case["case"]: case["response"] for case in json.loads(
        (CAPTURES / "post_prompt_invalid.json").read_text())["cases"]}
    rejected_tasks = {}
    for name, case in (("rejected", "several bad inputs at once (ckpt name + steps -1 + cfg 'abc')"),
                       ("broken graph", "link to wrong output type")):
        body = captured[case]["body"]
        for node in body["node_errors"].values():
            for err in node["errors"]:  # ComfyUI's own words and input names, quoted as it wrote them
                written(err["message"], err["details"], f"{err['message']} ({err['details']})",
                        err["extra_info"]["input_name"])
        runner = on_backend(task(f"a {name} workflow"), gpu)
        failure = rejection(ComfyPromptRejected(captured[case]["status"], body), runner.task.template.bindings)
        runner.fail(failure.code, failure.message, failure.fields)
        rejected_tasks[name] = runner.task
    written("nope.safetensors")

    timed_out = on_backend(task("a long render"), gpu)
    timed_out.fail("timeout", text("Timed out after %(n)d s.", n=1200))
    retried = on_backend(task("a retried painting"), gpu)
    retried.fail("timeout", text("Timed out after %(n)d s.", n=1200))
    generation_retry(task=GenerationTask.objects.get(pk=retried.task.pk))

    cancelled = task("a cancelled sketch")
    transitions.cancel(cancelled)

    # A task moved off a backend that went away and finished on another: two attempts.
    moved = on_backend(task("a moved harbour at night"), gpu)
    transitions.fail_over(moved.task, owner=moved.owner,
                          reason=text("Backend %(name)s went away; moved back to the queue.", name=gpu.name))
    moved = on_backend(GenerationTask.objects.get(pk=moved.task.pk), demo)
    result_store(task=moved.task, index=0, data=_png("navy"))
    transitions.complete(moved.task, owner=moved.owner)

    upload = source_image_create(
        user=mei, file=SimpleUploadedFile(written("holiday-photo.png"), _png("orange"), "image/png"),
        name="holiday-photo.png",
    )
    img2img = task("the same photo as a watercolour", template="img2img-basic", source_image=upload.pk, denoise=0.6)

    # Enough older tasks for a second history page, ended over the past days.
    for n in range(26):
        old = on_backend(task(f"an old study number {n}"), demo if n % 2 else gpu)
        result_store(task=old.task, index=0, data=_png("gray"))
        transitions.complete(old.task, owner=old.owner)
        ended = timezone.now() - timedelta(days=n % 5, hours=n)
        GenerationTask.objects.filter(pk=old.task.pk).update(
            created_at=ended - timedelta(seconds=30), started_at=ended - timedelta(seconds=20), completed_at=ended,
        )
    other = generation_create(user=jun, prompt=written("jun's private prompt"), model_name=demo_model.name)
    roll_up()

    # API tokens: one made on purpose, one by signing in over the API, one by signing up.
    token_create(user=mei, name=written("my phone"))
    token_create(user=mei, kind=ApiToken.Kind.SIGN_IN)
    signup_token, _ = token_create(user=jun, kind=ApiToken.Kind.SIGN_UP)
    signup_token.webhook_url = written("https://hooks.example.com/easel")
    signup_token.save()

    # Webhook deliveries: one the receiver refused (nothing listens there), one whose
    # token was deleted (unsigned, never sent), one delivered, one still waiting.
    from generation.webhooks.services import webhook_enqueue_for_task

    hook_token, _ = token_create(user=mei, name=written("webhook bot"))
    GenerationTask.objects.filter(pk__in=[done.task.pk, broken.task.pk]).update(
        callback_url="http://127.0.0.1:9/hook", api_token=hook_token,
    )
    refused = webhook_enqueue_for_task(task_id=done.task.pk)
    webhook_deliver(refused.pk)
    refused.refresh_from_db()
    written(refused.last_error.split(": ", 1)[1])  # urllib3's words after Easel's
    unsigned = webhook_enqueue_for_task(task_id=broken.task.pk)
    WebhookDelivery.objects.filter(pk=unsigned.pk).update(api_token=None)
    webhook_deliver(unsigned.pk)
    WebhookDelivery.objects.create(
        user=mei, task=timed_out.task, event="task.failed", url="https://hooks.example.com/easel",
        message_id="msg_delivered", payload={}, state=WebhookDelivery.State.DELIVERED, attempts=1,
        last_status_code=200, delivered_at=timezone.now(),
    )
    WebhookDelivery.objects.create(
        user=mei, task=queued, event="task.completed", url="https://hooks.example.com/easel",
        message_id="msg_waiting", payload={}, next_attempt_at=timezone.now() + timedelta(minutes=5), attempts=2,
    )

    # django-q2's own records: a job that ran, one that failed (its traceback is Python's).
    from django_q.models import OrmQ, Task

    from generation.queue import enqueue

    start = timezone.now() - timedelta(minutes=3)
    for i, ok in enumerate((True, False)):
        Task.objects.create(
            id=f"{i:032x}", name=written(f"job-{i}-alpha"), func="generation.jobs.studio_tick", args=None, kwargs={},
            started=start, stopped=start + timedelta(seconds=2), success=ok,
            result=None if ok else written("Traceback (most recent call last): RuntimeError: database is locked"),
            attempt_count=1,
        )
    enqueue("generation_dispatch")  # waits in django-q2's queue: no cluster runs here
    for job in OrmQ.objects.all():
        # django-q2 names a job with random words and shows its options as Python wrote
        # them; Easel's job group is an identifier, like a job's function.
        written(job.name(), str(job.q_options()), job.group())

    return {
        "boss": boss, "mei": mei, "jun": jun, "operator": operator, "tasks": {
            "queued": queued, "waiting": waiting, "running": running.task, "completed": done.task,
            "failed": broken.task, "timeout": timed_out.task, "retried": retried.task, "cancelled": cancelled, "moved": moved.task,
            "img2img": img2img, "other": other, **rejected_tasks,
        },
        "images": images, "share_token": share_token, "upload": upload, "backends": [demo, gpu, offline],
    }


# --- reading the pages ---------------------------------------------------------------


def read(client: Client, url: str, *, method: str = "get", data=None, status: int = 200, follow=None,
         **extra) -> str:
    """The page in Chinese (a form's answer followed to the page it leads to)."""
    follow = method == "post" if follow is None else follow
    response = getattr(client, method)(url, data or {}, follow=follow, **ZH, **extra)
    assert response.status_code == status, (url, response.status_code)
    assert response["Content-Type"].startswith("text/html"), (url, response["Content-Type"])
    html = response.content.decode()
    assert '<html lang="zh-hans">' in html or 'lang="zh-hans"' in html, f"{url} is not in Chinese"
    return html


# ComfyUI's sampler and scheduler names are identifiers Easel sends to ComfyUI as they are
# (and ComfyUI's own interface shows them so): the pages offer them untranslated.
COMFYUI_NAMES = {*SAMPLERS, *SCHEDULERS}
# Names that are the same in every language: a file kind (VAE) and the JSON a template
# input's default is written in (true, false), and the request field custom inputs go in.
COMFYUI_NAMES |= {"VAE", "JSON", "true", "false", "inputs"}
# What Django itself writes without gettext, on the delete and history pages of objects
# with many-to-many fields: the name of the relation's auto-created model (built with
# % when the model class is made, so in English for good) and the default
# `Model.__str__` of its rows ("User_groups object (3)").
# A password's stored hash is summarised with its random salt and hash masked ("ab*****").
DJANGO_UNTRANSLATABLE = (r"\b[A-Z][a-z]+-[a-z]+ relationships?\b", r"\b\w+ object \(\d+\)", r"\S{2}\*{5,}")


class Walk:
    """Collects the English left on each page opened."""

    def __init__(self):
        self.found: dict[str, list[str]] = {}
        self.pages: list[str] = []

    def check(self, label: str, html: str, *, ignore=(), shows: str = "") -> None:
        """`shows`: a phrase the page must hold, so the walk is sure it met the state it meant."""
        assert shows in html, f"{label}: {shows!r} is not on the page"
        self.pages.append(label)
        runs = english_runs(visible_text(html), ignore=[*WRITTEN, *ignore], patterns=DJANGO_UNTRANSLATABLE,
                            allowed_words=COMFYUI_NAMES)
        if runs:
            self.found[label] = sorted(set(runs))

    def report(self) -> str:
        lines = [f"{len(self.found)} of {len(self.pages)} pages still show English:"]
        for label, runs in self.found.items():
            lines.append(f"  {label}")
            lines += [f"      {run!r}" for run in runs]
        return "\n".join(lines)


def user_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_studio_pages_in_chinese_show_no_english(studio, settings, monkeypatch):
    from generation.models import GenerationTask
    from models_catalog.models import Checkpoint, ComfyBackend

    walk = Walk()
    mei = user_client(studio["mei"])
    tasks = studio["tasks"]

    for url in ("/", "/?template=img2img-basic", f"/?source=s{studio['upload'].pk}",
                "/?prompt=again&model=sdxl-base&seed=5&template=portrait-hires",
                "/history/", "/history/?status=failed&q=broken",
                "/history/?q=nothing+like+this&date_from=2020-01-01&date_to=2020-01-02",
                "/accounts/me/", "/accounts/password/", "/accounts/password/done/"):
        walk.check(url, read(mei, url))
    # The history's older page, through its link (it names a place in the list).
    older = re.search(r'href="(\?older=[^"]+)" rel="next"', read(mei, "/history/"))
    assert older, "the history has no older page"
    walk.check("/history/ (older)", read(mei, "/history/" + older[1].replace("&amp;", "&")))
    # What each task's page must show, so the walk knows the task is in the state it meant.
    shows = {"failed": "LoadImage（节点 1）出错：", "timeout": "已超时（1200 秒）。", "retried": "上一次尝试失败：",
             "running": "第 5 步，共 8 步", "completed": "公开链接", "rejected": "步数不能小于 1",
             "broken graph": "VAEDecode（节点 8）的输入“vae”：", "moved": "gpu-east 失联后已转移。"}
    for name, task in tasks.items():
        if name != "other":
            walk.check(f"task {name}", read(mei, f"/tasks/{task.pk}/"), shows=shows.get(name, ""))
            # The live panel's words, which the page's script writes in (the rest are codes and numbers).
            state = mei.get(f"/tasks/{task.pk}/state.json", **ZH).json()
            words = ("status_label", "queue_text", "stage", "line", "message")
            walk.check(f"task {name} state.json", "".join(f"<p>{escape(state[key] or '')}</p>" for key in words))
    walk.check("task delete (confirm)", read(mei, f"/tasks/{tasks['cancelled'].pk}/delete/"))
    walk.check("history delete (confirm)", read(mei, "/history/delete/", method="post",
                                                data={"ids": [tasks["cancelled"].pk, tasks["failed"].pk]}))

    # The acts, each with the message it leaves on the next page.
    walk.check("generate (form errors)", read(mei, "/", method="post", data={
        "prompt": "", "size": "custom", "steps": "0", "cfg": "7", "sampler": "euler", "scheduler": "normal",
        "batch_size": "1", "template": "img2img-basic"}))
    walk.check("cancel", read(mei, f"/tasks/{tasks['queued'].pk}/cancel/", method="post"),
               shows=f"任务 #{tasks['queued'].pk} 已取消。")
    walk.check("cancel again", read(mei, f"/tasks/{tasks['queued'].pk}/cancel/", method="post"), shows="此任务已经结束")
    walk.check("retry", read(mei, f"/tasks/{tasks['cancelled'].pk}/retry/", method="post"))
    walk.check("unshare", read(mei, f"/tasks/{tasks['completed'].pk}/unshare/", method="post"))
    walk.check("share", read(mei, f"/tasks/{tasks['completed'].pk}/share/", method="post"))
    walk.check("token created", read(mei, "/accounts/me/", method="post", data={"name": written("laptop"),
                                                                                "expiry_days": "30"}))
    walk.check("token form errors", read(mei, "/accounts/me/", method="post", data={"name": "", "expiry_days": "999"}))
    walk.check("password change (errors)", read(mei, "/accounts/password/", method="post", data={
        "old_password": "wrong", "new_password1": "12345", "new_password2": "54321"}))
    walk.check("history delete (nothing selected)", read(mei, "/history/delete/", method="post", data={}),
               shows="请先至少选择一个任务。")
    walk.check("history zip (nothing selected)", read(mei, "/history/download.zip", follow=True),
               shows="请先至少选择一个任务。")
    walk.check("task deleted", read(mei, f"/tasks/{tasks['img2img'].pk}/delete/", method="post",
                                    data={"confirm": "yes"}))
    walk.check("vary seed", read(mei, f"/tasks/{tasks['completed'].pk}/vary/", method="post"))
    walk.check("use as source", read(mei, f"/images/{studio['images'][0].pk}/use-as-source/", method="post"))
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_LIMIT_PER_USER": 1}
    walk.check("token limit", read(mei, "/accounts/me/", method="post", data={"name": "one more", "expiry_days": "5"}),
               shows="已达上限")
    type(studio["mei"]).objects.filter(pk=studio["mei"].pk).update(daily_image_quota=0)
    walk.check("quota used up", read(mei, "/", method="post", data={
        "prompt": "one more", "model": "sdxl-base", "size": "512x512", "steps": "8", "cfg": "7", "sampler": "euler",
        "scheduler": "normal", "batch_size": "1", "seed_random": "on", "template": "txt2img-basic"}),
        shows="今天的图片配额（0 张）已用完。")

    # Nothing can start: no worker, no image server. Users see why; staff also how to fix it.
    monkeypatch.setattr("generation.web.status.worker_status", lambda: {"alive": False, "clusters": []})
    ComfyBackend.objects.update(is_online=False)
    boss = user_client(studio["boss"])
    for who, client in (("user", mei), ("staff", boss)):
        walk.check(f"generate, nothing running ({who})", read(client, "/"), shows="任务将排队等待。")
        walk.check(f"queued task, nothing running ({who})", read(client, f"/tasks/{tasks['retried'].pk}/")
                   if who == "user" else read(client, "/history/"))
    Checkpoint.objects.update(enabled=False)
    for who, client in (("user", mei), ("staff", boss)):
        walk.check(f"generate, no model ({who})", read(client, "/"), shows="暂无可用模型。")
    walk.check("generate, no model (submitted)", read(mei, "/", method="post", data={
        "prompt": "x", "size": "512x512", "steps": "8", "cfg": "7", "sampler": "euler", "scheduler": "normal",
        "batch_size": "1"}))

    # A new user with nothing yet, and someone who is not signed in.
    walk.check("history (empty)", read(user_client(studio["jun"]), "/history/?status=completed"))
    anonymous = Client()
    token = GenerationTask.objects.get(pk=tasks["completed"].pk).share_token  # shared again above
    walk.check("shared page", read(anonymous, f"/s/{token}/"))
    walk.check("login", read(anonymous, "/accounts/login/"))
    walk.check("login (wrong password)", read(anonymous, "/accounts/login/", method="post",
                                              data={"username": "mei", "password": "nope"}))
    walk.check("sign-up", read(anonymous, "/accounts/signup/"))
    for password in ("123", "password", "mei-lin-mei", "82736451209"):
        walk.check(f"sign-up (password {password!r})", read(anonymous, "/accounts/signup/", method="post", data={
            "username": "mei-lin", "email": "mei.lin@example.com", "display_name": "Mei Lin",
            "password1": password, "password2": password}))
    walk.check("sign-up (taken, differing)", read(anonymous, "/accounts/signup/", method="post", data={
        "username": "mei", "email": "MEI@example.com", "password1": "a", "password2": "b"}))
    walk.check("404", read(anonymous, "/no/such/page/", status=404))
    walk.check("404 (another user's task)", read(mei, f"/tasks/{tasks['other'].pk}/", status=404))
    walk.check("403", read(mei, "/test-deny", status=403))
    walk.check("403 (form expired)", read(Client(enforce_csrf_checks=True), "/accounts/login/", method="post",
                                          data={"username": "x", "password": "y"}, status=403))
    walk.check("400", read(anonymous, "/", status=400, HTTP_HOST="evil.example"))
    crashing = Client(raise_request_exception=False)
    walk.check("500", read(crashing, "/test-boom", status=500))
    settings.EASEL_ALLOW_SIGNUP = False
    walk.check("sign-up closed", read(anonymous, "/accounts/signup/", status=404))
    walk.check("login (sign-up closed)", read(anonymous, "/accounts/login/"))
    walk.check("signed out", read(mei, "/accounts/logout/", method="post"))

    assert not walk.found, walk.report()


# --- the admin ---------------------------------------------------------------------------


def _django_q_words() -> list[str]:
    """django-q2's own words on its own pages: its messages, as its zh_Hans catalogue
    has them (untranslated, fuzzy, or translated with English left in: "Cron"), and the
    names Easel gave its schedules and cluster, which are identifiers (migrations and
    the cluster look them up by name)."""
    import django_q
    from django.conf import settings
    from django_q.models import Schedule

    from tests.test_i18n import parse_po

    po = Path(django_q.__file__).parent / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
    words = [settings.Q_CLUSTER["name"], *Schedule.objects.values_list("name", flat=True)]
    for entry in parse_po(po):
        words += [text for key, text in entry.items() if key == "msgid" or key.startswith("msgstr")]
    return [w for w in words if w]


def admin_urls(studio) -> list[str]:
    """Every page of the admin: the index, each app, each registered model's list, its add
    form where there is one, the change (or view) page and history of each of its rows."""
    urls = ["/admin/", "/admin/dashboard/", "/admin/dashboard/?days=1", "/admin/dashboard/?days=90",
            "/admin/models_catalog/workflowtemplate/import/", "/admin/password_change/"]
    apps = set()
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        apps.add(opts.app_label)
        base = f"admin:{opts.app_label}_{opts.model_name}"
        urls.append(reverse(f"{base}_changelist"))
        if model_admin.has_add_permission(_request(studio["boss"])):
            urls.append(reverse(f"{base}_add"))
        for pk in model._default_manager.order_by("pk").values_list("pk", flat=True)[:40]:
            urls.append(reverse(f"{base}_change", args=[pk]))
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            urls.append(reverse(f"{base}_history", args=[first.pk]))
            urls.append(reverse(f"{base}_delete", args=[first.pk]))
    urls += [reverse("admin:app_list", args=[app]) for app in sorted(apps)]
    urls.append(reverse("admin:auth_user_password_change", args=[studio["mei"].pk]))
    return urls


def _request(user):
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def test_the_admin_in_chinese_shows_no_english(studio, settings):
    # A laptop-style setting the doctor warns about, so its advice is on the dashboard.
    settings.ALLOWED_HOSTS = ["*"]
    walk = Walk()
    boss = user_client(studio["boss"])
    django_q_words = _django_q_words()
    for url in admin_urls(studio):
        # django-q2's pages show its own words (its catalogue is its business) beside
        # Easel's (the admin's menu, headings and messages), which are checked.
        walk.check(url, read(boss, url), ignore=django_q_words if url.startswith("/admin/django_q/") else ())

    changelists = {
        "/admin/generation/generationtask/": ["?status__exact=failed", "?q=fox", "?model=sdxl-base",
                                              "?created_at__gte=2020-01-01+00%3A00%3A00%2B00%3A00",
                                              "?backend__id__exact=1"],
        "/admin/accounts/user/": ["?groups__id__exact=1", "?is_staff__exact=1"],
        "/admin/models_catalog/comfybackend/": ["?is_online__exact=0"],
        "/admin/auth/group/": ["?q=studio"],
    }
    for base, queries in changelists.items():
        for query in queries:
            walk.check(base + query, read(boss, base + query))

    # Actions and the messages they leave.
    def act(url, action, objects, **extra):
        data = {"action": action, "_selected_action": [o.pk for o in objects], **extra}
        walk.check(f"{url} {action}", read(boss, url, method="post", data=data))

    from generation.models import GenerationTask
    from models_catalog.models import Checkpoint, ComfyBackend, WorkflowTemplate

    tasks = studio["tasks"]
    act("/admin/generation/generationtask/", "cancel_tasks", [tasks["running"], tasks["timeout"]])
    act("/admin/generation/generationtask/", "retry_tasks", [tasks["failed"], tasks["completed"]])
    act("/admin/generation/generationtask/", "delete_selected", [tasks["cancelled"]])
    backends = ComfyBackend.objects.order_by("pk")
    act("/admin/models_catalog/comfybackend/", "test_connection", [studio["backends"][2]])
    act("/admin/models_catalog/comfybackend/", "check_health", [studio["backends"][2]])
    for action in ("drain", "undrain", "disable", "enable"):
        act("/admin/models_catalog/comfybackend/", action, backends[:1])
    act("/admin/models_catalog/comfybackend/", "sync_checkpoints", [studio["backends"][2]])
    act("/admin/models_catalog/checkpoint/", "make_default", Checkpoint.objects.all())
    act("/admin/models_catalog/checkpoint/", "disable", Checkpoint.objects.filter(name="unused"))
    act("/admin/models_catalog/workflowtemplate/", "validate_against_backend", WorkflowTemplate.objects.all())
    act("/admin/accounts/user/", "deactivate", [studio["boss"], studio["jun"]])
    act("/admin/accounts/user/", "activate", [studio["jun"]])

    # The template import with a workflow that cannot be used, and a form left empty.
    bad = {"1": {"class_type": "LoadImage", "inputs": {}}, "2": {"class_type": "NoSuchNode", "inputs": {"x": 1}}}
    walk.check("import (node errors)", read(boss, "/admin/models_catalog/workflowtemplate/import/", method="post",
                                            data={"name": "x", "slug": "bad-one", "workflow": SimpleUploadedFile(
                                                "w.json", json.dumps(bad).encode(), "application/json")}))
    walk.check("import (empty)", read(boss, "/admin/models_catalog/workflowtemplate/import/", method="post",
                                      data={}))
    walk.check("template change (graph errors)", read(
        boss, reverse("admin:models_catalog_workflowtemplate_change", args=[WorkflowTemplate.objects.first().pk]),
        method="post", data={"name": "x", "slug": "x", "kind": "txt2img", "graph": "{}", "bindings": "{}"}))

    # A studio operator sees the same screens through their group's permissions.
    operator = user_client(studio["operator"])
    for url in ("/admin/", "/admin/generation/generationtask/", "/admin/dashboard/",
                reverse("admin:generation_generationtask_change", args=[GenerationTask.objects.first().pk])):
        walk.check(f"operator {url}", read(operator, url))
    walk.check("admin login", read(Client(), "/admin/login/?next=/admin/"))
    walk.check("admin login (wrong password)", read(Client(), "/admin/login/", method="post", data={
        "username": "boss", "password": "nope", "next": "/admin/"}))
    walk.check("admin login (not staff)", read(Client(), "/admin/login/", method="post", data={
        "username": "mei", "password": PASSWORD, "next": "/admin/"}))
    walk.check("admin password changed", read(boss, "/admin/password_change/done/"))
    walk.check("admin search, nothing found", read(boss, "/admin/generation/generationtask/?q=no+such+prompt"))
    walk.check("admin signed out", read(boss, "/admin/logout/", method="post"))

    assert not walk.found, walk.report()
