"""What every console route shares: the :class:`Console` (sessions, templates, the sign-in
throttle), the session cookie, and the dependencies that demand a session."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from mailauth.dns import Resolver
from mailcommon.throttle import AuthThrottle
from starlette.responses import Response

from mailstore_api.settings import MailstoreSettings
from mailstore_api.state import State, get_state
from mailstore_api.ui.sessions import Session, Sessions

COOKIE = "maildrop_console"
COOKIE_PATH = "/ui/"
TEMPLATES = Path(__file__).parent / "templates"


def root(request: Request) -> str:
    """Where the console is mounted (``/ui``): the prefix of its links."""
    return str(request.scope.get("root_path", ""))


class SignInRequired(Exception):
    """No live session: a page sends the browser to sign in, a change is refused (403)."""


@dataclass
class Console:
    settings: MailstoreSettings
    sessions: Sessions
    templates: Jinja2Templates = field(
        default_factory=lambda: Jinja2Templates(directory=str(TEMPLATES))
    )
    _throttle: AuthThrottle | None = None
    _resolver: Resolver | None = None

    @classmethod
    def of(cls, settings: MailstoreSettings) -> Console:
        return cls(settings, Sessions(settings.console_session_idle, settings.console_session_max))

    def throttle(self, state: State) -> AuthThrottle:
        """Failed sign-ins in Redis, as POP3's failed logins (keys under ``console:``)."""
        if self._throttle is None:
            self._throttle = AuthThrottle(
                state.redis,
                self.settings.console_auth_fail_window,
                self.settings.console_auth_fail_max_per_ip,
                self.settings.console_auth_fail_max,
                self.settings.console_auth_fail_max_per_ip,
                prefix="console",
            )
        return self._throttle

    def resolver(self) -> Resolver:
        """The DNS page's resolver (DNS_NAMESERVERS, as smtp-in's checks), made on first use."""
        if self._resolver is None:
            self._resolver = self.settings.resolver()
        return self._resolver

    def set_cookie(self, request: Request, response: Response, session_id: str) -> None:
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=self.settings.console_session_max,
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    def page(
        self,
        request: Request,
        name: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> Response:
        """Render template ``name``; a session's one-time notice goes with it."""
        flash = None
        if session is not None:
            flash, session.flash = session.flash, None
        return self.templates.TemplateResponse(
            request,
            name,
            {
                "root": root(request),
                "csrf": session.csrf if session else "",
                "flash": flash,
                "signed_in": session is not None,
                **context,
            },
            status_code=status,
        )


def console_of(request: Request) -> Console:
    return cast(Console, request.app.state.console)


def session_of(request: Request) -> Session | None:
    return console_of(request).sessions.get(request.cookies.get(COOKIE))


async def signed_in(request: Request) -> Session:
    """Dependency: the request's live session, else :class:`SignInRequired`."""
    session = session_of(request)
    if session is None:
        raise SignInRequired
    return session


ConsoleDep = Annotated[Console, Depends(console_of)]
SessionDep = Annotated[Session, Depends(signed_in)]
StateDep = Annotated[State, Depends(get_state)]
