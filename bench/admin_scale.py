"""Admin / dashboard / history at scale: server time of the staff pages on a big PostgreSQL
database. Run by hand; not a test.

    .venv/bin/python bench/admin_scale.py --tasks 1000000 --images 100000 --users 1000

Creates the database if missing, migrates it, fills it with SQL (generate_series) unless
it already holds the requested volume, ANALYZEs it, runs the dashboard's rollup until it
has caught up (as the studio tick would over a few minutes; timed), then times each
page in-process with Django's test Client (warm once, median of 5), counting queries.
Pages at or over one second are flagged. `--no-rollup` empties the rollup instead, to
time the dashboard counting everything live (a big database just after upgrading).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
SLOW_MS = 1000.0
RUNS = 5

BACKENDS = 4
CHECKPOINTS = 6
WORDS = (
    "castle", "dragon", "forest", "portrait", "sunset", "city", "robot", "ocean", "mountain", "cat",
    "neon", "watercolor", "cyberpunk", "knight", "garden", "desert", "spaceship", "lighthouse", "winter", "fox",
)


def ensure_database(url: str) -> None:
    parts = urlparse(url)
    name = parts.path.lstrip("/")
    admin_url = urlunparse(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")


def migrate() -> None:
    from django.core.management import call_command

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    call_command("createcachetable", verbosity=0)  # as run.sh does (django-q2's cluster stats live there)
    print(f"migrate: {time.perf_counter() - t0:.1f} s")


def _count(cursor, table: str) -> int:
    cursor.execute(f"SELECT count(*) FROM {table}")
    return cursor.fetchone()[0]


def fill(*, tasks: int, images: int, users: int) -> None:
    """Bulk rows with INSERT ... SELECT FROM generate_series (a few minutes at most)."""
    from django.db import connection

    with connection.cursor() as c:
        have = {
            "users": _count(c, "accounts_user WHERE username LIKE 'bench_%%'"),
            "tasks": _count(c, "generation_generationtask"),
            "images": _count(c, "generation_generatedimage"),
        }
        if have["users"] >= users and have["tasks"] >= tasks and have["images"] >= images:
            print(f"fill: skipped (already {have['users']} users, {have['tasks']} tasks, {have['images']} images)")
            return
        if have["tasks"] or have["images"]:
            print(f"fill: partial data {have}, starting over")
            c.execute(
                "TRUNCATE generation_generatedimage, generation_generationtask, generation_webhookdelivery, "
                "generation_taskpreview CASCADE"
            )
            c.execute("DELETE FROM accounts_user WHERE username LIKE 'bench_%%'")

        t0 = time.perf_counter()
        c.execute("SELECT setseed(0.42)")
        # Catalog: a few backends and checkpoints.
        c.execute(
            """
            INSERT INTO models_catalog_comfybackend
                (name, base_url, enabled, is_demo, is_online, last_error, comfyui_version, devices,
                 queue_remaining, draining, max_in_flight, loaded_checkpoint, abandoned_prompts, created_at)
            SELECT 'bench-gpu-' || g, 'http://bench-gpu-' || g || '.invalid:8188', true, false, g %% 2 = 0, '',
                   '0.3.0', '[]'::jsonb, 0, false, 2, '', '[]'::jsonb, now()
            FROM generate_series(1, %s) g
            ON CONFLICT (name) DO NOTHING
            """,
            [BACKENDS],
        )
        c.execute(
            """
            INSERT INTO models_catalog_checkpoint
                (name, ckpt_name, display_name, description, enabled, default_width, default_height,
                 default_steps, default_cfg, default_sampler, default_scheduler, created_at)
            SELECT 'bench-model-' || g, 'bench_model_' || g || '.safetensors', 'Bench model ' || g, '', true,
                   512, 512, 20, 7.0, 'euler', 'normal', now()
            FROM generate_series(1, %s) g
            ON CONFLICT (name) DO NOTHING
            """,
            [CHECKPOINTS],
        )
        c.execute("SELECT id FROM models_catalog_comfybackend WHERE name LIKE 'bench-gpu-%%' ORDER BY id")
        backend_ids = [r[0] for r in c.fetchall()]
        c.execute("SELECT id, name FROM models_catalog_checkpoint WHERE name LIKE 'bench-model-%%' ORDER BY id")
        checkpoints = c.fetchall()

        # Users (an unusable password: the bench logs in with force_login / a token).
        c.execute(
            """
            INSERT INTO accounts_user
                (password, last_login, is_superuser, username, first_name, last_name, email, is_staff,
                 is_active, date_joined, display_name, daily_image_quota, max_concurrent_tasks, priority)
            SELECT '!bench', NULL, false, 'bench_' || g, 'First' || g, 'Last' || g,
                   'bench_' || g || '@example.com', false, g %% 50 <> 0,
                   now() - interval '400 days' * random(), 'Bench user ' || g, 100, 2, 0
            FROM generate_series(1, %s) g
            """,
            [users],
        )
        c.execute("SELECT min(id), max(id) FROM accounts_user WHERE username LIKE 'bench_%%'")
        first_user, last_user = c.fetchone()
        n_users = last_user - first_user + 1
        print(f"  catalog + {users} users: {time.perf_counter() - t0:.1f} s")

        # Tasks: ids increase with created_at (as in real life), over the last 90 days.
        # Owners are skewed (random()^3): the first users are the heavy ones.
        t1 = time.perf_counter()
        words = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "]"
        ckpt_ids = "ARRAY[" + ",".join(str(i) for i, _n in checkpoints) + "]"
        ckpt_names = "ARRAY[" + ",".join(f"'{n}'" for _i, n in checkpoints) + "]"
        backends = "ARRAY[" + ",".join(str(i) for i in backend_ids) + "]::bigint[]"
        c.execute(
            f"""
            INSERT INTO generation_generationtask
                (user_id, prompt, negative_prompt, checkpoint_id, model_name, template_id, width, height, steps,
                 cfg, sampler, scheduler, seed, batch_size, denoise, source_image_id, callback_url, api_token_id,
                 status, status_message, progress_value, progress_max, progress_node, backend_id, prompt_id,
                 client_id, rendered_prompt, attempts, retries, assigned_at, waiting_since, share_token,
                 shared_at, files_removed_at, error_code, error_message, error_fields, lease_owner, lease_until,
                 created_at, submitted_at, started_at, completed_at, updated_at)
            SELECT
                %(first_user)s + floor(%(n_users)s * r.u ^ 3)::int,
                'a ' || w[1 + (g * 7) %% 20] || ' with ' || w[1 + (g * 13) %% 20] || ', ' || w[1 + (g / 3) %% 20]
                    || ' style, highly detailed, soft light',
                'blurry', ck[1 + g %% {len(checkpoints)}], cn[1 + g %% {len(checkpoints)}], NULL, 512, 512, 20,
                7.0, 'euler', 'normal', (g * 2654435761) %% 4294967296, 1 + (g %% 4 = 0)::int, NULL, NULL, '', NULL,
                s.status, '', 20, 20, '',
                CASE WHEN s.status = 'pending' THEN NULL ELSE bk[1 + g %% {len(backend_ids)}] END,
                gen_random_uuid(), 'easel-' || md5(g::text), NULL,
                CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END, 0,
                CASE WHEN s.status = 'pending' THEN NULL ELSE t.created + interval '1 second' END, NULL, NULL,
                NULL, NULL,
                CASE WHEN s.status = 'failed' THEN 'comfy_error' ELSE '' END,
                CASE WHEN s.status = 'failed' THEN 'ComfyUI reported an error' ELSE '' END,
                '{{}}'::jsonb, '', NULL,
                t.created,
                CASE WHEN s.status = 'pending' THEN NULL ELSE t.created + interval '1 second' END,
                CASE WHEN s.status IN ('pending', 'cancelled') THEN NULL
                     ELSE t.created + interval '2 seconds' END,
                CASE WHEN s.status = 'pending' THEN NULL
                     ELSE t.created + interval '2 seconds' + interval '1 second' * (3 + 20 * r.d) END,
                t.created + interval '30 seconds'
            -- random() in the FROM subquery: once per row (an uncorrelated LATERAL would run once).
            FROM (
                SELECT g, random() AS u, random() AS d, random() AS st FROM generate_series(1, %(tasks)s) g
            ) r
            CROSS JOIN (SELECT {words} AS w, {ckpt_ids} AS ck, {ckpt_names} AS cn, {backends} AS bk) a
            CROSS JOIN LATERAL (
                SELECT now() - interval '90 days' * (1 - g::float8 / %(tasks)s) - interval '1 minute' AS created
            ) t
            CROSS JOIN LATERAL (
                SELECT CASE WHEN g > %(tasks)s - 20 THEN 'pending'
                            WHEN r.st < 0.90 THEN 'completed'
                            WHEN r.st < 0.95 THEN 'failed'
                            WHEN r.st < 0.99 THEN 'cancelled'
                            ELSE 'pending' END AS status
            ) s
            ORDER BY g
            """,
            {"first_user": first_user, "n_users": n_users, "tasks": tasks},
        )
        print(f"  {tasks} tasks: {time.perf_counter() - t1:.1f} s")

        # Images: one per completed task, for the first `images` completed tasks.
        t2 = time.perf_counter()
        c.execute(
            """
            INSERT INTO generation_generatedimage
                (task_id, index, file, thumbnail, content_type, width, height, seed, size_bytes, created_at)
            SELECT t.id, 0,
                   'results/' || t.user_id || '/' || to_char(t.created_at, 'YYYY/MM') || '/' || t.id || '-0-x.png',
                   'thumbs/' || t.user_id || '/' || to_char(t.created_at, 'YYYY/MM') || '/' || t.id || '-0.webp',
                   'image/png', 512, 512, t.seed, 300000 + (t.id * 7919) %% 700000, t.completed_at
            FROM (
                SELECT id, user_id, created_at, completed_at, seed FROM generation_generationtask
                WHERE status = 'completed' ORDER BY id LIMIT %s
            ) t
            """,
            [images],
        )
        print(f"  {images} images: {time.perf_counter() - t2:.1f} s")
        t3 = time.perf_counter()
        c.execute("ANALYZE")
        print(f"  ANALYZE: {time.perf_counter() - t3:.1f} s")
        print(f"fill: {time.perf_counter() - t0:.1f} s")


def rollup_catch_up(*, empty: bool) -> None:
    from generation.models import RollupMark, TaskHourStat, UserDayStat
    from generation.ops.rollup import roll_up

    if empty:
        for model in (TaskHourStat, UserDayStat, RollupMark):
            model.objects.all().delete()
        print("rollup: emptied (--no-rollup): the dashboard counts every task live")
        return
    t0, runs, rows = time.perf_counter(), 0, 0
    while (done := roll_up()).hours or done.days:
        runs += 1
        rows += done.hour_rows + done.day_rows
        print(f"  rollup run {runs}: {done.hours} h, {done.days} d, {done.hour_rows + done.day_rows} rows, "
              f"{time.perf_counter() - t0:.1f} s so far")
    print(f"rollup: {runs} run(s) wrote {rows} rows in {time.perf_counter() - t0:.1f} s")
    timings = []
    for _ in range(RUNS):
        t1 = time.perf_counter()
        roll_up()
        timings.append((time.perf_counter() - t1) * 1000)
    print(f"rollup with nothing new (each tick): {statistics.median(timings):.1f} ms")


def measure(client, url: str, **extra) -> tuple[float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url, **extra)  # warm
    assert response.status_code == 200, (url, response.status_code)
    timings, queries = [], 0
    for _ in range(RUNS):
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            response = client.get(url, **extra)
            timings.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(ctx.captured_queries)
    return statistics.median(timings), queries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/easel_bench_admin")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--no-rollup", action="store_true", help="time the dashboard without its rollup")
    parser.add_argument("--show-queries", type=float, default=None, metavar="MS",
                        help="print the slowest SQL of each page at or over MS milliseconds")
    args = parser.parse_args()

    ensure_database(args.database_url)
    data_dir = tempfile.mkdtemp(prefix="easel-bench-admin-")
    os.environ["EASEL_DATA_DIR"] = data_dir
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()

    from django.conf import settings
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test Client needs it (and adds 'testserver' to ALLOWED_HOSTS)
    settings.ALLOWED_HOSTS = ["*"]

    migrate()
    fill(tasks=args.tasks, images=args.images, users=args.users)
    rollup_catch_up(empty=args.no_rollup)

    from accounts.models import User
    from accounts.services import token_create
    from django.db.models import Count
    from generation.models import GenerationTask
    from models_catalog.models import ComfyBackend

    admin_user, _created = User.objects.get_or_create(
        username="bench_admin_su", defaults={"email": "bench-admin-su@example.com", "is_staff": True,
                                             "is_superuser": True}
    )
    client = Client()
    client.force_login(admin_user)

    heavy = (
        GenerationTask.objects.filter(user__username__startswith="bench_").values("user_id")
        .annotate(n=Count("id")).order_by("-n")[:1].get()
    )
    heavy_user = User.objects.get(pk=heavy["user_id"])
    _token, clear = token_create(user=heavy_user, name="bench")
    backend = ComfyBackend.objects.filter(name__startswith="bench-gpu-").order_by("id").first()
    task_id = GenerationTask.objects.filter(status="completed", images__isnull=False).order_by("id").values_list(
        "id", flat=True
    ).first()

    tasks_url = "/admin/generation/generationtask/"
    pages = [
        ("task list", tasks_url, {}),
        ("task list ?status=failed", tasks_url + "?status__exact=failed", {}),
        ("task list ?backend", tasks_url + f"?backend__id__exact={backend.pk}", {}),
        ("task list ?q=lighthouse", tasks_url + "?q=lighthouse", {}),
        ("task list ?q=123", tasks_url + "?q=123", {}),
        ("task list ?p=500", tasks_url + "?p=500", {}),
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
        ms, queries = measure(client, url, **extra)
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
        flag = "  <-- SLOW (>= 1 s)" if ms >= SLOW_MS else ""
        slow += bool(flag)
        print(f"{label.ljust(width)} | {ms:9.1f} | {queries:7d}{flag}")
    print(f"\n{slow} page(s) at or over {SLOW_MS:.0f} ms")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
