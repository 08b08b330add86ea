"""Admin / dashboard / history at scale: server time of the staff pages on a big PostgreSQL
database. Run by hand; not a test.

    .venv/bin/python bench/admin_scale.py --tasks 1000000 --images 100000 --users 1000

The database is the bench's own: created if missing and marked as made by this script
(a table `easel_bench`); one with other tables and no such mark is never touched. It is
migrated, then reused when it already holds a complete fill of the requested sizes, and
otherwise dropped and filled again with SQL in one transaction (so a run stopped
half-way leaves nothing a later run could mistake for complete). Then it is ANALYZEd,
the dashboard's rollup runs until it has caught up (as the studio tick would over a few
minutes; timed), and each page is timed in-process with Django's test Client (warm once,
median of 5), counting queries. Pages at or over `--slow-ms` (one second) are flagged
and make the exit status 1. `--no-rollup` empties the rollup instead, to time the
dashboard counting everything live (a big database just after upgrading).

SQLite works too (`--database-url sqlite:////path/to/file.sqlite3`), for small sizes.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _support import BenchDatabase, exit_on_termination, signals_held, write_manifest

ROOT = Path(__file__).resolve().parent.parent
SLOW_MS = 1000.0
RUNS = 5  # timed requests per page (after one to warm up); the median is reported
# Bump when the fill makes different data: a database filled by an older version is then
# dropped and filled again instead of reused.
FILL_VERSION = 2

# Databases filled before they were marked: users only from the fill (its unusable
# password) and the staff user the bench logs in with.
EARLIER_VERSION_SQL = """
    SELECT count(*) > 0 AND count(*) = count(CASE WHEN password = '!bench' OR username = 'bench_admin_su' THEN 1 END)
    FROM accounts_user
"""

BACKENDS = 4
CHECKPOINTS = 6
WORDS = (
    "castle", "dragon", "forest", "portrait", "sunset", "city", "robot", "ocean", "mountain", "cat",
    "neon", "watercolor", "cyberpunk", "knight", "garden", "desert", "spaceship", "lighthouse", "winter", "fox",
)


def migrate() -> None:
    from django.core.management import call_command

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    call_command("createcachetable", verbosity=0)  # as run.sh does (django-q2's cluster stats live there)
    print(f"migrate: {time.perf_counter() - t0:.1f} s")


def _count(cursor, table: str) -> int:
    cursor.execute(f"SELECT count(*) FROM {table}")
    return cursor.fetchone()[0]


# --- the fill -----------------------------------------------------------------------
#
# Rows are made by INSERT ... SELECT over a series of numbers g = 1..N, every value
# computed from g (hashes stand in for random(): the same sizes give the same data on
# every run and on both databases). Only the columns the bench means to vary are written
# here; every other column of the model gets its default, read from the model, so a
# migration that adds a column with a default needs no change here, and one that adds a
# required column without a default stops the fill with a message naming it.

# Multiplicative hashes of g, fractions in [0, 1) (Knuth / xxHash primes, mod a prime).
_HASH_PRIME = 4294967291


def _frac(g: str, multiplier: int) -> str:
    return f"(CAST(({g} * {multiplier}) %% {_HASH_PRIME} AS DOUBLE PRECISION) / {_HASH_PRIME})"


def _pick(index_sql: str, values: list) -> str:
    """values[index] as a CASE (no arrays on SQLite); values are the bench's own words and ids."""
    arms = " ".join(f"WHEN {i} THEN {v!r}" if isinstance(v, str) else f"WHEN {i} THEN {int(v)}"
                    for i, v in enumerate(values))
    return f"CASE ({index_sql}) {arms} END"


