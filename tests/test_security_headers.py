"""Security headers as the settings make them from the environment (a fresh process per case)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = """
import json, django
django.setup()
from django.test import Client
response = Client().get("/api/v1/health/live", HTTP_X_FORWARDED_PROTO="https", secure=False)
print(json.dumps({"status": response.status_code, "hsts": response.get("Strict-Transport-Security")}))
"""


def probe(tmp_path, **env) -> dict:
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "EASEL_DATA_DIR": str(tmp_path)}
    for key in ("EASEL_BEHIND_HTTPS_PROXY", "EASEL_HSTS_SECONDS"):
        environment.pop(key, None)
    environment.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=environment, capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("env,expected", [
    ({}, None),  # without a TLS proxy in front, no promise about HTTPS
    ({"EASEL_BEHIND_HTTPS_PROXY": "1"}, "max-age=31536000"),
    ({"EASEL_BEHIND_HTTPS_PROXY": "1", "EASEL_HSTS_SECONDS": "600"}, "max-age=600"),
    ({"EASEL_BEHIND_HTTPS_PROXY": "1", "EASEL_HSTS_SECONDS": "0"}, None),
])
def test_strict_transport_security_behind_an_https_proxy(tmp_path, env, expected):
    answer = probe(tmp_path, **env)
    assert answer == {"status": 200, "hsts": expected}
