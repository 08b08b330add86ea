#!/usr/bin/env bash
# Install everything Easel needs (virtualenv, requirements, database) and run the
# studio: web server, django-q2 worker cluster and the built-in demo engine.
set -euo pipefail
cd "$(dirname "$0")"
source bin/bootstrap.sh requirements.txt
"$PY" manage.py migrate --noinput
"$PY" manage.py createcachetable
"$PY" manage.py collectstatic --noinput -v0
exec "$PY" manage.py studio "$@"