class Dialect:
    """The few expressions PostgreSQL and SQLite spell differently; the rest of the fill
    is the same SQL on both."""

    def __init__(self, connection):
        self.pg = connection.vendor == "postgresql"

    def series(self) -> str:
        """The body of `WITH RECURSIVE s(g) AS (...)`: 1..%(n)s."""
        if self.pg:
            return "SELECT generate_series(1, %(n)s)"
        return "SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < %(n)s"

    def ago(self, seconds: str) -> str:
        """The fill's moment (%(now)s) minus `seconds`."""
        if self.pg:
            return f"(%(now)s - interval '1 second' * ({seconds}))"
        # Django keeps SQLite datetimes as UTC text; whole milliseconds are enough here.
        return f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', %(now)s, printf('%%.3f seconds', -({seconds})))"

    def uuid(self, g: str) -> str:
        if self.pg:
            return f"CAST(md5('bench-task-' || {g}) AS uuid)"
        return f"printf('%%032x', {g})"  # Django's SQLite UUIDField: 32 hex digits

    def year_month(self, column: str) -> str:
        return f"to_char({column}, 'YYYY/MM')" if self.pg else f"strftime('%%Y/%%m', {column})"


def _default_sql(field, params: dict, now) -> str:
    """The SQL for a column the bench does not compute: what Django would store."""
    from django.db import connection

    where = f"{field.model._meta.db_table}.{field.column}"
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        value = now
    else:
        if field.has_default() and field.unique:
            raise RuntimeError(f"{where} is unique: its default would repeat on every row; "
                               "compute it per row in bench/admin_scale.py")
        value = field.get_default()  # "" for a text column without a default, None otherwise
    if value is None:
        if field.null:
            return "NULL"
        raise RuntimeError(f"{where} is required and has no default: compute it in bench/admin_scale.py")
    key = f"default_{field.model._meta.db_table}_{field.column}"
    params[key] = field.get_db_prep_save(value, connection)
    if connection.vendor == "postgresql":
        # A bare literal is "unknown" in a SELECT list; the cast gives it the column's type
        # (SQLite must not cast: CAST('2025-…' AS datetime) keeps only the number 2025).
        return f"CAST(%({key})s AS {field.db_type(connection)})"
    return f"%({key})s"


def _insert(cursor, model, computed: dict[str, str], *, source: str, params: dict, now,
            with_series: bool = False) -> int:
    """INSERT INTO model's table (every concrete column) SELECT computed or default values FROM source."""
    from django.db import connection

    computed = dict(computed)
    params = dict(params)
    columns, values = [], []
    for field in model._meta.concrete_fields:
        if field.column in computed:
            values.append(computed.pop(field.column))
        elif field.primary_key:
            continue  # the sequence numbers it
        else:
            values.append(_default_sql(field, params, now))
        columns.append(connection.ops.quote_name(field.column))
    if computed:
        raise RuntimeError(f"{model._meta.db_table} has no column(s) {sorted(computed)}: update bench/admin_scale.py")
    prefix = f"WITH RECURSIVE s(g) AS ({Dialect(connection).series()}) " if with_series else ""
    cursor.execute(
        f"{prefix}INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {source}",
        params,
    )
    return cursor.rowcount


