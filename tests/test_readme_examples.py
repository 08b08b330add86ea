"""The README's client examples run as written against a live Easel (web, qcluster, demo engine)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

README = Path(__file__).resolve().parent.parent / "README.md"


def example(kind: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- client-example:{kind} -->\s*```\w+\n(.*?)```", text, re.S)
    assert match, f"README has no {kind} client example"
    return match.group(1)


@pytest.fixture
def live_env(engine_catalog, qcluster, live_server, make_user):
    make_user("reader")  # password: see conftest.make_user
    env = dict(os.environ, EASEL_URL=live_server.url, EASEL_USER="reader", EASEL_PASSWORD="correct horse battery")
    return env


def test_python_example(live_env, tmp_path):
    result = subprocess.run([sys.executable, "-c", example("python")], cwd=tmp_path, env=live_env,
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "saved easel-result.png" in result.stdout
    assert (tmp_path / "easel-result.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_openai_example(live_env, tmp_path):
    result = subprocess.run([sys.executable, "-c", example("openai")], cwd=tmp_path, env=live_env,
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "saved easel-openai.png" in result.stdout
    assert (tmp_path / "easel-openai.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_example(live_env, tmp_path, settings):
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", example("curl")], cwd=tmp_path, env=live_env,
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr + result.stdout
    assert '"status":"completed"' in result.stdout.replace(" ", "")
