"""Simplified Chinese: pages follow the browser or the language switcher, and the
shipped catalogue is complete, not fuzzy, and compiled.

The catalogue tests read the committed .po and .mo files directly (with a tiny
parser and the standard library's gettext), so they need neither GNU gettext nor a
run of makemessages. A new string left untranslated, a fuzzy entry, a placeholder
lost in translation or a .po edited without `compilemessages` fails here.
"""
from __future__ import annotations

import ast
import gettext
import re
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import translation

from generation.models import GenerationTask

PASSWORD = "correct horse battery"
LOGIN_URL = "/accounts/login/"
GENERATE_URL = "/"
HISTORY_URL = "/history/"


@pytest.fixture(autouse=True)
def _reset_translation():
    # Requests activate a language for the thread; leave it as the next test expects.
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _no_worker(monkeypatch):
    # The waiting banner asks django-q2's cache for live workers; say there are none,
    # which also puts the banner's strings on the generate page.
    monkeypatch.setattr("generation.web.status.worker_status", lambda: {"alive": False, "clusters": []})


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user(username="mei", email="mei@example.com", password=PASSWORD)


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    # One task, so the history page shows its count (a plural form) and a status badge.
    GenerationTask.objects.create(
        user=user, prompt="a lighthouse at dusk", model_name="demo-model", width=512, height=512,
        steps=20, cfg=7.0, sampler="euler", scheduler="normal", seed=42,
    )
    return client


def get(client, url: str, language: str | None = None) -> str:
    extra = {"HTTP_ACCEPT_LANGUAGE": language} if language else {}
    response = client.get(url, **extra)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def assert_has(html: str, *texts: str) -> None:
    missing = [t for t in texts if t not in html]
    assert not missing, f"missing {missing}"


def assert_lacks(html: str, *texts: str) -> None:
    present = [t for t in texts if t in html]
    assert not present, f"unexpected {present}"


# What each page must say in each language (and never in the other).
PAGES = {
    "login": {
        "zh": ['<html lang="zh-hans">', "登录 Easel", "用户名或电子邮箱", "还没有账户？", "创建账户"],
        "en": ['<html lang="en">', "Sign in to Easel", "Username or e-mail", "New here?", "Create an account"],
    },
    "generate": {
        "zh": ["<h1>生成</h1>", "提示词", "反向提示词", "采样器", "调度器", "种子", "历史记录", "退出登录",
               "任务将排队等待。", "最近的任务"],
        "en": ["<h1>Generate</h1>", "Negative prompt", "Sampler", "Scheduler", "Seed", "History", "Sign out",
               "Tasks will wait.", "Your latest tasks"],
    },
    "history": {
        "zh": ["<h1>历史记录</h1>", "共 1 个任务", "\">排队中</span>", "新建图片"],
        "en": ["<h1>History</h1>", "1 task", "\">pending</span>", "New picture"],
    },
}
PAGES["account"] = {
    "zh": ["<h1>你的账户</h1>", "今日图片", "API 令牌", "主题", "跟随系统", "创建令牌"],
    "en": ["<h1>Your account</h1>", "Today's images", "API tokens", "Theme", "Same as the system", "Create token"],
}
URLS = {"login": LOGIN_URL, "generate": GENERATE_URL, "history": HISTORY_URL, "account": "/accounts/me/"}


def assert_chinese(page: str, html: str) -> None:
    assert_has(html, *PAGES[page]["zh"])
    assert_lacks(html, *PAGES[page]["en"][1:])


def assert_english(page: str, html: str) -> None:
    assert_has(html, *PAGES[page]["en"])
    assert_lacks(html, *PAGES[page]["zh"])


# --- pages -----------------------------------------------------------------------


@pytest.mark.parametrize("accept", ["zh-Hans", "zh-Hans-CN,zh;q=0.9,en;q=0.8", "zh-CN"])
def test_sign_in_page_follows_a_chinese_browser(client, db, accept):
    assert_chinese("login", get(client, LOGIN_URL, accept))


def test_sign_in_page_stays_english_for_an_english_browser(client, db):
    assert_english("login", get(client, LOGIN_URL, "en"))


def test_sign_in_page_is_english_without_accept_language(client, db):
    assert_english("login", get(client, LOGIN_URL))


@pytest.mark.parametrize("page", ["generate", "history", "account"])
def test_signed_in_pages_follow_a_chinese_browser(signed_in, page):
    assert_chinese(page, get(signed_in, URLS[page], "zh-Hans"))


@pytest.mark.parametrize("page", ["generate", "history", "account"])
def test_signed_in_pages_stay_english_for_an_english_browser(signed_in, page):
    assert_english(page, get(signed_in, URLS[page], "en"))


