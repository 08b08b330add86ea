"""Settings of bench/api_overhead.py's gunicorn: Easel's own settings, with the URLconf
of bench/_api_overhead_urls.py (Easel's URLs plus the bare view the product never has).
Not a benchmark itself (the leading underscore keeps it out of the scripts
tests/test_bench.py runs).
"""
from config.settings import *  # noqa: F403 (the product's settings, as they are)

ROOT_URLCONF = "_api_overhead_urls"
