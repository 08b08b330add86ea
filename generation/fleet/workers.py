"""Is a django-q2 cluster running? Read from the heartbeats clusters write to the shared cache."""
from __future__ import annotations

import logging

from django_q.status import Stat

logger = logging.getLogger(__name__)


def worker_status() -> dict:
    try:
        stats = Stat.get_all()
    except Exception:  # a broken cache must read as "no worker", not crash the page
        logger.warning("could not read qcluster heartbeats", exc_info=True)
        stats = []
    clusters = [
        {
            "id": str(stat.cluster_id),
            "host": stat.host,
            "status": stat.status,
            "workers": len(stat.workers or []),
            "started_at": stat.tob.isoformat() if getattr(stat, "tob", None) else None,
        }
        for stat in stats or []
    ]
    return {"alive": bool(clusters), "clusters": clusters}
