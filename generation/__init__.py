"""Generation: a request becomes a task, runs on a ComfyUI backend, ends with pictures.

The core lives at this level: `models` (every table), `services` (create, cancel,
retry, delete), `selectors` (reads), `transitions` (every status change), `limits`
(parameter bounds), `quota`, `errors`, `representation` (a task as clients read it),
`task_text`, `media_types`, and `jobs` / `queue` (django-q2's entry points). The rooms
are packages: `fleet`, `comfy`, `demo_engine`, `gallery`, `webhooks`, `ops`, `api`,
`web`. docs/architecture.md has the map.
"""
