"""Turn ComfyUI's error payloads into messages for Easel users.

POST /prompt rejections are mapped back onto Easel form fields through the same
bindings used to render the workflow ({field: [node_id, input_name]}), so a bad step
count is shown next to the "steps" field rather than as "node 3 failed validation".
"""

from __future__ import annotations

import re
from typing import Any

from .client import ComfyPromptRejected, ComfyProtocolError, ComfyUnreachable

ALL = "__all__"


def gettext_noop(message: str) -> str:
    """Marks a message id for makemessages, like Django's own (this package is plain
    Python and imports no Django): Easel translates the message where it shows it."""
    return message


class Message(str):
    """A message in English that also carries its message id and parameters, so that
    Easel can show it again in the reader's language (generation.task_text). It is the
    English text for everything else: logs, comparisons, `str()`. A parameter may be a
    Message itself (a field's name, one of several messages joined)."""

    msgid: str
    params: dict

    def __new__(cls, msgid: str, **params) -> "Message":
        message = super().__new__(cls, msgid % params if params else msgid)
        message.msgid, message.params = msgid, params
        return message


def _joined(messages: list) -> Message | str:
    """Several messages as one, in order ("a; b; c"), each still translatable."""
    if len(messages) == 1:
        return messages[0]
    return Message(gettext_noop("%(first)s; %(rest)s"), first=messages[0], rest=_joined(messages[1:]))


# Top-level error types that are not about any single node.
_TOP_LEVEL = {
    "no_prompt": gettext_noop("ComfyUI received no workflow"),
    "prompt_no_outputs": gettext_noop("the workflow has no output node (SaveImage or PreviewImage)"),
}
# ComfyUI's own 500 answer to a graph it cannot read, by whether Easel knows the HTTP
# status and whether ComfyUI said something (its first line is quoted as it wrote it).
_NOT_API_FORMAT = {
    (True, True): gettext_noop(
        "ComfyUI could not process the workflow (HTTP %(status)s); it is probably not in API format: %(said)s"),
    (True, False): gettext_noop(
        "ComfyUI could not process the workflow (HTTP %(status)s); it is probably not in API format"),
    (False, True): gettext_noop("ComfyUI could not process the workflow; it is probably not in API format: %(said)s"),
    (False, False): gettext_noop("ComfyUI could not process the workflow; it is probably not in API format"),
}
# Easel's parameters as the messages name them (translated where they are shown).
_LABELS = {
    "checkpoint": gettext_noop("checkpoint"), "prompt": gettext_noop("prompt"),
    "negative_prompt": gettext_noop("negative prompt"), "image": gettext_noop("image"),
    "denoise": gettext_noop("denoise"), "width": gettext_noop("width"), "height": gettext_noop("height"),
    "batch_size": gettext_noop("batch size"), "seed": gettext_noop("seed"), "steps": gettext_noop("steps"),
    "cfg": gettext_noop("cfg"), "sampler": gettext_noop("sampler"), "scheduler": gettext_noop("scheduler"),
}


