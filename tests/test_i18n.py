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
            if key in ("msgid", "msgctxt") and "msgid" in entry:
                close()
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


# --- Chinese punctuation -----------------------------------------------------------

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# What keeps its ASCII punctuation inside a Chinese sentence: code and the names and
# values a reader types or reads as written. Each part is replaced by a Latin stand-in.
NOT_PROSE = re.compile(
    r"<code>.*?</code>|`[^`]*`"  # code
    r"|<[^>]+>"  # HTML tags
    r"|%\(\w+\)[-+ #0]*\d*(?:\.\d+)?[sdifr]|%[sdif]"  # placeholders
    r"|\b(?:https?|wss?)://\S*"  # URLs and schemes ("http://")
    r"|(?:python )?manage\.py(?: [\w-]+)+|\./run\.sh"  # commands
    r'|\{.*\}|\[[\w, ]*\]|"[A-Za-z_][A-Za-z0-9_]*"'  # JSON, a binding's [node_id, input_name], a JSON key
    r"|\d+(?:[.:]\d+)+"  # numbers, versions, times of day
)
ASCII_PUNCTUATION = re.compile(r'[,;:?!()"]')
# A full stop is ASCII in a file name or a number; in prose it ends a sentence.
ASCII_FULL_STOP = re.compile(r"\.(?=\s|$)")


def ascii_punctuation(msgstr: str) -> list[str]:
    """The ASCII punctuation a Chinese sentence uses where it should use full-width
    (，。：；？！（）“”), outside code, placeholders, URLs and numbers."""
    if not CJK.search(msgstr):
        return []  # not a Chinese sentence (a name, a format, a code)
    prose = NOT_PROSE.sub("X", msgstr)
    return ASCII_PUNCTUATION.findall(prose) + ASCII_FULL_STOP.findall(prose)


def test_the_punctuation_check_finds_ascii_punctuation():
    assert ascii_punctuation("任务已取消.") == ["."]
    assert ascii_punctuation("错误: %(error)s") == [":"]
    assert ascii_punctuation("邮箱(可选)") == ["(", ")"]
    assert ascii_punctuation("后端 %(name)s 离线, 正在重试") == [","]
    assert ascii_punctuation('点击"保存"') == ['"', '"']
    assert ascii_punctuation("请运行：python manage.py migrate") == []
    assert ascii_punctuation("例如 <code>{\"prompt\": [\"6\", \"text\"]}</code>。") == []
    assert ascii_punctuation("%(seconds).1f 秒，版本 0.3.64，http://example.com/") == []
    assert ascii_punctuation("Y年n月j日 H:i") == [":"]  # a date format is skipped by its context instead


def test_chinese_sentences_use_full_width_punctuation(po):
    if not po.parts[-3].startswith("zh"):
        pytest.skip("Chinese catalogues only")
    found = []
    for e in parse_po(po):
        # A date format is not a sentence: its ASCII is the format's own syntax.
        if not e["msgid"] or e.get("msgctxt") == "date and time format":
            continue
        for key, text in translations(e).items():
            if ascii_punctuation(text):
                found.append(f"{where(po, e)} {key}: {ascii_punctuation(text)} in {text!r}")
    assert not found, "use ，。：；？！（）“” in Chinese sentences:\n" + "\n".join(found)


# --- strings that never reach the catalogue ----------------------------------------
# The catalogue checks above see only what is marked. These find English that is not:
# text written straight into a template, and Python literals in the places that reach
# readers. The zh-Hans walk (test_i18n_walk.py) finds the rest at run time.

ROOT = Path(settings.BASE_DIR)
TEMPLATE_DIRS = [ROOT / "templates"]


def _template_skeleton(source: str) -> str:
    """The template's own HTML with every tag and variable blanked out and the text of
    {% blocktranslate %} and {% comment %} blocks dropped: what is left is text written
    straight into the page."""
    from django.template.base import Lexer, TokenType

    out, skipping = [], None
    for token in Lexer(source).tokenize():
        if token.token_type == TokenType.BLOCK:
            name = token.contents.split()[0] if token.contents else ""
            if skipping is None and name in ("blocktranslate", "blocktrans", "comment"):
                skipping = "end" + name
            elif name == skipping:
                skipping = None
            out.append(" ")
        elif token.token_type == TokenType.TEXT and skipping is None:
            out.append(token.contents)
        elif token.token_type == TokenType.VAR:
            out.append(" ")
    return "".join(out)