def test_task_page_actions_and_queue_in_chinese(signed_in):
    task = GenerationTask.objects.get()
    html = get(signed_in, f"/tasks/{task.pk}/", "zh-Hans")
    assert_has(html, "取消", "再次使用这些设置", "换个种子", "在队列中等待", "下一个就轮到你")
    assert_lacks(html, "Use these settings again", "Vary seed", "Next in the queue")


def test_messages_the_worker_stored_are_shown_in_the_readers_language(signed_in, user):
    """The worker writes in the default language; a Chinese reader still reads Chinese."""
    from django.utils.translation import gettext_noop

    from generation.models import TaskStatus
    from generation.task_text import message_fields, text

    task = GenerationTask.objects.get()
    GenerationTask.objects.filter(pk=task.pk).update(
        status=TaskStatus.FAILED, error_code="timeout",
        **message_fields("error", text(gettext_noop("Timed out after %(n)d s."), n=120)),
    )
    assert GenerationTask.objects.get().error_message == "Timed out after 120 s."  # stored in English
    assert_has(get(signed_in, f"/tasks/{task.pk}/", "zh-Hans"), "已超时（120 秒）。")
    assert_has(get(signed_in, f"/tasks/{task.pk}/", "en"), "Timed out after 120 s.")
    status = signed_in.get(f"/api/v1/generation/status/{task.pk}", HTTP_ACCEPT_LANGUAGE="zh-Hans").json()
    assert status["error_message"] == "已超时（120 秒）。"
    result = signed_in.get(f"/api/v1/generation/result/{task.pk}", HTTP_ACCEPT_LANGUAGE="zh-Hans").json()
    assert result["error_message"] == "已超时（120 秒）。"

    GenerationTask.objects.filter(pk=task.pk).update(
        status=TaskStatus.PENDING, error_message="", error_params={},
        **message_fields("status", text(gettext_noop("Backend %(name)s is unreachable, retrying."), name="gpu-1")),
    )
    status = signed_in.get(f"/api/v1/generation/status/{task.pk}", HTTP_ACCEPT_LANGUAGE="zh-Hans").json()
    assert status["status_message"] == "后端 gpu-1 无法连接，正在重试。"
    assert status["error_message"] is None


def test_a_stored_message_that_cannot_be_rendered_falls_back_to_its_english_text(db):
    from generation.task_text import render

    assert render({}, "ComfyUI said: out of memory") == "ComfyUI said: out of memory"
    assert render({"msgid": "Timed out after %(n)d s.", "params": {"seconds": 3}}, "Timed out after 3 s.") \
        == "Timed out after 3 s."
    assert render({"msgid": "Timed out after %(n)d s.", "params": {"n": 3}}, "") == ""  # cleared message


