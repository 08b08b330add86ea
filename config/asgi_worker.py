"""gunicorn's worker class for Easel: uvicorn's (uvicorn_worker.UvicornWorker), plus what
gunicorn's own settings mean to the sync worker that uvicorn's leaves out.

- A graceful stop ends the open event streams at once (config.shutdown), then waits for
  the other requests up to gunicorn's `graceful_timeout` (uvicorn's worker would wait for
  them without a limit, until gunicorn kills it).
- `limit_request_line` and `limit_request_field_size`: uvicorn's h11 parser refuses a
  request head over its own limit (16 KiB by default) with a bare 400; it is set to hold a
  request line of gunicorn's maximum plus headers, so Django's own 414 answers an
  over-long URI (config.middleware, EASEL_MAX_URI_LENGTH) as it did under gunicorn.
"""
from __future__ import annotations

import asyncio
import sys

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker as _UvicornWorker

from config import shutdown


class UvicornWorker(_UvicornWorker):
    # h11 whatever else is installed: the request-head limit below is h11's.
    CONFIG_KWARGS = {"loop": "auto", "http": "h11"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout
        self.config.lifespan = "off"  # Django answers no lifespan events
        head = self.cfg.limit_request_line + self.cfg.limit_request_fields * self.cfg.limit_request_field_size
        self.config.h11_max_incomplete_event_size = max(head, 16 * 1024)

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = Server(config=self.config)
        self._install_sigquit_handler()
        watcher = asyncio.get_running_loop().create_task(_stop_hooks_when_exiting(server))
        try:
            await server.serve(sockets=self.sockets)
        finally:
            watcher.cancel()
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


async def _stop_hooks_when_exiting(server: Server) -> None:
    # uvicorn marks `should_exit` from its signal handler; the streams end before it
    # starts waiting for open connections.
    while not server.should_exit:
        await asyncio.sleep(0.05)
    shutdown.stopping()
