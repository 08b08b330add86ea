"""What the API reads, checked at the door: query parameters and JSON request bodies.

Every integer the API reads from a query string is checked here against the range the
database holds (config.bounds) and the parameter's own, and refused with a 400 naming
it. An empty value (`?limit=`) is the same as leaving the parameter out, as DRF's
serializers already read query strings; the schema says so with `allowEmptyValue`.

A JSON body's values must have the types the schema gives them (`JsonInput`): DRF
would read `{"name": 0}` as the text "0" and `{"steps": "8"}` as the number 8, which
the schema does not promise. Form bodies are all text and are read as DRF reads them.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Mapping

from django.http import QueryDict
from django.utils.translation import gettext as _, gettext_lazy
from drf_spectacular.utils import OpenApiParameter
from rest_framework import pagination, serializers

from config.api_errors import ApiError, error_response
from config.bounds import ID_MIN, INT64_MAX

# What a yes/no query parameter (`?download=`) accepts, pages and API alike.
YES = frozenset({"1", "true", "yes", "on"})
NO = frozenset({"0", "false", "no", "off"})

# Plain ASCII digits only: int() would also take "1_000", " 7 " and other scripts' digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")


class QueryIntegerField(serializers.IntegerField):
    """An integer as a query string spells it: digits only (no "1.0", no "1_000"), in range."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_value", INT64_MAX)
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> int:
        text = str(data)
        if not _INTEGER.fullmatch(text):
            self.fail("invalid")
        # 19 digits hold every 64-bit value: longer is out of range, refused without
        # building the number (int()'s cost grows with the length).
        if len(text.lstrip("+-").lstrip("0")) > 19:
            self.fail("min_value" if text.startswith("-") else "max_value",
                      min_value=self.min_value, max_value=self.max_value)
        return int(text)


def _invalid(name: str, messages: list[str]) -> ApiError:
    return ApiError(code="invalid", message=messages[0], fields={name: messages})


def query_int(params, name: str, *, minimum: int = ID_MIN, maximum: int = INT64_MAX) -> int | None:
    """The integer query parameter `name`, or None when absent or empty; 400 naming it otherwise."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    field = QueryIntegerField(min_value=minimum, max_value=maximum)
    try:
        return field.run_validation(raw)
    except serializers.ValidationError as exc:
        raise _invalid(name, [str(m) for m in exc.detail]) from None


def query_bool(params, name: str) -> bool:
    """A yes/no query parameter: 1/true/yes/on or 0/false/no/off (any case); empty or absent is no."""
    raw = (params.get(name) or "").strip().lower()
    if raw in YES:
        return True
    if raw in NO or raw == "":
        return False
    raise _invalid(name, [_("Use 1, true, yes or on for yes; 0, false, no or off for no.")])


class PageNumberPagination(pagination.PageNumberPagination):
    """DRF's page numbers with `page` and `page_size` checked like every integer parameter.

    DRF silently ignores a malformed `page_size` and lets a page number beyond 64 bits
    reach the paginator; here both are a 400 naming the parameter. A `page_size` over
    `max_page_size` is still clamped to it, and a page past the end is still a 404.
    """

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request) -> int:
        size = query_int(request.query_params, self.page_size_query_param)
        return self.page_size if size is None else min(size, self.max_page_size)

    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param)
        if raw in self.last_page_strings:
            return paginator.num_pages
        return query_int(request.query_params, self.page_query_param) or 1


def int_parameter(name: str, *, description: str = "", minimum: int = ID_MIN, maximum: int = INT64_MAX,
                  deprecated: bool = False) -> OpenApiParameter:
    """An integer query parameter as the schema states it, with the range the server checks."""
    return OpenApiParameter(name, {"type": "integer", "minimum": minimum, "maximum": maximum},
                            description=description, deprecated=deprecated)


def page_error_responses() -> dict:
    """The error answers of a page-numbered list: a malformed parameter, a page past the end."""
    return {400: error_response(400), 404: error_response(404, description=gettext_lazy("A page past the end."))}


def page_parameters(paginator: type[PageNumberPagination]) -> list[OpenApiParameter]:
    """`page` and `page_size` of a page-numbered list."""
    return [
        int_parameter(paginator.page_query_param, description="A page number (from 1); past the last page: 404."),
        int_parameter(paginator.page_size_query_param,
                      description=f"Items per page (default {paginator.page_size}; "
                                  f"over {paginator.max_page_size} is clamped to {paginator.max_page_size})."),
    ]


# The JSON types each kind of field's schema states (a subclass, e.g. URLField, as its base).
_JSON_TYPES = (
    (serializers.BooleanField, (bool,)),
    (serializers.IntegerField, (int,)),
    (serializers.FloatField, (int, float)),
    (serializers.CharField, (str,)),
)


def _wrong_json_type(field: serializers.Field, value) -> str | None:
    """DRF's own message when a JSON value has another type than the field's, else None."""
    if value is None:
        return None  # null is the field's to judge (allow_null)
    for kind, types in _JSON_TYPES:
        if isinstance(field, kind):
            if isinstance(value, bool):
                wrong = bool not in types  # a bool is an int to Python, not to JSON
            elif kind is serializers.IntegerField and isinstance(value, float):
                wrong = not value.is_integer()  # JSON Schema counts 8.0 as an integer
            else:
                wrong = not isinstance(value, types)
            return kind.default_error_messages["invalid"] if wrong else None
    return None


class JsonInput(serializers.Serializer):
    """A request body of the API: from JSON, each value has the type of its field."""

    def get_fields(self):
        # DRF deep-copies the declared fields for every serializer it makes, and a field's
        # deep copy is the field built again from its arguments (a sixth of a create's
        # CPU in the web process). A shallow copy serves as well: binding sets the copy's
        # own attributes, and what copies share (validators, choices, messages) nothing
        # changes once the field is built. A nested serializer is still copied deeply.
        return {name: copy.deepcopy(field) if isinstance(field, serializers.BaseSerializer) else copy.copy(field)
                for name, field in self._declared_fields.items()}

    def to_internal_value(self, data):
        if isinstance(data, Mapping) and not isinstance(data, QueryDict):
            errors = {}
            for name, field in self.fields.items():
                message = None if field.read_only or name not in data else _wrong_json_type(field, data[name])
                if message:
                    errors[name] = [message]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)
