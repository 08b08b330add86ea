"""Template context every page may use: `easel.*`.

Register in TEMPLATES OPTIONS context_processors: "config.context_processors.easel".
"""
from __future__ import annotations

from django.conf import settings


def easel(request) -> dict:
    return {
        "easel": {
            "allow_signup": getattr(settings, "EASEL_ALLOW_SIGNUP", True),
            "max_upload_bytes": getattr(settings, "EASEL_MAX_UPLOAD_BYTES", 10 * 1024 * 1024),
        }
    }