def fill(*, tasks: int, images: int, users: int) -> dict:
    """Everything in one transaction, the manifest last: a run stopped half-way leaves no
    partial data a later run could mistake for a complete fill. Returns the manifest."""
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import User
    from generation.models import GeneratedImage, GenerationTask
    from models_catalog.models import Checkpoint, ComfyBackend

    sq = Dialect(connection)
    now = timezone.now()
    base = {"now": connection.ops.adapt_datetimefield_value(now)}
    t0 = time.perf_counter()
    with transaction.atomic(), connection.cursor() as c:
        # Catalog: a few backends and checkpoints.
        _insert(c, ComfyBackend, {
            "name": "'bench-gpu-' || g",
            "base_url": "'http://bench-gpu-' || g || '.invalid:8188'",
            "is_online": "g %% 2 = 0",
            "comfyui_version": "'0.3.0'",
            "created_at": sq.ago("0"),
        }, source="s", params={**base, "n": BACKENDS}, now=now, with_series=True)
        _insert(c, Checkpoint, {
            "name": "'bench-model-' || g",
            "ckpt_name": "'bench_model_' || g || '.safetensors'",
            "display_name": "'Bench model ' || g",
            "created_at": sq.ago("0"),
        }, source="s", params={**base, "n": CHECKPOINTS}, now=now, with_series=True)
        c.execute("SELECT id FROM models_catalog_comfybackend WHERE name LIKE 'bench-gpu-%%' ORDER BY id")
        backend_ids = [r[0] for r in c.fetchall()]
        c.execute("SELECT id, name FROM models_catalog_checkpoint WHERE name LIKE 'bench-model-%%' ORDER BY id")
        checkpoints = c.fetchall()

        # Users (an unusable password, which also tells them apart: the bench logs in with
        # force_login / a token).
        _insert(c, User, {
            "password": "'!bench'",
            "username": "'bench_' || g",
            "first_name": "'First' || g",
            "last_name": "'Last' || g",
            "email": "'bench_' || g || '@example.com'",
            "is_active": "g %% 50 <> 0",
            "date_joined": sq.ago(f"400 * 86400 * {_frac('g', 2246822519)}"),
            "display_name": "'Bench user ' || g",
        }, source="s", params={**base, "n": users}, now=now, with_series=True)
        c.execute("SELECT min(id), max(id) FROM accounts_user WHERE password = '!bench'")
        first_user, last_user = c.fetchone()
        print(f"  catalog + {users} users: {time.perf_counter() - t0:.1f} s")

        # Tasks: ids increase with created_at (as in real life), over the last 90 days.
        # Owners are skewed (u^3): the first users are the heavy ones.
        t1 = time.perf_counter()
        status = "t.status"
        pending = f"{status} = 'pending'"
        created = "t.ago"
        _insert(c, GenerationTask, {
            "user_id": f"{first_user} + CAST(floor({last_user - first_user + 1} * t.u * t.u * t.u) AS INTEGER)",
            "prompt": (f"'a ' || {_pick('(g * 7) %% 20', list(WORDS))} || ' with ' || "
                       f"{_pick('(g * 13) %% 20', list(WORDS))} || ', ' || {_pick('(g / 3) %% 20', list(WORDS))}"
                       " || ' style, highly detailed, soft light'"),
            "negative_prompt": "'blurry'",
            "checkpoint_id": _pick(f"g %% {len(checkpoints)}", [i for i, _n in checkpoints]),
            "model_name": _pick(f"g %% {len(checkpoints)}", [n for _i, n in checkpoints]),
            "width": "512", "height": "512", "steps": "20", "cfg": "7.0",
            "sampler": "'euler'", "scheduler": "'normal'",
            "seed": "(g * 2654435761) %% 4294967296",
            "batch_size": "1 + CASE WHEN g %% 4 = 0 THEN 1 ELSE 0 END",
            "status": status,
            "progress_value": "20", "progress_max": "20",
            "backend_id": f"CASE WHEN {pending} THEN NULL ELSE {_pick(f'g %% {len(backend_ids)}', backend_ids)} END",
            "prompt_id": sq.uuid("g"),
            "client_id": "'easel-bench-' || g",
            "attempts": f"CASE WHEN {pending} THEN 0 ELSE 1 END",
            "assigned_at": f"CASE WHEN {pending} THEN NULL ELSE {sq.ago(f'{created} - 1')} END",
            "error_code": f"CASE WHEN {status} = 'failed' THEN 'comfy_error' ELSE '' END",
            "error_message": f"CASE WHEN {status} = 'failed' THEN 'ComfyUI reported an error' ELSE '' END",
            "created_at": sq.ago(created),
            "submitted_at": f"CASE WHEN {pending} THEN NULL ELSE {sq.ago(f'{created} - 1')} END",
            "started_at": (f"CASE WHEN {status} IN ('pending', 'cancelled') THEN NULL "
                           f"ELSE {sq.ago(f'{created} - 2')} END"),
            "completed_at": f"CASE WHEN {pending} THEN NULL ELSE {sq.ago(f'{created} - 5 - 20 * t.d')} END",
            "updated_at": sq.ago(f"{created} - 30"),
        }, source=f"""(
                SELECT g, u, d, ago,
                       CASE WHEN g > %(n)s - 20 THEN 'pending'
                            WHEN st < 0.90 THEN 'completed'
                            WHEN st < 0.95 THEN 'failed'
                            WHEN st < 0.99 THEN 'cancelled'
                            ELSE 'pending' END AS status
                FROM (
                    SELECT g, {_frac('g', 2654435761)} AS u, {_frac('g', 2246822519)} AS d,
                           {_frac('g', 3266489917)} AS st,
                           -- over the last 90 days, the newest a minute ago
                           7776000 * (1 - CAST(g AS DOUBLE PRECISION) / %(n)s) + 60 AS ago
                    FROM s
                ) r
            ) t ORDER BY g""", params={**base, "n": tasks}, now=now, with_series=True)
        print(f"  {tasks} tasks: {time.perf_counter() - t1:.1f} s")

        # Images: one per completed task, for the first `images` completed tasks.
        t2 = time.perf_counter()
        folder = f"t.user_id || '/' || {sq.year_month('t.created_at')} || '/' || t.id"
        made = _insert(c, GeneratedImage, {
            "task_id": "t.id",
            "index": "0",
            "file": f"'results/' || {folder} || '-0-x.png'",
            "thumbnail": f"'thumbs/' || {folder} || '-0.webp'",
            "width": "512", "height": "512",
            "seed": "t.seed",
            "size_bytes": "300000 + (t.id * 7919) %% 700000",
            "created_at": "t.completed_at",
        }, source="""(
                SELECT id, user_id, created_at, completed_at, seed FROM generation_generationtask
                WHERE status = 'completed' ORDER BY id LIMIT %(n)s
            ) t""", params={"n": images}, now=now)
        print(f"  {made} images: {time.perf_counter() - t2:.1f} s")
        manifest = holds()
        write_manifest(c, {"wanted": wanted(tasks=tasks, images=images, users=users), "holds": manifest})
    t3 = time.perf_counter()
    with connection.cursor() as c:
        c.execute("ANALYZE")
    print(f"  ANALYZE: {time.perf_counter() - t3:.1f} s")
    print(f"fill: filled in {time.perf_counter() - t0:.1f} s ({manifest})")
    return manifest


