#!/usr/bin/env bash
# Install what the tests need and run the suite: once on SQLite, then again on
# PostgreSQL when one answers at $EASEL_TEST_POSTGRES_URL (default: 127.0.0.1:5432).
set -uo pipefail
cd "$(dirname "$0")"
source bin/bootstrap.sh requirements-dev.txt

# The page tests drive Debian's Chromium (Playwright's own browser download is not used).
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "Installing Debian's chromium for the browser tests ..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || echo "Could not install chromium: the browser tests will be skipped."
  else
    echo "No /usr/bin/chromium and no root to install it: the browser tests will be skipped."
  fi
fi
# A real Prometheus scrapes /metrics with deploy/prometheus.yml (tests/test_metrics.py).
if ! command -v prometheus >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "Installing Debian's prometheus for the metrics scrape test ..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } || echo "Could not install prometheus: the scrape test will be skipped."
  else
    echo "No prometheus and no root to install it: the scrape test will be skipped."
  fi
fi
set +e

PG_URL=${EASEL_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/easel_ci_$$}
status=0

echo "=== Test pass 1: SQLite ==="
data=$(mktemp -d)
EASEL_DATA_DIR="$data" DATABASE_URL="sqlite:///$data/easel.sqlite3" "$PY" -m pytest "$@"
rc=$?; [ $rc -ne 0 ] && status=$rc
rm -rf "$data"

if "$PY" - "$PG_URL" <<'PYEOF' 2>/dev/null
import sys
import dj_database_url, psycopg
cfg = dj_database_url.parse(sys.argv[1])
psycopg.connect(host=cfg["HOST"], port=cfg["PORT"] or 5432, user=cfg["USER"], password=cfg["PASSWORD"] or None,
                dbname="postgres", connect_timeout=3).close()
PYEOF
then
  echo "=== Test pass 2: PostgreSQL ($PG_URL) ==="
  data=$(mktemp -d)
  EASEL_DATA_DIR="$data" DATABASE_URL="$PG_URL" "$PY" -m pytest "$@"
  rc=$?; [ $rc -ne 0 ] && status=$rc
  rm -rf "$data"
  # A helper process may still hold the test database when pytest drops it: drop it
  # (and anything else this run created) for sure, so runs leave nothing behind.
  "$PY" - "$PG_URL" <<'PYEOF' 2>/dev/null || true
import sys
import dj_database_url, psycopg
cfg = dj_database_url.parse(sys.argv[1])
with psycopg.connect(host=cfg["HOST"], port=cfg["PORT"] or 5432, user=cfg["USER"], password=cfg["PASSWORD"] or None,
                     dbname="postgres", autocommit=True) as conn:
    for name in (cfg["NAME"], "test_" + cfg["NAME"]):
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
PYEOF
else
  echo "=== Test pass 2: PostgreSQL SKIPPED: no server answered at $PG_URL ==="
fi
exit $status
