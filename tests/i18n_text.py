"""What a reader sees of a page, and the English left in it.

Shared by the zh-Hans walk (tests/test_i18n_walk.py, Django's test client) and its
browser half (tests/e2e/test_browser_i18n.py, the text scripts write). Both hand the
visible text to `english_runs`, which strips what may stay in Latin letters (what the
test itself wrote as user data, ComfyUI's and the system's own words, code, names of
products and formats) and returns every run of English words that remains.
"""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

# Elements whose content is not prose for the reader: code (commands, JSON graphs,
# identifiers), the scripts and styles themselves, and form data a person typed
# (a textarea holds a prompt or a graph, never Easel's words).
SKIPPED = {"script", "style", "template", "code", "kbd", "samp", "pre", "textarea"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# Attributes a reader meets: tooltips, alternative text, screen-reader labels,
# placeholders, and the questions and labels the pages' scripts show (data-confirm…).
SHOWN_ATTRIBUTES = {
    "title", "alt", "aria-label", "placeholder", "label",
    "data-confirm", "data-confirm-one", "data-confirm-other", "data-copied", "data-copy-failed",
    "data-selected-label",
}
# Icons whose alt text django.contrib.admin writes without gettext, so no catalogue can
# change it: the yes/no/unknown icons (str(True)…, _boolean_icon) and the search box's
# magnifier (alt="Search" in admin/search_form.html).
ADMIN_ICON = re.compile(r"/admin/img/(icon-yes|icon-no|icon-unknown|search)\.svg$")
# json_script blocks whose strings the pages' scripts write into the page as text.
SHOWN_JSON = {
    "checkpoint-info": lambda data: [v.get("description", "") for v in data.values()],
    "template-info": lambda data: [v.get("description", "") for v in data.values()],
    "task-poll": lambda data: list((data.get("labels") or {}).values()),
    "easel-time": lambda data: [v for k, v in data.items() if k != "now" for v in (v if isinstance(v, list) else [v])],
    "viewer-labels": lambda data: list(data.values()),
}


class _Visible(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self._skip: list[str] = []  # the open elements whose content is skipped
        self._json: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self._skip:
            if tag == self._skip[-1] or (tag not in VOID and self._skip[-1] == "*" + tag):
                self._skip.append(self._skip[-1])
            return
        lang = (attrs.get("lang") or "").lower()
        if lang and not lang.startswith("zh"):
            # On purpose in another language: the language switcher names English in English.
            if tag not in VOID:
                self._skip.append("*" + tag)
            return
        for name in SHOWN_ATTRIBUTES & attrs.keys():
            if name == "alt" and ADMIN_ICON.search(attrs.get("src") or ""):
                continue
            self.pieces.append(attrs[name] or "")
        if tag == "input" and (attrs.get("type") or "").lower() in ("submit", "button", "reset"):
            self.pieces.append(attrs.get("value") or "")
        if tag == "script" and attrs.get("type") == "application/json" and attrs.get("id") in SHOWN_JSON:
            self._json = attrs["id"]
        if tag in SKIPPED:
            self._skip.append(tag)

    def handle_endtag(self, tag):
        if self._skip and self._skip[-1] in (tag, "*" + tag):
            self._skip.pop()

    def handle_data(self, data):
        if self._json:
            pick, self._json = SHOWN_JSON[self._json], None
            self.pieces.extend(str(v) for v in pick(json.loads(data)) if v)
            return
        if not self._skip:
            self.pieces.append(data)


def visible_text(html: str) -> list[str]:
    """The text pieces of an HTML page a reader sees or hears, in document order."""
    parser = _Visible()
    parser.feed(html)
    parser.close()
    return [" ".join(p.split()) for p in parser.pieces if p.strip()]


# --- what may stay in Latin letters ---------------------------------------------------

# Each entry is a word that stays as it is in a Chinese sentence, and why. Only words the
# walk meets are here.
ALLOWED_WORDS = {
    # Product names: the studio's own, and Django's (the admin's "Django Q" app).
    "Easel", "Django",
    # Abbreviations and formats Chinese technical writing keeps in Latin letters.
    "API", "AI", "CFG", "CSV", "GPU", "ID", "JPEG", "PNG", "URL", "zip",
    # File size units of Django's filesizeformat, which its Chinese keeps ("1.2 KB").
    "KB", "MB", "GB",
    # A setting the doctor's advice names ("DEBUG 已开启").
    "DEBUG",
    # A term Chinese technical writing keeps in English, as Easel's catalogue does.
    "Webhook",
    # Key, platform and protocol names in Django's own Chinese help texts ("按住 Control
    # 键，或者 Mac 上的 Command 键"; "例如单一登入或LDAP").
    "Control", "Command", "Mac", "LDAP",
}
# Shell commands in advice ("python manage.py migrate"): typed as written.
COMMAND = re.compile(r"(?:python\d? )?manage\.py(?: [\w:-]+)*(?: --?[\w-]+(?:=\S+)?)*|\./run\.sh")
URLISH = re.compile(r"\b(?:https?|wss?)://\S+|\S+@\S+\.\w+|(?<![\w.])/[\w./?=&%#-]*")
WORD = re.compile(r"[A-Za-z0-9_.’'/-]*[A-Za-z][A-Za-z0-9_.’'/-]*")
ENGLISH_WORD = re.compile(r"[A-Za-z]+(?:[-’'][A-Za-z]+)*")
# Code names: ComfyUI's node classes (KSampler, CheckpointLoaderSimple) and products
# spelled with an inner capital (ComfyUI, WebP, PostgreSQL) are identifiers.
INNER_CAPITAL = re.compile(r"[a-z][A-Z]|[A-Z]{2}[a-z]")
CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")


# A label a page's script fills in ("第 %(value)s 步，共 %(max)s 步"): its placeholders are
# not words anybody reads.
PLACEHOLDER = re.compile(r"%\(\w+\)[sdif]")


# A secret shown masked, as the admin shows a password's salt and hash ("dbfd**********"):
# its random first letters are not words either.
MASKED = re.compile(r"[\w+/=]*\*{3,}")


def _strip(text: str, literals: list[str], patterns=()) -> str:
    text = PLACEHOLDER.sub(" ", text)
    text = MASKED.sub(" ", text)
    for pattern in patterns:
        text = re.sub(pattern, " ", text)
    for literal in literals:
        # Whole words only (a backend called "demo" leaves "demo-sdxl" alone), and
        # whatever the case of the first letter (the admin capitalises its messages).
        first, rest = literal[0], re.escape(literal[1:])
        text = re.sub(rf"(?<![\w-])[{re.escape(first.lower())}{re.escape(first.upper())}]{rest}(?![\w-])", " ", text)
    text = COMMAND.sub(" ", text)
    return URLISH.sub(" ", text)


def _english(token: str, allowed: set[str]) -> bool:
    word = token.strip(".-’'/")
    if not ENGLISH_WORD.fullmatch(word):
        return False  # digits, underscores, dots or slashes inside: a name, a file, a number
    if sum(c.isalpha() for c in word) < 2 or word in allowed or INNER_CAPITAL.search(word):
        return False
    return True


def english_runs(pieces: list[str], *, ignore: list[str] = (), patterns=(),
                  allowed_words: set[str] = frozenset()) -> list[str]:
    """Each run of English words left in the pieces.

    `ignore`: literal texts that may appear (what the test wrote as user data, the
    words of ComfyUI or the operating system quoted in a message); matched as whole
    words, longest first. `patterns`: regular expressions for such texts.
    `allowed_words` adds to ALLOWED_WORDS.
    """
    literals = sorted({s for s in ignore if s}, key=len, reverse=True)
    allowed = ALLOWED_WORDS | set(allowed_words)
    runs = []
    for piece in pieces:
        cleaned = _strip(piece, literals, patterns)
        current: list[str] = []
        for match in re.finditer(r"\S+", cleaned):
            chunk = match.group()
            words = WORD.findall(chunk)
            if not words:
                continue  # numbers and punctuation neither make nor end a run
            english = [w for w in words if _english(w, allowed)]
            if english and len(english) == len(words) and not CJK.search(chunk):
                current.append(chunk)
                continue
            # Chinese, or a name, ends the run.
            if current:
                runs.append(" ".join(current))
                current = []
            if english:
                runs.append(" ".join(english))
        if current:
            runs.append(" ".join(current))
    return runs
