"""The REST API under /api/v1/ (URLs in `urls`), as app clients use it.

- `tasks`: create, follow, cancel, retry, delete; `history`: the caller's tasks.
- `files`: pictures and live previews; `uploads`: source images; `catalog`: models, quota.
- `webhooks`: the caller's deliveries and signing secret; `schema`: shared OpenAPI pieces.

Views are thin: they parse, call a service or selector, and answer with
`generation.representation`'s shapes or the one error body (`config.api_errors`).
"""