def describe_rejection(exc_or_body: Any, bindings: dict[str, list]) -> tuple[str, dict[str, list[str]]]:
    """-> (one readable message, {easel_field or "__all__": [messages]}).

    Every message is a Message (its English text, its message id and parameters), so
    Easel shows it in the reader's language; ComfyUI's own words inside it (its error
    messages and details, the values it received) stay as ComfyUI wrote them.
    """
    if isinstance(exc_or_body, ComfyPromptRejected):
        status, body = exc_or_body.status, exc_or_body.body
    else:
        status, body = None, exc_or_body
    fields: dict[str, list[str]] = {}

    if not isinstance(body, dict):
        # 500 text/plain: ComfyUI crashed on a prompt that is not an API-format dict.
        said = str(body or "").strip().splitlines()
        msgid = _NOT_API_FORMAT[(bool(status), bool(said))]
        params = {"status": status} if status else {}
        if said:
            params["said"] = said[0]
        msg = Message(msgid, **params)
        fields[ALL] = [msg]
        return msg, fields

    error = body.get("error")
    if isinstance(error, str):
        error = {"message": error}
    node_errors = body.get("node_errors") if isinstance(body.get("node_errors"), dict) else {}
    by_binding = {_key(b): field for field, b in bindings.items() if _key(b)}

    for node_id, node_error in node_errors.items():
        node_error = node_error if isinstance(node_error, dict) else {}
        class_type = node_error.get("class_type") or "node"
        errs = [e for e in node_error.get("errors") or [] if isinstance(e, dict)]
        if not errs:
            fields.setdefault(ALL, []).append(Message(
                gettext_noop("%(class_type)s (node %(node_id)s) failed validation"), class_type=class_type,
                node_id=node_id))
        for err in errs:
            input_name = (err.get("extra_info") or {}).get("input_name")
            field = by_binding.get((str(node_id), input_name)) if input_name else None
            if field:
                fields.setdefault(field, []).append(_field_message(field, class_type, err))
            else:
                fields.setdefault(ALL, []).append(_node_message(node_id, class_type, err))

    if isinstance(error, dict) and (error.get("type") != "prompt_outputs_failed_validation" or not fields):
        # For prompt_outputs_failed_validation the top-level error only says "Prompt
        # outputs failed validation" with empty details; node_errors has the substance.
        known = _TOP_LEVEL.get(error.get("type") or "")
        top = Message(known) if known else error.get("message") or Message(gettext_noop("the workflow was rejected"))
        details = error.get("details")
        if details and details not in top and not known:
            top = Message(gettext_noop("%(error)s (%(details)s)"), error=top, details=details)
        fields.setdefault(ALL, []).insert(0, top)

    if not fields:
        fields[ALL] = [Message(gettext_noop("ComfyUI rejected the workflow"))]
    messages = [m for msgs in fields.values() for m in msgs]
    summary = _joined(list({str(m): m for m in messages}.values()))
    if status == 200:
        # Accepted-but-pruned graphs: say why the job is not run as asked.
        summary = Message(gettext_noop("part of the workflow is invalid: %(problems)s"), problems=summary)
    return summary, fields


def _key(binding: Any) -> tuple[str, str] | None:
    if isinstance(binding, (list, tuple)) and len(binding) == 2:
        return str(binding[0]), str(binding[1])
    return None


def _label(field: str) -> Message | str:
    return Message(_LABELS[field]) if field in _LABELS else field.replace("_", " ")


def _field_message(field: str, class_type: str, err: dict) -> Message:
    etype = err.get("type")
    extra = err.get("extra_info") or {}
    received = extra.get("received_value")
    config = extra.get("input_config")
    opts = config[1] if isinstance(config, list) and len(config) > 1 and isinstance(config[1], dict) else {}
    label = _label(field)

    if etype == "value_not_in_list":
        if field == "checkpoint" or extra.get("input_name") == "ckpt_name":
            return Message(gettext_noop("model '%(name)s' is not installed on this backend"), name=received)
        return Message(gettext_noop("%(label)s '%(value)s' is not available on this backend"), label=label,
                       value=received)
    if etype == "value_smaller_than_min":
        bound = opts.get("min", _number_in(err.get("message"), "min of"))
        if bound is None:
            return Message(gettext_noop("%(label)s is too small"), label=label)
        return Message(gettext_noop("%(label)s must be at least %(bound)s"), label=label, bound=bound)
    if etype == "value_bigger_than_max":
        bound = opts.get("max", _number_in(err.get("message"), "max of"))
        if bound is None:
            return Message(gettext_noop("%(label)s is too large"), label=label)
        return Message(gettext_noop("%(label)s must be at most %(bound)s"), label=label, bound=bound)
    if etype == "invalid_input_type":
        kind = config[0] if isinstance(config, list) and config else None
        if kind == "INT":
            return Message(gettext_noop("%(label)s must be a whole number"), label=label)
        if kind == "FLOAT":
            return Message(gettext_noop("%(label)s must be a number"), label=label)
        return Message(gettext_noop("%(label)s has the wrong type"), label=label)
    if etype == "required_input_missing":
        return Message(gettext_noop("%(label)s is required"), label=label)
    if etype == "custom_validation_failed":
        details = str(err.get("details") or "")
        if class_type == "LoadImage" or "Invalid image file" in details:
            name = details.split("Invalid image file:", 1)[-1].strip() if "Invalid image file" in details else ""
            if name:
                return Message(gettext_noop("the input image '%(name)s' is missing on this backend; upload it again"),
                               name=name)
            return Message(gettext_noop("the input image is missing on this backend; upload it again"))
        return Message(gettext_noop("%(label)s is invalid: %(details)s"), label=label,
                       details=details.split(" - ", 1)[-1] or err.get("message"))
    return Message(gettext_noop("%(label)s: %(problem)s"), label=label, problem=_raw(err))