def wanted(*, tasks: int, images: int, users: int) -> dict:
    return {"fill": FILL_VERSION, "tasks": tasks, "images": images, "users": users}


def holds() -> dict:
    from django.db import connection

    with connection.cursor() as c:
        return {
            "users": _count(c, "accounts_user WHERE password = '!bench'"),
            "tasks": _count(c, "generation_generationtask"),
            "images": _count(c, "generation_generatedimage"),
        }


def rollup_catch_up(*, empty: bool, runs: int) -> None:
    from generation.models import RollupMark, TaskHourStat, UserDayStat
    from generation.ops.rollup import roll_up

    if empty:
        for model in (TaskHourStat, UserDayStat, RollupMark):
            model.objects.all().delete()
        print("rollup: emptied (--no-rollup): the dashboard counts every task live")
        return
    t0, catch_up, rows = time.perf_counter(), 0, 0
    while (done := roll_up()).hours or done.days:
        catch_up += 1
        rows += done.hour_rows + done.day_rows
        print(f"  rollup run {catch_up}: {done.hours} h, {done.days} d, {done.hour_rows + done.day_rows} rows, "
              f"{time.perf_counter() - t0:.1f} s so far")
    print(f"rollup: {catch_up} run(s) wrote {rows} rows in {time.perf_counter() - t0:.1f} s")
    timings = []
    for _ in range(runs):
        t1 = time.perf_counter()
        roll_up()
        timings.append((time.perf_counter() - t1) * 1000)
    print(f"rollup with nothing new (each tick): {statistics.median(timings):.1f} ms")