def test_the_template_check_finds_unmarked_text():
    from tests.i18n_text import english_runs, visible_text

    source = ('{% load i18n %}<h1>{% translate "Generate" %}</h1><p>Plain words</p>'
              '<a title="Open it" href="{{ url }}">{{ name }}</a>'
              '{% blocktranslate %}Marked {{ x }} words{% endblocktranslate %}{# a note #}')
    assert english_runs(visible_text(_template_skeleton(source))) == ["Plain words", "Open it"]


def test_templates_mark_every_visible_text():
    from tests.i18n_text import english_runs, visible_text

    found = []
    for folder in TEMPLATE_DIRS:
        for path in sorted(folder.rglob("*.html")):
            runs = english_runs(visible_text(_template_skeleton(path.read_text(encoding="utf-8"))))
            found += [f"{path.relative_to(ROOT)}: {run!r}" for run in runs]
    assert not found, "text outside {% translate %} / {% blocktranslate %}:\n" + "\n".join(found)


# Python: where a literal reaches a reader. The API schema (DRF serializer fields,
# drf-spectacular's decorators) is documentation for app developers, in English like
# docs/api-contract.md; the command line and the plain-Python libraries (comfy, the demo
# engine) are not pages.
PYTHON_PACKAGES = ("accounts", "models_catalog", "generation", "config")
# api and api_input.py: the OpenAPI description, English by design (developer documentation).
PYTHON_SKIPPED = ("migrations", "management", "demo_engine", "comfy", "api", "api_input.py")
SHOWN_KEYWORDS = {"help_text", "verbose_name", "verbose_name_plural", "label", "description", "empty_label",
                  "title", "placeholder"}
SHOWN_ATTRS = {"placeholder", "title", "aria-label", "alt"}
SCHEMA_CALLS = {"extend_schema", "extend_schema_field", "extend_schema_view", "inline_serializer",
                "OpenApiParameter", "OpenApiResponse", "OpenApiExample", "add_argument", "ArgumentParser"}
MESSAGE_CALLS = {"debug", "info", "success", "warning", "error", "add_message", "message_user"}
ERROR_CALLS = {"ValidationError", "TaskStateError", "QuotaExceeded", "GenerationError", "TokenLimitReached",
               "WebhookUrlRefused"}
# A field's first argument is its verbose name, except a relation's (its model).
RELATION_FIELDS = {"ForeignKey", "OneToOneField", "ManyToManyField", "ForeignObject"}


def _words(node) -> bool:
    """A bare literal (or f-string) with words in it."""
    if isinstance(node, ast.JoinedStr):
        return True
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and bool(re.search(r"[A-Za-z]{2}", node.value)))


def _call_name(node: ast.Call) -> tuple[str, str]:
    """(the called name, the object it is called on) of `obj.name(...)` or `name(...)`."""
    func = node.func
    if isinstance(func, ast.Attribute):
        owner = func.value.id if isinstance(func.value, ast.Name) else getattr(func.value, "attr", "")
        return func.attr, owner
    return (func.id if isinstance(func, ast.Name) else ""), ""


