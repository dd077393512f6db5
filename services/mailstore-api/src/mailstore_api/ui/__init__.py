"""The web console: server-rendered pages (Jinja2) under ``/ui/`` on the admin port.

One FastAPI sub-application (no OpenAPI of its own: it is no API), mounted by :func:`install`,
with its own sessions (:mod:`.sessions`), CSRF checks (:mod:`.csrf`), security headers
(:mod:`.headers`) and HTML error pages (:mod:`.errors`). Every page calls the REST API's route
functions, so a rule exists once. See docs/architecture.md, "Web console".
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from mailstore_api.api import console as console_api
from mailstore_api.settings import MailstoreSettings
from mailstore_api.ui import auth
from mailstore_api.ui.console import Console
from mailstore_api.ui.errors import install_error_pages
from mailstore_api.ui.headers import SecurityHeaders
from mailstore_api.ui.pages import accounts, aliases, dns, domains, live, messages

STATIC = Path(__file__).parent / "static"


def create_console(console: Console) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.console = console
    install_error_pages(app)
    for module in (auth, domains, dns, accounts, aliases, messages, live):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(SecurityHeaders)
    return app


def install(admin_api: FastAPI, settings: MailstoreSettings) -> None:
    """Mount the console at ``/ui`` and add the REST route that sets its admin password."""
    console = Console.of(settings)
    admin_api.state.console = console
    admin_api.include_router(console_api.router)
    admin_api.mount("/ui", create_console(console))