def measure(client, url: str, runs: int, **extra) -> tuple[float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url, **extra)  # warm
    assert response.status_code == 200, (url, response.status_code)
    timings, queries = [], 0
    for _ in range(runs):
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            response = client.get(url, **extra)
            timings.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(ctx.captured_queries)
    return statistics.median(timings), queries


def prepare(db: BenchDatabase, want: dict) -> bool:
    """Claim the database and decide, before Django connects, whether its fill can be
    reused (True) or it must start over from an empty database (False)."""
    found = db.claim()
    if found in ("created", "empty"):
        print(f"{db.describe()}: {'created' if found == 'created' else 'empty, taken'}")
        return False
    manifest = db.manifest()
    if found == "earlier":
        print(f"{db.describe()}: made by an earlier version of this script; dropping it and starting over")
    elif manifest is None:
        print(f"{db.describe()}: an earlier run stopped before its fill was complete; dropping it and starting over")
    elif manifest["wanted"] != want:
        print(f"{db.describe()}: holds {manifest['wanted']}, {want} asked for; dropping it and starting over")
    else:
        return True
    db.reset()
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/easel_bench_admin")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=RUNS, help="timed requests per page (median); default %(default)s")
    parser.add_argument("--fill-only", action="store_true",
                        help="make the database ready (reuse or fill) and stop, timing nothing")
    parser.add_argument("--no-rollup", action="store_true", help="time the dashboard without its rollup")
    parser.add_argument("--slow-ms", type=float, default=SLOW_MS,
                        help="flag pages at or over this median (and exit 1); default %(default).0f")
    parser.add_argument("--show-queries", type=float, default=None, metavar="MS",
                        help="print the slowest SQL of each page at or over MS milliseconds")
    args = parser.parse_args()
    # The fill keeps its last 20 tasks pending, and the pages need a completed task with an image.
    if args.tasks < 100 or args.users < 1 or args.images < 1 or args.runs < 1:
        parser.error("at least 100 tasks, 1 user, 1 image and 1 run")

    exit_on_termination()
    db = BenchDatabase(args.database_url, script="admin_scale", earlier_version_sql=EARLIER_VERSION_SQL)
    want = wanted(tasks=args.tasks, images=args.images, users=args.users)
    reuse = prepare(db, want)

    # Django's data folder (secret key, media) is only needed for this run.
    data_dir = tempfile.mkdtemp(prefix="easel-bench-admin-")
    try:
        os.environ["EASEL_DATA_DIR"] = data_dir
        os.environ["DATABASE_URL"] = args.database_url
        os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()

        from django.conf import settings
        from django.test.utils import setup_test_environment

        setup_test_environment()  # the test Client needs it (and adds 'testserver' to ALLOWED_HOSTS)
        settings.ALLOWED_HOSTS = ["*"]

        migrate()
        if reuse:
            have = holds()
            if have == db.manifest()["holds"]:
                print(f"fill: reused ({have})")
            else:
                # Someone changed the rows since (a cleanup, a test by hand): not the fill any more.
                print(f"fill: the database holds {have}, not its fill {db.manifest()['holds']}; starting over")
                reuse = False
                from django.db import connection

                connection.close()
                db.reset()
                migrate()
        if not reuse:
            fill(tasks=args.tasks, images=args.images, users=args.users)
        if args.fill_only:
            return 0
        rollup_catch_up(empty=args.no_rollup, runs=args.runs)
        return 1 if time_pages(args) else 0
    finally:
        with signals_held():
            if "django.db" in sys.modules:
                from django.db import connections

                connections.close_all()
            shutil.rmtree(data_dir, ignore_errors=True)


