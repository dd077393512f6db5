"""Admin REST API under ``/api/v1`` (admin token): users, passwords, quotas, APOP secrets,
messages. A user is an account address; a bare name is in the primary domain.
Domains and aliases: :mod:`mailstore_api.api.addresses`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.security import HTTPBearer
from mailcommon.addresses import normalize_domain
from pydantic import BaseModel, Field

from mailstore_api import accounts, messages
from mailstore_api.db import AccountRow
from mailstore_api.errors import ApiError, documented
from mailstore_api.maildir import MessageEntry, UnknownMailbox
from mailstore_api.search import Rows
from mailstore_api.state import State, get_state
from mailstore_api.streaming import message_response

# Authentication is enforced by the middleware (before anything else); this is for the docs.
_bearer = HTTPBearer(auto_error=False, scheme_name="admin token")
router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(_bearer)])
StateDep = Annotated[State, Depends(get_state)]


class NewUser(BaseModel):
    username: str = Field(
        max_length=320, description="local@domain, or a bare name (in the primary domain)"
    )
    password: str = Field(max_length=4096)
    quota_bytes: int | None = Field(
        default=None, ge=0, description="octets; 0: unlimited; absent: DEFAULT_QUOTA_BYTES"
    )
    quota_messages: int | None = Field(default=None, ge=0, description="0 or absent: unlimited")


class QuotaChange(BaseModel):
    """The fields given are changed; null puts one back to its default."""

    quota_bytes: int | None = Field(default=None, ge=0)
    quota_messages: int | None = Field(default=None, ge=0)


class NewPassword(BaseModel):
    password: str = Field(max_length=4096)


class ApopSecret(BaseModel):
    secret: str = Field(min_length=1, max_length=1024)


class User(BaseModel):
    username: str = Field(description="the account's address, local@domain")
    domain: str
    created_at: str
    messages: int
    bytes: int
    apop: bool
    quota_bytes: int = Field(description="octets the account may store; 0: unlimited")
    quota_bytes_default: bool = Field(description="quota_bytes is DEFAULT_QUOTA_BYTES")
    quota_messages: int = Field(description="0: unlimited")


class UserList(BaseModel):
    users: list[User]


class DkimVerdict(BaseModel):
    result: str
    domain: str | None
    selector: str | None


class Authentication(BaseModel):
    """What smtp-in's Authentication-Results header (authserv-id MAIL_HOSTNAME) says; ``null``
    results: the message carries none (checks off, or stored before they existed)."""

    spf: str | None = Field(description="pass, fail, softfail, neutral, none, temperror, permerror")
    dkim: list[DkimVerdict] = Field(description="one per signature verified; [] when unsigned")
    arc: str | None = Field(description="none, pass, fail")
    dmarc: str | None = Field(description="pass, fail, none, temperror, permerror")
    dmarc_policy: str | None = Field(description="the sender's policy: none, quarantine, reject")


class Spam(BaseModel):
    flagged: bool = Field(description="X-Spam: Yes (rspamd's verdict or DMARC quarantine)")
    score: float | None = Field(description="rspamd's score, when it scanned the message")
    scanner_unavailable: bool = Field(description="rspamd was configured but did not answer")


class MessageSummary(BaseModel):
    id: str
    uidl: str
    size: int = Field(description="octets as stored (LF line ends)")
    size_crlf: int = Field(description="octets with CRLF line ends (what POP3 reports)")
    received: str
    from_: str | None = Field(alias="from")
    to: str | None
    subject: str | None
    date: str | None
    authentication: Authentication
    spam: Spam


class MessagePage(BaseModel):
    total: int
    offset: int
    limit: int
    messages: list[MessageSummary]


def _user_of(state: State, row: AccountRow) -> User:
    used = state.usage.of(row.address)
    account = state.directory.accounts[row.address]
    quota = accounts.quota(state, row.address)
    return User(
        username=row.address,
        domain=row.domain,
        created_at=row.created_at,
        messages=used.messages,
        bytes=used.bytes,
        apop=row.apop_secret is not None,
        quota_bytes=quota.bytes,
        quota_bytes_default=account.quota_bytes is None,
        quota_messages=quota.messages,
    )


async def _user(state: State, username: str) -> User:
    return _user_of(state, await accounts.get_account(state, username))


async def _entries(state: State, username: str) -> list[MessageEntry]:
    address = accounts.known_user(state, username)
    try:
        entries: list[MessageEntry] = await state.run_io(state.store.messages, address)
    except UnknownMailbox as exc:
        raise ApiError(404, "unknown_user", "no such user") from exc
    return entries


async def _entry(state: State, username: str, message_id: str) -> MessageEntry:
    address = accounts.known_user(state, username)
    try:
        entry: MessageEntry | None = await state.run_io(state.store.entry, address, message_id)
    except UnknownMailbox as exc:
        raise ApiError(404, "unknown_user", "no such user") from exc
    if entry is None:
        raise ApiError(404, "unknown_message", "no such message")
    return entry


@router.post("/users", status_code=201, responses=documented(409, e409="user_exists"))
async def create_user(body: NewUser, state: StateDep) -> User:
    """Create a user (an account address; a bare name is in the primary domain) and its Maildir.

    422 ``unknown_domain`` when the domain is not one of the server's; 409 ``user_exists`` or
    ``address_is_alias``.
    """
    address = await accounts.create_account(
        state, body.username, body.password, body.quota_bytes, body.quota_messages
    )
    return await _user(state, address)


@router.get("/users")
async def list_users(
    state: StateDep, domain: Annotated[str | None, Query(max_length=253)] = None
) -> UserList:
    """Every user (or a domain's), with message count, stored bytes and quota."""
    rows: list[AccountRow] = await state.run_io(state.db.accounts)
    if domain is not None:
        wanted = normalize_domain(domain)
        rows = [row for row in rows if row.domain == wanted]
    return UserList(
        users=[_user_of(state, row) for row in rows if row.address in state.directory.accounts]
    )


@router.get("/users/{username}", responses=documented(404))
async def get_user(username: str, state: StateDep) -> User:
    """One user."""
    return await _user(state, username)


@router.patch("/users/{username}", responses=documented(404))
async def change_user(username: str, body: QuotaChange, state: StateDep) -> User:
    """Change a user's quota (the fields given; null: back to the default)."""
    address = accounts.known_user(state, username)
    account = state.directory.accounts[address]
    given = body.model_fields_set
    await accounts.set_quota(
        state,
        address,
        body.quota_bytes if "quota_bytes" in given else account.quota_bytes,
        body.quota_messages if "quota_messages" in given else account.quota_messages,
    )
    return await _user(state, address)


@router.put("/users/{username}/password", status_code=204, responses=documented(404))
async def set_password(username: str, body: NewPassword, state: StateDep) -> Response:
    """Change a password (cached logins of the user are forgotten)."""
    await accounts.set_password(state, username, body.password)
    return Response(status_code=204)


@router.delete(
    "/users/{username}",
    status_code=204,
    responses=documented(404, 409, 423, 503, e409="mailbox_not_empty (without purge)"),
)
async def delete_user(
    username: str, state: StateDep, purge: Annotated[bool, Query()] = False
) -> Response:
    """Delete a user; 409 while mail remains unless ``purge=true`` (423 while POP3 holds it)."""
    address = accounts.known_user(state, username)
    if purge:
        await accounts.refuse_while_locked(state, address)
    await accounts.delete_account(state, address, purge)
    return Response(status_code=204)


@router.put("/users/{username}/apop-secret", status_code=204, responses=documented(404))
async def set_apop_secret(username: str, body: ApopSecret, state: StateDep) -> Response:
    """Set the user's APOP secret (stored encrypted; used only when APOP_ENABLED)."""
    await accounts.set_apop_secret(state, username, body.secret)
    return Response(status_code=204)


@router.delete("/users/{username}/apop-secret", status_code=204, responses=documented(404))
async def delete_apop_secret(username: str, state: StateDep) -> Response:
    """Remove the user's APOP secret."""
    await accounts.set_apop_secret(state, username, None)
    return Response(status_code=204)


@router.get("/users/{username}/messages", responses=documented(404))
async def list_messages(
    username: str,
    state: StateDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    *,
    q: Annotated[str | None, Query(max_length=500, description="words to search for")] = None,
    field: Annotated[
        Literal["from", "to", "subject", "text"] | None,
        Query(description="where to search q; absent: everywhere"),
    ] = None,
) -> MessagePage:
    """A page of the user's messages, oldest first; with ``q``, the messages with every word
    of it (as a word prefix, in ``field`` or anywhere), newest first, from the search index
    (which follows a delivery within milliseconds)."""
    return await message_page(state, username, offset, limit, newest_first=False, q=q, field=field)


async def message_page(
    state: State,
    username: str,
    offset: int,
    limit: int,
    *,
    newest_first: bool,
    q: str | None = None,
    field: str | None = None,
) -> MessagePage:
    """A page of the listing (by received time) or of a search, from the message index; the
    listing from the Maildir while the index cannot answer for it (see ``search.py``)."""
    address = accounts.known_user(state, username)
    if q is not None:
        found = await state.run_io(state.search.search, address, q, field, offset, limit)
    else:
        listed = await state.run_io(state.search.listing, address, offset, limit, newest_first)
        found = listed or await _listing_from_maildir(state, address, offset, limit, newest_first)
    return MessagePage(
        total=found.total,
        offset=offset,
        limit=limit,
        messages=[MessageSummary.model_validate(r) for r in found.rows],
    )


async def _listing_from_maildir(
    state: State, address: str, offset: int, limit: int, newest_first: bool
) -> Rows:
    entries = await _entries(state, address)
    page = (entries[::-1] if newest_first else entries)[offset : offset + limit]
    authserv_id = state.settings.mail_hostname
    rows = await state.run_io(lambda: [messages.summary(e, authserv_id) for e in page])
    return Rows(len(entries), rows)


@router.get("/users/{username}/messages/{message_id}", responses=documented(404))
async def get_message(username: str, message_id: str, state: StateDep) -> dict[str, Any]:
    """One message parsed: headers, MIME parts with types and sizes, decoded text bodies."""
    entry = await _entry(state, username, message_id)
    try:
        parsed: dict[str, Any] = await state.run_io(
            messages.parse, entry.path, entry.id, state.settings.mail_hostname
        )
    except FileNotFoundError as exc:
        raise ApiError(404, "unknown_message", "no such message") from exc
    return {
        **parsed,
        "uidl": entry.id,
        "size": entry.size,
        "size_crlf": entry.size_crlf,
        "received": messages.iso(entry.received),
    }


@router.get(
    "/users/{username}/messages/{message_id}/raw",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}}, **documented(404)},
)
async def get_raw(username: str, message_id: str, state: StateDep) -> Response:
    """The message as stored, ``message/rfc822``, streamed."""
    address = accounts.known_user(state, username)
    try:
        path = await state.run_io(state.store.find, address, message_id)
    except UnknownMailbox as exc:
        raise ApiError(404, "unknown_user", "no such user") from exc
    return await message_response(
        state,
        path,
        "message/rfc822",
        {"Content-Disposition": f'inline; filename="{message_id}.eml"'},
    )


@router.delete(
    "/users/{username}/messages/{message_id}",
    status_code=204,
    responses=documented(404, 423, 503),
)
async def delete_message(username: str, message_id: str, state: StateDep) -> Response:
    """Delete one message; 423 while a POP3 session holds the lock, 503 when Redis is down."""
    address = accounts.known_user(state, username)
    try:
        if await state.run_io(state.store.find, address, message_id) is None:
            raise ApiError(404, "unknown_message", "no such message")
        await accounts.refuse_while_locked(state, address)
        done = await state.run_io(state.store.delete, address, [message_id])
    except UnknownMailbox as exc:
        raise ApiError(404, "unknown_user", "no such user") from exc
    if not done.deleted:
        raise ApiError(404, "unknown_message", "no such message")
    state.usage.removed(address, len(done.deleted), done.octets)
    state.search.removed(address, done.deleted)
    return Response(status_code=204)
