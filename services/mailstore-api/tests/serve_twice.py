"""Test helper: ONE mailstore application served on two ports of one process, to compare answers.

``API_BIND_PORT`` serves what ``python -m mailstore_api`` serves (:class:`MailstoreASGI`: the fast
path, then FastAPI); ``BARE_PORT`` serves the same FastAPI application without the wrapper. Both
share one state (database, Maildirs, Redis, the user set), so the same request must get the same
answer from either. Run as ``python serve_twice.py`` with the environment of the mailstore.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import uvicorn
from launch import configured_app
from mailstore_api.fastpath import MailstoreASGI


def main() -> None:
    settings, tokens, app = configured_app()
    common: dict[str, Any] = {
        "host": settings.api_bind_host,
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
    }
    # The wrapped one runs the lifespan (it builds the state both use); the test waits for it.
    fast = uvicorn.Config(MailstoreASGI(app, tokens.service), port=settings.api_bind_port, **common)
    bare = uvicorn.Config(app, port=int(os.environ["BARE_PORT"]), lifespan="off", **common)

    async def serve() -> None:
        await asyncio.gather(uvicorn.Server(fast).serve(), uvicorn.Server(bare).serve())

    asyncio.run(serve())


if __name__ == "__main__":
    main()