def time_pages(args) -> int:
    """Print the table of pages; return the number of slow ones."""
    from django.db.models import Count
    from django.test import Client

    from accounts.models import User
    from accounts.services import token_create
    from generation.models import GenerationTask

    admin_user, _created = User.objects.get_or_create(
        username="bench_admin_su", defaults={"email": "bench-admin-su@example.com", "is_staff": True,
                                             "is_superuser": True}
    )
    client = Client()
    client.force_login(admin_user)

    heavy = (
        GenerationTask.objects.filter(user__password="!bench").values("user_id")
        .annotate(n=Count("id")).order_by("-n")[:1].get()
    )
    heavy_user = User.objects.get(pk=heavy["user_id"])
    token, clear = token_create(user=heavy_user, name="bench")
    try:
        return _time_pages(args, client, heavy, heavy_user, clear)
    finally:
        # One token and one session per run would pile up in the reused database.
        token.delete()
        client.logout()


def _time_pages(args, client, heavy: dict, heavy_user, clear: str) -> int:
    from generation.admin import GenerationTaskAdmin
    from generation.models import GenerationTask
    from models_catalog.models import ComfyBackend

    backend = ComfyBackend.objects.filter(name__startswith="bench-gpu-").order_by("id").first()
    task_id = GenerationTask.objects.filter(status="completed", images__isnull=False).order_by("id").values_list(
        "id", flat=True
    ).first()
    # Page 500 at full size; the last page when a small fill has fewer.
    far_page = min(500, math.ceil(args.tasks / GenerationTaskAdmin.list_per_page))

    tasks_url = "/admin/generation/generationtask/"
    pages = [
        ("task list", tasks_url, {}),
        ("task list ?status=failed", tasks_url + "?status__exact=failed", {}),
        ("task list ?backend", tasks_url + f"?backend__id__exact={backend.pk}", {}),
        ("task list ?q=lighthouse", tasks_url + "?q=lighthouse", {}),
        ("task list ?q=123", tasks_url + "?q=123", {}),
        (f"task list ?p={far_page}", tasks_url + f"?p={far_page}", {}),
        ("user list", "/admin/accounts/user/", {}),
        ("user list ?q=bench_12", "/admin/accounts/user/?q=bench_12", {}),
        ("dashboard ?days=7", "/admin/dashboard/?days=7", {}),
        ("dashboard ?days=30", "/admin/dashboard/?days=30", {}),
        (f"task change #{task_id}", f"/admin/generation/generationtask/{task_id}/change/", {}),
        (f"API history ({heavy['n']} tasks)", "/api/v1/generation/history", {"HTTP_AUTHORIZATION": f"Bearer {clear}"}),
    ]
    print(f"\n{GenerationTask.objects.count()} tasks; heavy user {heavy_user.username} has {heavy['n']}\n")
    rows = []
    for label, url, extra in pages:
        ms, queries = measure(client, url, args.runs, **extra)
        rows.append((label, ms, queries))
        if args.show_queries is not None and ms >= args.show_queries:
            from django.db import connection
            from django.test.utils import CaptureQueriesContext

            with CaptureQueriesContext(connection) as ctx:
                client.get(url, **extra)
            for q in sorted(ctx.captured_queries, key=lambda q: -float(q["time"]))[:3]:
                print(f"  {label}: {q['time']} s  {q['sql'][:400]}")

    width = max(len(r[0]) for r in rows)
    print(f"{'page'.ljust(width)} | median ms | queries")
    print(f"{'-' * width}-|-----------|--------")
    slow = 0
    for label, ms, queries in rows:
        flag = f"  <-- SLOW (>= {args.slow_ms:.0f} ms)" if ms >= args.slow_ms else ""
        slow += bool(flag)
        print(f"{label.ljust(width)} | {ms:9.1f} | {queries:7d}{flag}")
    print(f"\n{slow} page(s) at or over {args.slow_ms:.0f} ms")
    return slow


if __name__ == "__main__":
    sys.exit(main())
