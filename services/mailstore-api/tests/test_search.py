"""The search index (SQLite FTS5): kept on delivery and delete, searched by the REST listing's
``q`` and the console; rebuilt from the Maildirs at start-up when it disagrees."""

from __future__ import annotations

import secrets
import sqlite3

import httpx
import pytest
from consolekit import ConsoleClient
from mailstack.ports import wait_until
from mailstore_api.search import document
from test_admin import deliver

pytestmark = pytest.mark.timeout(90)


def mail(sender: str, subject: str, body: str, html: bool = False) -> bytes:
    kind = "html" if html else "plain"
    return (
        f"From: {sender}\r\nTo: team@test.example\r\nSubject: {subject}\r\n"
        f"Content-Type: text/{kind}; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def found(admin: httpx.Client, user: str, q: str, **params: str) -> list[str]:
    r = admin.get(f"/users/{user}/messages", params={"q": q, **params})
    assert r.status_code == 200, r.text
    return [m["subject"] for m in r.json()["messages"]]


def test_deliveries_are_found_by_field_and_deletes_leave_the_index(admin, internal, new_user):
    user, _ = new_user()
    word = f"zq{secrets.token_hex(4)}"
    first = deliver(internal, user, mail("Alice <alice@example.org>", f"Invoice {word}", "pay now"))
    deliver(internal, user, mail("bob@example.net", "Lunch", f"about the {word} plan"))
    deliver(internal, user, mail("carol@example.com", "Café", "<p>naïve <b>résumé</b></p>", True))
    wait_until(lambda: len(found(admin, user, word)) == 2, 10, "both messages indexed")
    assert found(admin, user, word) == ["Lunch", f"Invoice {word}"]  # newest first
    assert found(admin, user, word, field="subject") == [f"Invoice {word}"]
    assert found(admin, user, word, field="text") == ["Lunch"]
    assert found(admin, user, "alice", field="from") == [f"Invoice {word}"]
    assert found(admin, user, "ali", field="from") == [f"Invoice {word}"]  # word prefixes
    assert found(admin, user, "team", field="to") != []
    assert found(admin, user, "resume naive") == ["Café"]  # HTML text, without tags or accents
    assert found(admin, user, "b", field="text") == []  # the <b> tag is no word of the text
    for hostile in ('"', "NEAR(a b)", "a OR", "*", "-x", "subject:x", "\\", ""):
        assert admin.get(f"/users/{user}/messages", params={"q": hostile}).status_code == 200
    assert (
        admin.get(f"/users/{user}/messages", params={"q": "x", "field": "body"}).status_code == 422
    )

    assert admin.delete(f"/users/{user}/messages/{first}").status_code == 204
    wait_until(lambda: found(admin, user, word) == ["Lunch"], 10, "the delete in the index")
    assert admin.get(f"/users/{user}/messages", params={"q": word}).json()["total"] == 1


def test_the_console_searches(mailstore, internal, new_user, admin):
    user, _ = new_user()
    word = f"kx{secrets.token_hex(4)}"
    deliver(internal, user, mail("dave@example.org", f"Report {word}", "numbers"))
    deliver(internal, user, mail("erin@example.org", "Other", "nothing"))
    wait_until(lambda: found(admin, user, word), 10, "indexed")
    with ConsoleClient(mailstore.url) as ui:
        ui.sign_in(mailstore.admin_token)
        page = ui.get(f"/ui/accounts/{user}/messages", params={"q": word, "field": "subject"})
        assert page.status_code == 200
        assert f"Report {word}" in page.text and "Other" not in page.text
        assert '<span id="message-count">1</span> found' in page.text
        # the form's "in everything" sends an empty field
        page = ui.get(f"/ui/accounts/{user}/messages", params={"q": word, "field": ""})
        assert page.status_code == 200 and f"Report {word}" in page.text


def test_the_index_is_rebuilt_from_the_maildirs_at_start(make_mailstore):
    store = make_mailstore()
    store.start()
    with store.admin() as admin, store.internal() as internal:
        admin.post("/users", json={"username": "ivy", "password": "pw"})
        kept = deliver(internal, "ivy", mail("a@example.org", "kept", "alpha"))
        gone = deliver(internal, "ivy", mail("b@example.org", "gone", "alpha"))
        wait_until(lambda: len(found(admin, "ivy", "alpha")) == 2, 10, "indexed")
    store.stop()
    # behind the mailstore's back: a message removed, the index lost
    next(p for p in store.files("ivy", "new") if p.name.startswith(gone)).unlink()
    for index_file in store.data_dir.glob("search.sqlite3*"):
        index_file.unlink()
    store.start()
    with store.admin() as admin:
        wait_until(lambda: found(admin, "ivy", "alpha") == ["kept"], 10, "re-indexed")
        assert kept in [
            m["id"]
            for m in admin.get("/users/ivy/messages", params={"q": "alpha"}).json()["messages"]
        ]
    store.stop()


def test_the_index_holds_a_messages_words_once(tmp_path):
    path = tmp_path / "message"
    path.write_bytes(mail("a@example.org", "Big", "alpha beta, alpha\r\n" * 10_000))
    sender, _, subject, text = document(path)
    assert (sender, subject) == ("a@example.org", "Big")
    assert text == "alpha beta,"  # its vocabulary, not 190 KB of repeats


@pytest.mark.parametrize("left", ["the previous schema", "junk"])
def test_an_index_of_another_schema_is_dropped_and_rebuilt(make_mailstore, left):
    store = make_mailstore()
    store.start()
    with store.admin() as admin, store.internal() as internal:
        admin.post("/users", json={"username": "joy", "password": "pw"})
        kept = deliver(internal, "joy", mail("a@example.org", "kept", "omega"))
    store.stop()
    for index_file in store.data_dir.glob("search.sqlite3*"):
        index_file.unlink()
    if left == "junk":
        (store.data_dir / "search.sqlite3").write_bytes(b"not a database " * 1000)
    else:  # as the previous version wrote it: one FTS5 table, a row of a message long gone
        with sqlite3.connect(store.data_dir / "search.sqlite3") as old:
            old.execute(
                "CREATE VIRTUAL TABLE messages USING fts5(account UNINDEXED, id UNINDEXED,"
                " received UNINDEXED, sender, recipients, subject, body)"
            )
            old.execute(
                "INSERT INTO messages VALUES ('joy@test.example', 'gone', 0, '', '', 'omega', '')"
            )
    store.start()
    with store.admin() as admin:
        wait_until(lambda: found(admin, "joy", "omega") == ["kept"], 10, "re-indexed")
        listed = admin.get("/users/joy/messages").json()
        assert [m["id"] for m in listed["messages"]] == [kept] and listed["total"] == 1
    store.stop()


def test_a_message_to_several_accounts_is_listed_and_found_in_each(admin, internal, new_user):
    first, _ = new_user()
    second, _ = new_user()
    word = f"mr{secrets.token_hex(4)}"
    r = internal.post(
        "/deliveries",
        params=[("recipient", first), ("recipient", second)],
        content=mail("Dana <dana@example.org>", f"Both {word}", "shared"),
    )
    assert r.status_code == 201, r.text
    for user in (first, second):
        assert found(admin, user, word) == [f"Both {word}"]
        listed = admin.get(f"/users/{user}/messages").json()["messages"]
        assert [(m["id"], m["from"]) for m in listed] == [
            (r.json()["id"], "Dana <dana@example.org>")
        ]
    assert admin.delete(f"/users/{first}/messages/{r.json()['id']}").status_code == 204
    wait_until(lambda: found(admin, first, word) == [], 10, "the delete in the index")
    assert found(admin, second, word) == [f"Both {word}"]  # the other copy stays


def test_header_fields_are_listed_viewed_and_found_as_people_read_them(admin, internal, new_user):
    """Encoded words decoded, 8-bit UTF-8 fields (RFC 6532) read as UTF-8, folds undone, and a
    word that cannot be decoded shown as written: the same text in the listing (from the
    index), the message view and the search."""
    user, _ = new_user()
    word = f"hf{secrets.token_hex(4)}"
    raw = (
        "From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <jm@example.org>\r\n"
        "To: Zoë Ünal <zoe@test.example>,\r\n \tteam@test.example\r\n"
        f"Subject: =?x-no-such-charset?q?odd?= {word}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nhallo\r\n"
    ).encode()
    mid = deliver(internal, user, raw)
    wait_until(lambda: found(admin, user, word) != [], 10, "the message indexed")
    listed = admin.get(f"/users/{user}/messages").json()["messages"]
    expected = {
        "from": "Jörg Müller <jm@example.org>",
        "to": "Zoë Ünal <zoe@test.example>, \tteam@test.example",
        "subject": f"=?x-no-such-charset?q?odd?= {word}",
    }
    assert [{k: m[k] for k in expected} for m in listed] == [expected]
    headers = admin.get(f"/users/{user}/messages/{mid}").json()["headers"]
    assert {h["name"].lower(): h["value"] for h in headers[:3]} == expected
    assert found(admin, user, "müller", field="from") == [expected["subject"]]
    assert found(admin, user, "zoe unal", field="to") == [expected["subject"]]
