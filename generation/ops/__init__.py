"""Running the studio: what staff and monitoring read.

- `rollup`: finished tasks summed per hour and per user-day (the dashboard's past).
- `stats`: the dashboard's numbers; `dashboard` / `admin_urls`: its page in the admin.
- `doctor`: the health checks behind `manage.py doctor` and the dashboard.
- `health`: the load balancer's endpoints (`/api/v1/health`, `live`, `ready`).
- `metrics`: the Prometheus series; `metrics_view` / `metrics_urls`: `/metrics`, protected.
"""
