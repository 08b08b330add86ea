"""The API's request parsers (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES).

JSON: Python's parser recurses once per nested list or object, so a few kilobytes of
`[[[[…]]]]` end in a RecursionError, a 500. The nesting is measured first, without
recursion, and a body deeper than MAX_JSON_DEPTH is a 400 like any malformed JSON.

Multipart: a file refused while it streamed (config.uploads) is a 413 naming its field.
"""
from __future__ import annotations

import codecs
import re

from django.conf import settings
from django.utils.translation import gettext as _
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json

from config.uploads import UploadTooLarge, upload_refused

# Far above what any request of the API needs (its bodies are flat objects), far below
# the interpreter's recursion limit.
MAX_JSON_DEPTH = 64

# A JSON string (brackets inside it do not count) or a bracket.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')


def json_too_deep(text: str, *, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the lists and objects of a JSON text nest deeper than `limit`."""
    # Fewer brackets than the limit cannot nest past it: most bodies stop here.
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(stream.read(), encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(_("The JSON body is not valid text in %(encoding)s.") % {"encoding": encoding}) from exc
        if json_too_deep(text):
            raise ParseError(_("The JSON body nests lists or objects more than %(limit)d deep.")
                             % {"limit": MAX_JSON_DEPTH})
        try:
            return json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except ValueError as exc:
            raise ParseError(_("JSON parse error - %(error)s") % {"error": exc}) from exc


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        field = upload_refused(parser_context["request"])
        if field is not None:
            raise UploadTooLarge(field=field)
        return parsed
