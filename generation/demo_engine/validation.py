"""ComfyUI-style prompt validation (a port of ``execution.validate_prompt`` / ``validate_inputs``, 0.3.64).

The error dicts, their wording and the ``node_errors`` layout are copied from ComfyUI because clients display and
parse them. Like ComfyUI, validation converts widget values in place (``"7"`` → ``7.0`` for a FLOAT), and any
unexpected exception (e.g. a prompt that is a string) propagates so the HTTP layer can answer 500.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

from .nodes import NODE_CLASSES, input_types
from .options import EngineOptions

#: ComfyUI stops printing combo options past this length and sends ``input_config: null``.
MAX_LISTED_OPTIONS = 20


@dataclass
class ValidationResult:
    """``(valid, error, good_outputs, node_errors)`` of ComfyUI's ``validate_prompt``."""

    ok: bool
    error: dict[str, Any] | None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)


def _error(kind: str, message: str, details: str = "", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra or {}}


def full_type_name(klass: type) -> str:
    """``RuntimeError`` for builtins, ``module.Qualname`` otherwise (``PIL.UnidentifiedImageError``)."""
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


def is_link(value: Any) -> bool:
    """A link is ``[node_id, output_index]``; any list is treated as one (then checked for length)."""
    return isinstance(value, list)


def _types_match(received: str, expected: Any) -> bool:
    """ComfyUI's ``validate_node_input``: equal, ``*`` wildcard, or overlapping comma-separated unions."""
    if isinstance(expected, list):  # a combo fed by a link
        return received in ("COMBO", "*")
    if received == expected or "*" in (received, expected):
        return True
    return bool(set(str(received).split(",")) & set(str(expected).split(",")))


def validate_prompt(options: EngineOptions, prompt: Any) -> ValidationResult:
    """Validate an API-format prompt; returns the outputs to execute and per-node errors."""
    outputs: list[str] = []
    for node_id in prompt:  # a non-dict prompt fails here or below with a TypeError → HTTP 500
        if not isinstance(prompt[node_id], dict):
            # ComfyUI crashes on these too (a UI-format workflow, a string, a list): the caller answers 500.
            raise TypeError(f"node {node_id!r} is not an object")
        if "class_type" not in prompt[node_id]:
            return ValidationResult(False, _error(
                "invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'"))
        class_type = prompt[node_id]["class_type"]
        node_class = NODE_CLASSES.get(class_type)
        if node_class is None:
            return ValidationResult(False, _error(
                "invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                f"Node ID '#{node_id}'"))
        if node_class.output_node:
            outputs.append(node_id)

    if not outputs:
        return ValidationResult(False, _error("prompt_no_outputs", "Prompt has no outputs"))

    good_outputs: list[str] = []
    failures: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    validated: dict[str, tuple[bool, list[dict[str, Any]], str]] = {}
    for output in outputs:
        try:
            valid, reasons, _ = _validate_inputs(options, prompt, output, validated)
        except Exception as ex:  # noqa: BLE001 - mirrors ComfyUI: any crash invalidates this output only
            typ, _, tb = sys.exc_info()
            valid = False
            reasons = [_error("exception_during_validation", "Exception when validating node", str(ex), {
                "exception_type": full_type_name(typ or type(ex)), "traceback": traceback.format_tb(tb)})]
            validated[output] = (False, reasons, output)
        if valid:
            good_outputs.append(output)
            continue
        failures.append((output, reasons))
        # Report every failed node that has reasons of its own (downstream nodes fail silently), and note which
        # outputs depend on it. As in ComfyUI this walks all nodes validated so far, not only this output's.
        for node_id, (node_valid, node_reasons, _) in validated.items():
            if node_valid is not True and node_reasons:
                if node_id not in node_errors:
                    node_errors[node_id] = {"errors": node_reasons, "dependent_outputs": [],
                                            "class_type": prompt[node_id]["class_type"]}
                node_errors[node_id]["dependent_outputs"].append(output)

    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errors in failures for e in errors)
        return ValidationResult(False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                              details), [], node_errors)
    return ValidationResult(True, None, good_outputs, node_errors)


