# syntax=docker/dockerfile:1
# Easel in one image: the web app (default command: gunicorn), the django-q2 worker
# (`python manage.py qcluster`) and the demo engine (`python manage.py demo_engine`).
# See docker-compose.yml and docs/production.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: compile every requirement into wheels (compilers stay in this stage) ------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.txt .
RUN pip wheel --wheel-dir /wheels -r requirements.txt

# --- runtime: slim, no compilers, runs as an unprivileged user -------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EASEL_ENV=production \
    EASEL_DATA_DIR=/data \
    STATIC_ROOT=/app/staticfiles \
    EASEL_PORT=8000
RUN groupadd --system --gid 10001 easel \
    && useradd --system --uid 10001 --gid easel --home-dir /app --no-create-home --shell /usr/sbin/nologin easel
COPY --from=build /wheels /wheels
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-index --find-links=/wheels -r /tmp/requirements.txt \
    && rm -rf /wheels /tmp/requirements.txt
WORKDIR /app
COPY . .
# Static files are collected into the image (whitenoise serves them, hashed and
# compressed); the key below exists only for this build step and is never kept.
RUN SECRET_KEY=collectstatic-only EASEL_DATA_DIR=/tmp/build-data python manage.py collectstatic --noinput -v0 \
    && rm -rf /tmp/build-data \
    && mkdir -p /data \
    && chown easel:easel /data
# /data holds media (unless STORAGE_URL points at S3); a named volume mounted there
# starts out owned by the easel user.
VOLUME ["/data"]
USER easel:easel
EXPOSE 8000

# Liveness only (no database): a database outage must not get the web container
# restarted. Sends a Host from ALLOWED_HOSTS so production host checks accept it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; host = (os.environ.get('ALLOWED_HOSTS') or 'localhost').split(',')[0].strip().lstrip('.') or 'localhost'; host = 'localhost' if host == '*' else host; request = urllib.request.Request('http://127.0.0.1:' + os.environ.get('EASEL_PORT', '8000') + '/api/v1/health/live', headers={'Host': host}); sys.exit(0 if urllib.request.urlopen(request, timeout=4).status == 200 else 1)"]

CMD ["gunicorn", "--config", "deploy/gunicorn.conf.py", "config.asgi:application"]
