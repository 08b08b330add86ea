"""The fleet: getting tasks onto ComfyUI backends and following them to the end.

- `dispatch`: Easel's fair queue; assigns waiting tasks to backends and queues their run jobs.
- `runner`: one task on one backend, from claim to stored images (at-least-once safe).
- `recovery`: tasks no job follows any more, and tasks that waited too long.
- `locks`: cross-process locks (dispatch, the rollup).
- `workers`: whether a django-q2 cluster is alive (its heartbeats).
- `log`: log lines that name the task, its owner, backend and prompt id.
"""