def unmarked_literals(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value in SHOWN_ATTRS and _words(value):
                    found.append((value.lineno, f"{key.value}: {ast.unparse(value)}"))
        if not isinstance(node, ast.Call):
            continue
        name, owner = _call_name(node)
        if name in SCHEMA_CALLS or owner == "serializers":
            continue
        if (name in MESSAGE_CALLS and owner in ("messages", "self")) or name in ERROR_CALLS:
            found += [(arg.lineno, f"{name}({ast.unparse(arg)})") for arg in node.args if _words(arg)]
        if name.endswith("Field") and name not in RELATION_FIELDS and node.args and _words(node.args[0]):
            found.append((node.lineno, f"{name}({ast.unparse(node.args[0])}, …)"))
        found += [(kw.value.lineno, f"{kw.arg}={ast.unparse(kw.value)}") for kw in node.keywords
                  if kw.arg in SHOWN_KEYWORDS and _words(kw.value)]
    return sorted(found)


def test_the_python_check_finds_unmarked_literals():
    source = '''
messages.success(request, "Saved.")
messages.error(request, _("Marked."))
self.message_user(request, f"{name}: done")
name = models.CharField("name", max_length=10)
slug = forms.SlugField(label=_("Slug"), help_text="Plain help")
widget = forms.TextInput(attrs={"placeholder": "Type here"})
raise ValidationError("Too big")
url = serializers.CharField(help_text="API docs stay English")
'''
    assert [text for _line, text in unmarked_literals(source)] == [
        "success('Saved.')", "message_user(f'{name}: done')", "CharField('name', …)", "help_text='Plain help'",
        "placeholder: 'Type here'", "ValidationError('Too big')",
    ]


def test_python_marks_every_user_facing_literal():
    found = []
    for package in PYTHON_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if set(path.relative_to(ROOT).parts) & set(PYTHON_SKIPPED):
                continue
            found += [f"{path.relative_to(ROOT)}:{line}: {text}" for line, text in
                      unmarked_literals(path.read_text(encoding="utf-8"))]
    assert not found, "mark these for translation (gettext / gettext_lazy):\n" + "\n".join(found)


def test_messages_borrowed_from_django_and_django_q_are_still_missing_there_and_translated_here():
    """config/missing_translations.py (and .js, for the admin's scripts) list what
    Django's or django-q2's zh_Hans catalogue lacks; once a library translates one, it
    leaves the list."""
    import django
    import django_q

    tree = ast.parse((ROOT / "config" / "missing_translations.py").read_text(encoding="utf-8"))
    listed = {
        group.targets[0].id: [call.args[0].value for call in group.value.elts]
        for group in tree.body if isinstance(group, ast.Assign)
    }
    theirs = {
        "DJANGO": [p for p in Path(django.__file__).parent.rglob("zh_Hans/LC_MESSAGES/django.po")],
        "DJANGO_Q": [Path(django_q.__file__).parent / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"],
    }
    ours = {e["msgid"]: e for e in parse_po(ROOT / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po")}
    assert listed.keys() == theirs.keys()
    # The admin scripts' messages (djangojs), listed beside it in config/missing_translations.js.
    script = (ROOT / "config" / "missing_translations.js").read_text(encoding="utf-8")
    listed["DJANGO_JS"] = [ast.literal_eval(m) for m in re.findall(r"gettext_noop\(('(?:[^'\\]|\\.)*')\);", script)]
    theirs["DJANGO_JS"] = [Path(django.__file__).parent / "contrib" / "admin" / "locale" / "zh_Hans" / "LC_MESSAGES"
                           / "djangojs.po"]
    ours.update({e["msgid"]: e for e in parse_po(ROOT / "locale" / "zh_Hans" / "LC_MESSAGES" / "djangojs.po")})
    for group, msgids in listed.items():
        translated = {e["msgid"] for po in theirs[group] for e in parse_po(po)
                      if "fuzzy" not in e["flags"] and translations(e) and all(translations(e).values())}
        assert msgids and not set(msgids) & translated, f"{group}: now translated by the library itself"
        assert all(all(translations(ours[m]).values()) for m in msgids)


# --- stored in English, shown in the reader's language -----------------------------


def test_built_in_catalog_texts_read_in_chinese_and_staff_words_as_written(db):
    from models_catalog.builtin import DEMO_DESCRIPTION, ensure_builtin_templates
    from models_catalog.models import Checkpoint, WorkflowTemplate

    ensure_builtin_templates(WorkflowTemplate)
    txt2img = WorkflowTemplate.objects.get(slug="txt2img-basic")
    demo = Checkpoint(name="demo-sd15", ckpt_name="demo-sd15.safetensors", description=DEMO_DESCRIPTION)
    staff = WorkflowTemplate(slug="mine", name="Text to image", description="Starts from your picture; "
                             "denoise sets how far the result may move away from it.")
    with translation.override("zh-hans"):
        assert (txt2img.shown_name, str(txt2img)) == ("文生图", "文生图")
        assert txt2img.shown_description == "模型、提示词和反向提示词，从空白潜空间开始采样。"
        assert demo.shown_description == "内置演示引擎：生成带标注的占位图片，无需 GPU，并非 AI 生成。"
        # A template staff made holds the same words: theirs, shown as written.
        assert staff.shown_name == "Text to image" and staff.shown_description.startswith("Starts from")
        # A built-in one staff renamed: their name.
        txt2img.name = "Quick draft"
        assert txt2img.shown_name == "Quick draft"
    assert txt2img.description == "Checkpoint, prompt and negative prompt, sampled from an empty latent."


def test_the_template_list_api_names_built_in_templates_in_the_requests_language(signed_in):
    from models_catalog.builtin import ensure_builtin_templates
    from models_catalog.models import WorkflowTemplate

    ensure_builtin_templates(WorkflowTemplate)
    names = {t["slug"]: t["name"] for t in signed_in.get("/api/v1/templates", HTTP_ACCEPT_LANGUAGE="zh-Hans")
             .json()["results"]}
    assert names == {"txt2img-basic": "文生图", "img2img-basic": "图生图", "txt2img-loras": "文生图（LoRA）",
                     "hires-fix": "高清修复", "upscale": "放大图片", "inpaint": "局部重绘"}
    english = signed_in.get("/api/v1/templates", HTTP_ACCEPT_LANGUAGE="en").json()["results"]
    assert {t["name"] for t in english} == {"Text to image", "Image to image", "Text to image with LoRAs",
                                            "Hires fix", "Upscale an image", "Inpaint"}


def test_a_comfyui_execution_error_is_stored_in_english_and_read_in_chinese(db):
    from generation.comfy import describe_execution_error
    from generation.task_text import message_fields, render, text

    error = describe_execution_error({"node_id": "3", "node_type": "KSampler", "exception_type": "RuntimeError",
                                      "exception_message": "CUDA out of memory"})
    assert error == "KSampler (node 3) failed: RuntimeError: CUDA out of memory"
    stored = message_fields("error", text(error.msgid, **error.params))
    assert stored["error_message"] == error
    with translation.override("zh-hans"):
        assert render(stored["error_params"], stored["error_message"]) == \
            "KSampler（节点 3）出错：RuntimeError: CUDA out of memory"
        assert render(text(describe_execution_error({}).msgid).stored(), "interrupted") == "已中断"


def test_a_comfyui_rejection_is_stored_in_english_and_read_in_chinese_field_by_field(signed_in):
    from generation.comfy import ComfyPromptRejected
    from generation.fleet.runner import rejected
    from generation.transitions import _failed

    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
            "node_errors": {"3": {"class_type": "KSampler", "errors": [
                {"type": "value_smaller_than_min", "message": "Value -1 smaller than min of 1",
                 "extra_info": {"input_name": "steps", "input_config": ["INT", {"min": 1}]}},
                {"type": "invalid_input_type", "message": "Failed to convert", "details": "cfg, abc",
                 "extra_info": {"input_name": "cfg", "input_config": ["FLOAT", {}]}}]}}}
    failure = rejected(ComfyPromptRejected(400, body), {"steps": ["3", "steps"], "cfg": ["3", "cfg"]})
    task = GenerationTask.objects.get()
    GenerationTask.objects.filter(pk=task.pk).update(**_failed(failure.code, failure.message, failure.fields, None))
    task.refresh_from_db()
    assert task.error_message == "steps must be at least 1; cfg must be a number"  # stored in English
    assert task.error_fields == {"steps": ["steps must be at least 1"], "cfg": ["cfg must be a number"]}
    with translation.override("zh-hans"):
        assert task.error_text == "步数不能小于 1；CFG必须是数字"
        assert task.error_fields_text == {"steps": ["步数不能小于 1"], "cfg": ["CFG必须是数字"]}
    assert_has(get(signed_in, f"/tasks/{task.pk}/", "zh-Hans"), "步数不能小于 1", "CFG必须是数字")


def test_health_checks_keep_their_names_for_scripts_and_read_in_chinese(db):
    from generation.ops.doctor import Check

    check = Check("backend:gpu-1", "warning", "…")
    with translation.override("zh-hans"):
        assert (check.name, check.level) == ("backend:gpu-1", "warning")
        assert (check.label, check.level_label) == ("后端 gpu-1", "警告")
        assert (Check("migrations", "ok", "").label, Check("clock", "error", "").level_label) == ("数据库迁移", "错误")


def test_the_studio_operator_group_keeps_its_name_and_reads_in_chinese(operator_group):
    from django.contrib.auth.models import Group, Permission

    group = operator_group
    mine = Group.objects.create(name="night shift")
    permission = Permission.objects.get(codename="change_generationtask")
    with translation.override("zh-hans"):
        assert (str(group), str(mine)) == ("工作室运营", "night shift")
        assert str(permission) == "生成 | 生成任务 | 可以修改生成任务"
    assert str(permission) == "Generation | generation task | Can change generation task"


def test_sign_in_tokens_are_listed_by_their_kind_in_the_readers_language(client, user):
    from accounts.models import ApiToken
    from accounts.services import token_create

    token_create(user=user, kind=ApiToken.Kind.SIGN_IN)
    client.force_login(user)
    html = get(client, "/accounts/me/", "zh-Hans")
    assert '<td class="tokens__name">登录</td>' in html
    assert_lacks(html, "sign-in")


def test_webhook_errors_are_stored_in_english_and_read_in_chinese(db, user):
    from generation.models import WebhookDelivery
    from generation.webhooks.delivery import webhook_deliver

    delivery = WebhookDelivery.objects.create(user=user, event="task.completed", url="http://10.0.0.1/hook",
                                              message_id="msg_1", payload={})
    webhook_deliver(delivery.pk)  # no token: never sent, and no network either
    delivery.refresh_from_db()
    assert delivery.last_error.startswith("The API token this task was created with has been deleted")
    with translation.override("zh-hans"):
        assert delivery.error_text.startswith("创建此任务所用的 API 令牌已被删除")