def _node_message(node_id: Any, class_type: str, err: dict) -> Message:
    input_name = (err.get("extra_info") or {}).get("input_name")
    if input_name:
        return Message(gettext_noop("%(class_type)s (node %(node_id)s), input '%(input)s': %(problem)s"),
                       class_type=class_type, node_id=node_id, input=input_name, problem=_raw(err))
    return Message(gettext_noop("%(class_type)s (node %(node_id)s): %(problem)s"), class_type=class_type,
                   node_id=node_id, problem=_raw(err))


def _raw(err: dict) -> str:
    """ComfyUI's own words about one error, as it wrote them."""
    message = str(err.get("message") or err.get("type") or "invalid")
    details = str(err.get("details") or "")
    return f"{message} ({details})" if details and details != message else message


def _number_in(message: Any, marker: str) -> str | None:
    # "Value -1 smaller than min of 1" -> "1"; only used when input_config lacks the bound.
    m = re.search(re.escape(marker) + r"\s+(-?[\d.]+)", str(message or ""))
    return m.group(1) if m else None


def describe_execution_error(data: dict) -> Message:
    """Readable one-liner for execution_error (or execution_interrupted) data.

    ComfyUI's own words, the exception's type and message, are kept as ComfyUI wrote
    them (one parameter); the words around them are Easel's and get translated.
    """
    data = data or {}
    if "exception_message" not in data and "exception_type" not in data:
        # execution_interrupted carries only prompt_id/node_id/node_type/executed.
        return Message(gettext_noop("interrupted"))
    node_type, node_id = data.get("node_type"), data.get("node_id")
    etype = data.get("exception_type") or "Error"
    emsg = str(data.get("exception_message") or "").strip()
    exception = f"{etype}: {emsg}" if emsg else str(etype)
    if node_type and node_id is not None:
        return Message(gettext_noop("%(node_type)s (node %(node_id)s) failed: %(exception)s"),
                       node_type=node_type, node_id=node_id, exception=exception)
    if node_type:
        return Message(gettext_noop("%(node_type)s failed: %(exception)s"), node_type=node_type, exception=exception)
    if node_id is not None:
        return Message(gettext_noop("node %(node_id)s failed: %(exception)s"), node_id=node_id, exception=exception)
    return Message(gettext_noop("ComfyUI failed: %(exception)s"), exception=exception)


def is_transient(exc: BaseException) -> bool:
    """True when retrying later may help (server down or overloaded), False for errors
    that will repeat (the graph itself is wrong)."""
    if isinstance(exc, ComfyPromptRejected):
        return False
    if isinstance(exc, ComfyUnreachable):
        return True
    if isinstance(exc, ComfyProtocolError):
        return exc.status is not None and exc.status >= 500
    return isinstance(exc, (ConnectionError, TimeoutError))
