"""The login cache: a name and password verified lately skip the mailstore's check, and stop
working the moment the password changes or the account goes."""

from __future__ import annotations

import poplib

import pytest
from mailstack.stack import Stack
from pop3kit import HOST, Mail, account


def cached_logins(stack: Stack, user: str, sessions: int) -> list[bool]:
    """``cached_login`` of the first ``sessions`` session lines of ``user`` (waits for them)."""
    found = stack.wait_for_log("pop3", {"event": "session", "user": account(user)}, count=sessions)
    return [bool(line["cached_login"]) for line in found[:sessions]]


def log_in(stack: Stack, user: str, password: str) -> poplib.POP3:
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    pop.user(user)
    pop.pass_(password)
    return pop


def test_a_repeated_login_is_known_and_sees_the_same_mailbox(stack: Stack, mail: Mail) -> None:
    user, password = mail.user()
    mail.deliver(user, b"Subject: one\n\nfirst\n")
    pop = log_in(stack, user, password)
    assert pop.stat()[0] == 1
    pop.quit()
    mail.deliver(user, b"Subject: two\n\nsecond\n")
    pop = log_in(stack, user, password)  # known: the lock and the snapshot are still taken
    assert pop.stat()[0] == 2
    pop.quit()
    assert cached_logins(stack, user, 2) == [False, True]


def test_a_changed_password_ends_the_known_login_at_once(stack: Stack, mail: Mail) -> None:
    user, old = mail.user()
    log_in(stack, user, old).quit()
    r = mail.admin.put(f"/users/{user}/password", json={"password": "a-new-password-9"})
    assert r.status_code in (200, 204), r.text
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        log_in(stack, user, old)
    log_in(stack, user, "a-new-password-9").quit()
    assert cached_logins(stack, user, 2) == [False, False]


def test_a_deleted_account_is_not_let_in_from_the_cache(stack: Stack, mail: Mail) -> None:
    user, password = mail.user()
    log_in(stack, user, password).quit()
    r = mail.admin.delete(f"/users/{user}", params={"purge": "true"})
    assert r.status_code in (200, 204), r.text
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        log_in(stack, user, password)
    # and a wrong password for a known name is checked (and refused) as usual
    other, right = mail.user()
    log_in(stack, other, right).quit()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        log_in(stack, other, right + "x")
