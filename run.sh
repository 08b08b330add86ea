#!/usr/bin/env bash
# Install everything Easel needs (virtualenv, requirements) and run the studio: web
# server, django-q2 worker cluster and the built-in demo engine. `manage.py studio`
# prepares the database (`manage.py setup`) and the static files itself.
set -euo pipefail
cd "$(dirname "$0")"
source bin/bootstrap.sh requirements.txt
exec "$PY" manage.py studio "$@"