def _validate_inputs(options: EngineOptions, prompt: dict[str, Any], node_id: str,
                     validated: dict[str, tuple[bool, list[dict[str, Any]], str]]
                     ) -> tuple[bool, list[dict[str, Any]], str]:
    """Validate one node and, recursively, the nodes it links to (results memoised in ``validated``)."""
    if node_id in validated:
        return validated[node_id]
    inputs = prompt[node_id]["inputs"]
    class_type = prompt[node_id]["class_type"]
    node_class = NODE_CLASSES[class_type]
    spec = input_types(options, class_type)
    # ComfyUI iterates a set (arbitrary order); the declared order is deterministic and otherwise equivalent.
    declared = [(name, "required", cfg) for name, cfg in spec.get("required", {}).items()]
    declared += [(name, "optional", cfg) for name, cfg in spec.get("optional", {}).items()]

    errors: list[dict[str, Any]] = []
    valid = True
    custom_checked: dict[str, Any] = {}
    for name, category, config in declared:
        input_type = config[0]
        extra = config[1] if len(config) > 1 else {}
        info = [input_type, extra]
        if name not in inputs:
            if category == "required":
                errors.append(_error("required_input_missing", "Required input is missing", name,
                                     {"input_name": name}))
            continue

        value = inputs[name]
        if is_link(value):
            if len(value) != 2:
                errors.append(_error("bad_linked_input",
                                     "Bad linked input, must be a length-2 list of [node_id, slot_index]", name,
                                     {"input_name": name, "input_config": info, "received_value": value}))
                continue
            source_id, slot = value
            received = NODE_CLASSES[prompt[source_id]["class_type"]].return_types[slot]
            if not _types_match(received, input_type):
                errors.append(_error(
                    "return_type_mismatch", "Return type mismatch between linked nodes",
                    f"{name}, received_type({received}) mismatch input_type({input_type})",
                    {"input_name": name, "input_config": info, "received_type": received, "linked_node": value}))
                continue
            try:
                if _validate_inputs(options, prompt, source_id, validated)[0] is False:
                    valid = False  # the upstream node carries the reasons
            except Exception as ex:  # noqa: BLE001 - same shape as ComfyUI
                typ, _, tb = sys.exc_info()
                valid = False
                validated[source_id] = (False, [_error(
                    "exception_during_inner_validation", "Exception when validating inner node", str(ex), {
                        "input_name": name, "input_config": info, "exception_message": str(ex),
                        "exception_type": full_type_name(typ or type(ex)),
                        "traceback": traceback.format_tb(tb), "linked_node": value})], source_id)
            continue

        try:
            if isinstance(value, dict) and "__value__" in value:  # list widget values are wrapped like this
                value = value["__value__"]
            converter = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(
                input_type if isinstance(input_type, str) else "")
            if converter is not None:
                value = converter(value)
            inputs[name] = value
        except Exception as ex:  # noqa: BLE001
            errors.append(_error("invalid_input_type", f"Failed to convert an input value to a {input_type} value",
                                 f"{name}, {value}, {ex}", {"input_name": name, "input_config": info,
                                                            "received_value": value, "exception_message": str(ex)}))
            continue

        if name in node_class.custom_inputs:
            custom_checked[name] = value  # VALIDATE_INPUTS replaces the built-in checks for its arguments
            continue
        if "min" in extra and value < extra["min"]:
            errors.append(_error("value_smaller_than_min", f"Value {value} smaller than min of {extra['min']}",
                                 name, {"input_name": name, "input_config": info, "received_value": value}))
            continue
        if "max" in extra and value > extra["max"]:
            errors.append(_error("value_bigger_than_max", f"Value {value} bigger than max of {extra['max']}",
                                 name, {"input_name": name, "input_config": info, "received_value": value}))
            continue
        # Combos come in two forms: the list is the type ([[...], {...}]), or the type is "COMBO" and the list is
        # under "options" (the newer node classes, e.g. UpscaleModelLoader). ComfyUI checks both alike.
        options_list = extra.get("options", []) if input_type == "COMBO" else input_type
        if isinstance(options_list, list) and value not in options_list:
            listed, config_out = (f"(list of length {len(options_list)})", None) \
                if len(options_list) > MAX_LISTED_OPTIONS else (str(options_list), info)
            errors.append(_error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listed}",
                                 {"input_name": name, "input_config": config_out, "received_value": value}))
            continue

    if node_class.validate_inputs is not None and custom_checked:
        verdict = node_class.validate_inputs(options, **custom_checked)
        for name in custom_checked:
            if verdict is not True:
                details = name if verdict is False else f"{name} - {verdict}"
                errors.append(_error("custom_validation_failed", "Custom validation failed for node", details,
                                     {"input_name": name}))

    result = (False, errors, node_id) if errors or not valid else (True, [], node_id)
    validated[node_id] = result
    return result
