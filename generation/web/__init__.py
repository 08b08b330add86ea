"""The studio's pages, server-rendered (URLs in `urls`).

- `generate`: the generate page and its form (`forms`).
- `tasks`: one task's page and the owner's acts on it; `status`: a task's state in words.
- `history`: the user's tasks, filters, bulk delete and zip.
- `files`: the owner's pictures; `sharing`: the public share pages.
"""
