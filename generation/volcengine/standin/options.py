"""Stand-in options (command line) and the faults a test can inject at run time through ``POST /standin/faults``."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: The region and service the visual API signs with (VolcEngine's docs: fixed ``cn-north-1`` / ``cv``).
REGION = "cn-north-1"
SERVICE = "cv"
API_VERSION = "2022-08-31"

#: The text-to-image ``req_key``s the stand-in answers to, with the sizes it accepts. The real models have their
#: own limits (see the README beside this file); these are the stand-in's, wide enough for any of them.
DEFAULT_REQ_KEYS = ("jimeng_t2i_v40", "jimeng_t2i_v31", "high_aes_general_v30l_zt2i")
MIN_SIDE, MAX_SIDE = 256, 4096

#: Faults that fire on the next submit, in the order they are checked.
SUBMIT_FAULTS = ("quota_next", "refuse_prompt_next", "throttle_next")


@dataclass
class Faults:
    """Knobs and one-shot faults.

    ``delay`` holds every answer of the API (not the controls) that many seconds (a slow service).
    ``generate_seconds`` is how long a task takes from submit to ``done`` (the first third ``in_queue``).
    ``server_error_next`` answers the next that many API calls with HTTP 500 ``50500 Internal Error``.
    ``quota_next`` refuses the next submit as an account with no quota left would be (``50400``, unverified).
    ``refuse_prompt_next`` refuses the next submit's prompt (``50412 Text Risk Not Pass``).
    ``throttle_next`` refuses the next submit for the QPS limit (HTTP 429 ``50429``).
    ``refuse_output_next`` lets the next task run, then refuses its picture (``50511 Post Img Risk Not Pass``).
    ``expire_next`` lets the next task run, then reports it ``expired`` instead of ``done``.
    ``forget_next`` lets the next task run, then forgets it (``not_found``, as after the service's 12 hours).
    """

    delay: float = 0.0
    generate_seconds: float = 0.3
    server_error_next: int = 0
    quota_next: bool = False
    refuse_prompt_next: bool = False
    throttle_next: bool = False
    refuse_output_next: bool = False
    expire_next: bool = False
    forget_next: bool = False

    def update(self, values: dict[str, Any]) -> None:
        """Apply a JSON body of the same names; unknown names raise ``KeyError``, bad values ``ValueError``."""
        kinds = {f.name: f.type for f in fields(self)}
        for name, value in values.items():
            if name not in kinds:
                raise KeyError(name)
            if kinds[name] == "float":
                value = float(value)
                if value < 0:
                    raise ValueError(f"{name} must not be negative")
            elif kinds[name] == "int":
                value = int(value)
                if value < 0:
                    raise ValueError(f"{name} must not be negative")
            elif not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
            setattr(self, name, value)

    def take(self, name: str) -> bool:
        """Read a one-shot fault and clear it."""
        value = getattr(self, name)
        setattr(self, name, False)
        return bool(value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StandinOptions:
    host: str = "127.0.0.1"
    port: int = 0
    access_key_id: str = "AKLTstandin"
    secret_access_key: str = "standin-secret"
    req_keys: tuple[str, ...] = DEFAULT_REQ_KEYS
    #: Accepted tasks not yet done, beyond which a submit gets ``50430`` (0: no limit).
    max_concurrent: int = 0
    #: Seconds a task's id stays known after submit (the real service: 12 hours); then ``not_found``.
    task_ttl: float = 12 * 3600
    faults: Faults = field(default_factory=Faults)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generation.volcengine.standin",
        description="A local stand-in for VolcEngine's visual API (CVSync2AsyncSubmitTask / GetResult) that draws "
                    "labelled placeholder pictures. The key pair may also come from VOLC_STANDIN_ACCESS_KEY_ID and "
                    "VOLC_STANDIN_SECRET_ACCESS_KEY.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8190, help="0 picks a free port")
    parser.add_argument("--access-key-id", default=os.environ.get("VOLC_STANDIN_ACCESS_KEY_ID", "AKLTstandin"))
    parser.add_argument("--secret-access-key",
                        default=os.environ.get("VOLC_STANDIN_SECRET_ACCESS_KEY", "standin-secret"))
    parser.add_argument("--req-keys", default=",".join(DEFAULT_REQ_KEYS),
                        help="comma-separated req_key values the stand-in offers")
    parser.add_argument("--generate-seconds", type=float, default=3.0)
    parser.add_argument("--max-concurrent", type=int, default=0)
    parser.add_argument("--task-ttl", type=float, default=12 * 3600)
    return parser


def options_from_args(args: argparse.Namespace) -> StandinOptions:
    return StandinOptions(
        host=args.host, port=args.port, access_key_id=args.access_key_id, secret_access_key=args.secret_access_key,
        req_keys=tuple(k.strip() for k in args.req_keys.split(",") if k.strip()),
        max_concurrent=max(0, args.max_concurrent), task_ttl=args.task_ttl,
        faults=Faults(generate_seconds=max(0.0, args.generate_seconds)))
