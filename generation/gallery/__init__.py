"""The gallery: every stored picture, in and out.

- `results`: a task's output pictures, stored with a thumbnail; removed with their files.
- `uploads` / `selectors`: source images for image-to-image (validated, re-encoded).
- `files`: streaming pictures to whoever may see them (`?download=` read one way).
- `sharing`: public read-only links to a finished task.
- `zips`: several pictures as one streamed zip.
- `retention`: the operator's history and storage limits, and the orphan sweep.
"""
