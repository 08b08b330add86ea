"""Settings of bench/viewers.py's web process: Easel's own settings, plus a count of every
SQL statement the process runs (any thread), written to $EASEL_BENCH_QUERY_COUNTS/queries.<pid>
twice a second. Not a benchmark itself (the leading underscore keeps it out of the scripts
tests/test_bench.py runs).
"""
import itertools
import os
import threading
import time
from pathlib import Path

from django.db.backends import utils as _db_utils

from config.settings import *  # noqa: F403 (the product's settings, as they are)

_counter = itertools.count()
_seen = [0]
_original = _db_utils.CursorWrapper._execute_with_wrappers


def _counted(self, *args, **kwargs):
    _seen[0] = next(_counter) + 1  # itertools.count is atomic under the GIL
    return _original(self, *args, **kwargs)


def _write_counts(folder: Path) -> None:
    path = folder / f"queries.{os.getpid()}"
    while True:
        path.write_text(str(_seen[0]))
        time.sleep(0.5)


if os.environ.get("EASEL_BENCH_QUERY_COUNTS"):
    _db_utils.CursorWrapper._execute_with_wrappers = _counted
    threading.Thread(target=_write_counts, args=(Path(os.environ["EASEL_BENCH_QUERY_COUNTS"]),), daemon=True).start()