def test_form_errors_are_translated(signed_in):
    response = signed_in.post(
        GENERATE_URL,
        {"prompt": "", "size": "512x512", "steps": 20, "cfg": 7, "sampler": "euler", "scheduler": "normal",
         "batch_size": 1},
        HTTP_ACCEPT_LANGUAGE="zh-Hans",
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert_has(html, "暂无可用模型。请联系管理员添加 ComfyUI 后端。")
    assert_lacks(html, "No model is available yet. Ask staff")


def test_language_switcher_sticks_for_later_requests(signed_in):
    response = signed_in.post("/i18n/setlang/", {"language": "zh-hans", "next": HISTORY_URL})
    assert response.status_code == 302
    assert response["Location"] == HISTORY_URL
    assert signed_in.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"

    # The choice outranks the browser's own preference, on every page, until changed.
    for page in ("history", "generate"):
        assert_chinese(page, get(signed_in, URLS[page], "en"))
    assert_chinese("history", get(signed_in, HISTORY_URL))

    signed_in.post("/i18n/setlang/", {"language": "en", "next": HISTORY_URL})
    assert_english("history", get(signed_in, HISTORY_URL, "zh-Hans"))


def test_language_switcher_works_before_signing_in(client, db):
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": LOGIN_URL})
    assert_chinese("login", get(client, LOGIN_URL, "en"))


# --- the catalogue ---------------------------------------------------------------

PO_FILES = sorted(p for root in settings.LOCALE_PATHS for p in Path(root).glob("*/LC_MESSAGES/*.po"))
PLACEHOLDER = re.compile(r"%\(\w+\)[sdif]|%[sdif]|\{\w*\}")
TAG = re.compile(r"</?[a-zA-Z][^>]*>")


def parse_po(path: Path) -> list[dict]:
    """-> [{"msgid", "msgid_plural"?, "msgstr" | "msgstr[n]", "flags", "line"}], header included."""
    entries: list[dict] = []
    entry: dict = {}
    key = None

    def close():
        nonlocal entry, key
        if "msgid" in entry:
            entries.append(entry)
        entry, key = {}, None

    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            close()
        elif line.startswith("#~"):
            continue  # obsolete entries are not shipped
        elif line.startswith("#,"):
            if "msgid" in entry:
                close()
            entry.setdefault("flags", set()).update(f.strip() for f in line[2:].split(","))
        elif line.startswith("#"):
            if "msgid" in entry:
                close()
        elif line.startswith('"'):
            assert key is not None, f"{path}:{number}: continuation without a keyword"
            entry[key] += ast.literal_eval(line)
        else:
            key, _, value = line.partition(" ")
            if key == "msgid" and "msgid" in entry:
                close()
                key = "msgid"
            entry.setdefault("line", number)
            entry[key] = ast.literal_eval(value)
    close()
    for e in entries:
        e.setdefault("flags", set())
    return entries


def translations(entry: dict) -> dict[str, str]:
    return {k: v for k, v in entry.items() if k.startswith("msgstr")}


def where(path: Path, entry: dict) -> str:
    return f"{path}:{entry['line']} {entry['msgid']!r}"


@pytest.fixture(params=PO_FILES, ids=lambda p: str(Path(*p.parts[-4:])))
def po(request):
    return request.param


def test_a_chinese_catalogue_exists():
    assert any(p.parts[-3] == "zh_Hans" and p.name == "django.po" for p in PO_FILES), PO_FILES


def test_header_declares_utf8_and_one_plural_form(po):
    entries = parse_po(po)
    header = next(e for e in entries if e["msgid"] == "")
    assert "fuzzy" not in header["flags"], f"{po}: header is marked fuzzy (msgfmt would drop it)"
    assert "charset=UTF-8" in header["msgstr"]
    if po.parts[-3].startswith("zh"):
        assert "Plural-Forms: nplurals=1; plural=0;" in header["msgstr"]


def test_every_entry_is_translated_and_not_fuzzy(po):
    entries = [e for e in parse_po(po) if e["msgid"]]
    assert entries, f"{po} has no messages"
    fuzzy = [where(po, e) for e in entries if "fuzzy" in e["flags"]]
    empty = [where(po, e) for e in entries if not translations(e) or not all(translations(e).values())]
    problems = [f"fuzzy (review, then remove the flag): {w}" for w in fuzzy]
    problems += [f"untranslated: {w}" for w in empty]
    assert not problems, "\n".join(problems)


def test_translations_keep_placeholders_and_html(po):
    broken = []
    for e in parse_po(po):
        if not e["msgid"]:
            continue
        plural = e.get("msgid_plural")
        for key, text in translations(e).items():
            if plural:  # every form names the same values as the English forms together
                ok = set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(e["msgid"] + plural))
            else:
                ok = Counter(PLACEHOLDER.findall(text)) == Counter(PLACEHOLDER.findall(e["msgid"]))
            if not ok:
                broken.append(f"{where(po, e)} {key}: placeholders differ in {text!r}")
            if sorted(TAG.findall(text)) != sorted(TAG.findall(e["msgid"])):
                broken.append(f"{where(po, e)} {key}: HTML differs in {text!r}")
    assert not broken, "\n".join(broken)


def test_compiled_catalogue_matches_the_po(po):
    """The .mo is what runs (the server has no gettext): it must be rebuilt with the .po."""
    mo = po.with_suffix(".mo")
    assert mo.exists(), f"{mo} is missing: run `python manage.py compilemessages`"
    with mo.open("rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog
    expected: dict = {}
    for e in parse_po(po):
        if not e["msgid"] or "fuzzy" in e["flags"]:
            continue
        # A message with a context (pgettext) is compiled under "context\x04msgid".
        msgid = f"{e['msgctxt']}\x04{e['msgid']}" if "msgctxt" in e else e["msgid"]
        if "msgid_plural" in e:
            for key, text in translations(e).items():
                expected[(msgid, int(key[len("msgstr["):-1]))] = text
        else:
            expected[msgid] = e["msgstr"]
    compiled = {k: v for k, v in catalog.items() if k != ""}
    stale = sorted(str(k) for k in expected.keys() | compiled.keys() if expected.get(k) != compiled.get(k))
    assert not stale, f"{mo} is out of date with {po.name}; run `python manage.py compilemessages`:\n" + "\n".join(stale)


def test_django_uses_the_catalogue():
    with translation.override("zh-hans"):
        assert translation.gettext("Generate") == "生成"
        assert translation.ngettext("%(counter)s task", "%(counter)s tasks", 3) % {"counter": 3} == "共 3 个任务"
