"""Domains over the admin API, and accounts as ``local@domain`` (a bare name: the primary domain),
against the real mailstore: real SQLite, real Maildirs, real HTTP."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


def error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"]
    return dict(body["error"])


def new_domain(admin: httpx.Client) -> str:
    name = f"d{secrets.token_hex(4)}.test"
    assert admin.post("/domains", json={"name": name}).status_code == 201
    return name


def listed(admin: httpx.Client) -> dict[str, dict[str, Any]]:
    r = admin.get("/domains")
    assert r.status_code == 200
    return {d["name"]: d for d in r.json()["domains"]}


def deliver(internal: httpx.Client, recipients: list[str], body: bytes = MESSAGE) -> dict[str, Any]:
    r = internal.post("/deliveries", params=[("recipient", x) for x in recipients], content=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_domains_of_mail_domains_are_seeded_the_first_primary(mailstore, admin):
    domains = listed(admin)
    assert domains[mailstore.primary]["primary"] is True
    assert domains["other.example"]["primary"] is False
    assert [name for name, d in domains.items() if d["primary"]] == [mailstore.primary]


def test_add_list_with_counts_and_duplicates(admin):
    name = f"d{secrets.token_hex(4)}.test"
    r = admin.post("/domains", json={"name": name})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created_at"]
    assert {k: v for k, v in body.items() if k != "created_at"} == {
        "name": name,
        "unicode": name,
        "primary": False,
        "accounts": 0,
        "aliases": 0,
    }
    # the same domain in another spelling is the same domain
    for same in (name, name.upper(), name + "."):
        assert error(admin.post("/domains", json={"name": same}), 409)["code"] == "domain_exists"
    for user in ("ann", "ben"):
        r = admin.post("/users", json={"username": f"{user}@{name}", "password": "pw"})
        assert r.status_code == 201, r.text
    r = admin.post("/aliases", json={"address": f"team@{name}", "targets": [f"ann@{name}"]})
    assert r.status_code == 201, r.text
    assert listed(admin)[name] == {**body, "accounts": 2, "aliases": 1}
    users = admin.get("/users", params={"domain": name}).json()["users"]
    assert sorted(u["username"] for u in users) == [f"ann@{name}", f"ben@{name}"]
    assert {u["domain"] for u in users} == {name}


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "-bad.test",
        "bad-.test",
        "a..b.test",
        "bad_name.test",
        "bad name.test",
        "a" * 64 + ".test",
        "[192.0.2.1]",
        "xn--zz.test",  # an A-label that does not decode
        "bad/../name.test",
        "nul\x00.test",
    ],
)
def test_invalid_domain_names_are_422(admin, name):
    before = listed(admin)
    assert error(admin.post("/domains", json={"name": name}), 422)["code"] == "invalid_domain"
    assert listed(admin) == before


def test_a_domain_name_over_253_octets_is_422(admin):
    name = ("a" * 62 + ".") * 3 + "a" * 60 + ".test"
    assert len(name) == 254
    assert error(admin.post("/domains", json={"name": name}), 422)["code"] == "validation_error"
    assert name not in listed(admin)


def test_idna_domain_is_stored_as_a_labels_and_shown_in_both_forms(make_mailstore):
    store = make_mailstore()
    store.start()
    with store.admin() as admin, store.internal() as internal:
        r = admin.post("/domains", json={"name": "straße.test"})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "xn--strae-oqa.test"  # IDNA 2008, not 2003's strasse.test
        assert r.json()["unicode"] == "straße.test"
        assert listed(admin)["xn--strae-oqa.test"]["unicode"] == "straße.test"
        for same in ("xn--strae-oqa.test", "STRASSE.test".replace("SS", "ß"), "Straße.Test"):
            assert error(admin.post("/domains", json={"name": same}), 409)["code"] == (
                "domain_exists"
            )
        assert "strasse.test" not in listed(admin)

        r = admin.post("/users", json={"username": "bob@straße.test", "password": "pw-idna"})
        assert r.status_code == 201, r.text
        assert r.json()["username"] == "bob@xn--strae-oqa.test"
        assert r.json()["domain"] == "xn--strae-oqa.test"
        assert (store.data_dir / "mail" / "xn--strae-oqa.test" / "bob" / "new").is_dir()
        for form in ("bob@straße.test", "bob@xn--strae-oqa.test", "BOB@Straße.Test"):
            assert admin.get(f"/users/{form}").json()["username"] == "bob@xn--strae-oqa.test"
            auth = internal.post("/auth", json={"username": form, "password": "pw-idna"}).json()
            assert auth["valid"] and auth["username"] == "bob@xn--strae-oqa.test"
            rcpt = internal.get(f"/recipients/{form}")
            assert rcpt.json() == {
                "address": "bob@xn--strae-oqa.test",
                "accounts": ["bob@xn--strae-oqa.test"],
                "limited": False,
            }
        stored = deliver(internal, ["bob@straße.test"])
        assert stored["recipients"] == ["bob@xn--strae-oqa.test"]
        assert [p.name for p in store.files("bob@xn--strae-oqa.test", "new")] == [stored["id"]]

        assert error(admin.delete("/domains/straße.test"), 409)["code"] == "domain_not_empty"
        assert admin.delete("/domains/straße.test", params={"force": "true"}).status_code == 204
        assert "xn--strae-oqa.test" not in listed(admin)
        assert not (store.data_dir / "mail" / "xn--strae-oqa.test").exists()


def test_delete_refuses_a_domain_with_accounts_or_aliases_unless_forced(mailstore, admin, internal):
    name = new_domain(admin)
    other = new_domain(admin)
    assert (
        admin.post("/users", json={"username": f"al@{name}", "password": "pw"}).status_code == 201
    )
    assert (
        admin.post("/users", json={"username": f"bo@{name}", "password": "pw"}).status_code == 201
    )
    r = admin.post("/aliases", json={"address": f"all@{name}", "targets": [f"al@{name}"]})
    assert r.status_code == 201
    r = admin.post("/aliases", json={"address": f"@{other}", "targets": [f"bo@{name}"]})
    assert r.status_code == 201
    stored = deliver(internal, [f"al@{name}", f"bo@{name}"])

    refused = error(admin.delete(f"/domains/{name}"), 409)
    assert refused["code"] == "domain_not_empty"
    assert (refused["accounts"], refused["aliases"]) == (2, 1)
    refused = error(admin.delete(f"/domains/{other}"), 409)  # an alias only
    assert (refused["code"], refused["accounts"], refused["aliases"]) == ("domain_not_empty", 0, 1)
    assert error(admin.delete(f"/domains/{name}", params={"force": "false"}), 409)
    # nothing was removed by the refusals
    assert [p.name for p in mailstore.files(f"al@{name}", "new")] == [stored["id"]]
    assert internal.get(f"/recipients/all@{name}").status_code == 200

    assert admin.delete(f"/domains/{name}", params={"force": "true"}).status_code == 204
    assert name not in listed(admin)
    assert not (mailstore.data_dir / "mail" / name).exists()  # the Maildirs and their mail
    for user in (f"al@{name}", f"bo@{name}"):
        assert error(admin.get(f"/users/{user}"), 404)["code"] == "unknown_user"
        auth = internal.post("/auth", json={"username": user, "password": "pw"}).json()
        assert auth == {"valid": False, "username": None, "credential_tag": None}
    assert admin.get("/aliases", params={"domain": name}).json()["aliases"] == []
    r = internal.get(f"/recipients/al@{name}")
    assert error(r, 404)["code"] == "unknown_domain"
    assert error(admin.delete(f"/domains/{name}"), 404)["code"] == "unknown_domain"
    # the domain can come back, empty
    assert admin.post("/domains", json={"name": name}).status_code == 201
    assert listed(admin)[name]["accounts"] == 0
    assert error(internal.get(f"/recipients/al@{name}"), 404)["code"] == "unknown_user"


def test_an_empty_domain_deletes_and_the_primary_stays(mailstore, admin, internal):
    name = new_domain(admin)
    assert admin.delete(f"/domains/{name.upper()}").status_code == 204
    assert name not in listed(admin)
    assert error(admin.delete(f"/domains/{mailstore.primary}"), 409)["code"] == "primary_domain"
    r = admin.delete(f"/domains/{mailstore.primary}", params={"force": "true"})
    assert error(r, 409)["code"] == "primary_domain"
    assert listed(admin)[mailstore.primary]["primary"] is True
    r = admin.post("/users", json={"username": f"x@{name}", "password": "pw"})
    assert error(r, 422)["code"] == "unknown_domain"


def test_the_same_local_part_in_two_domains_is_two_mailboxes(mailstore, admin, internal):
    local = f"bob{secrets.token_hex(3)}"
    here, there = f"{local}@{mailstore.primary}", f"{local}@other.example"
    assert admin.post("/users", json={"username": here, "password": "pw-here"}).status_code == 201
    assert admin.post("/users", json={"username": there, "password": "pw-there"}).status_code == 201
    one = deliver(internal, [here], b"Subject: for here\n\nx\n")
    two = deliver(internal, [there], b"Subject: for there\n\ny\n")
    both = deliver(internal, [here, there], b"Subject: both\n\nz\n")
    assert one["recipients"] == [here] and two["recipients"] == [there]
    assert both["recipients"] == [here, there]
    assert mailstore.maildir(here) == mailstore.data_dir / "mail" / mailstore.primary / local
    assert mailstore.maildir(there) == mailstore.data_dir / "mail" / "other.example" / local
    assert sorted(p.name for p in mailstore.files(here, "new")) == sorted([one["id"], both["id"]])
    assert sorted(p.name for p in mailstore.files(there, "new")) == sorted([two["id"], both["id"]])
    assert (mailstore.maildir(here) / "new" / one["id"]).read_bytes() == b"Subject: for here\n\nx\n"
    assert (mailstore.maildir(there) / "new" / two["id"]).read_bytes() == (
        b"Subject: for there\n\ny\n"
    )
    for address in (here, there):
        rcpt = internal.get(f"/recipients/{address}").json()
        assert rcpt == {"address": address, "accounts": [address], "limited": False}
        assert admin.get(f"/users/{address}").json()["messages"] == 2
    # each account has its own password; the bare name is the primary domain's
    for name, password, account in (
        (here, "pw-here", here),
        (local, "pw-here", here),
        (there, "pw-there", there),
    ):
        auth = internal.post("/auth", json={"username": name, "password": password}).json()
        assert auth["valid"] and auth["username"] == account, (name, auth)
    for name, password in ((here, "pw-there"), (local, "pw-there"), (there, "pw-here")):
        auth = internal.post("/auth", json={"username": name, "password": password}).json()
        assert not auth["valid"], name
    # deleting one leaves the other
    assert admin.delete(f"/users/{there}", params={"purge": "true"}).status_code == 204
    assert not mailstore.maildir(there).exists()
    assert len(mailstore.files(here, "new")) == 2
    assert admin.get(f"/users/{local}").json()["username"] == here


def test_a_bare_name_is_the_primary_domain_in_rest_paths(mailstore, admin, internal):
    local = f"cy{secrets.token_hex(3)}"
    full = f"{local}@{mailstore.primary}"
    r = admin.post("/users", json={"username": local, "password": "pw-1"})
    assert r.status_code == 201 and r.json()["username"] == full
    assert error(admin.post("/users", json={"username": full, "password": "x"}), 409)["code"] == (
        "user_exists"
    )
    assert admin.get(f"/users/{local}").json() == admin.get(f"/users/{full}").json()
    assert error(admin.get(f"/users/{local}@other.example"), 404)["code"] == "unknown_user"
    # deliveries by either name land in the one Maildir
    first = deliver(internal, [local])["id"]
    second = deliver(internal, [full.upper()])["id"]
    assert deliver(internal, [local, full])["recipients"] == [full]  # one account, stored once
    assert len(mailstore.files(full, "new")) == 3
    ids = [m["id"] for m in admin.get(f"/users/{local}/messages").json()["messages"]]
    assert ids == [m["id"] for m in admin.get(f"/users/{full}/messages").json()["messages"]]
    assert ids[:2] == [first, second]
    assert admin.get(f"/users/{full}/messages/{first}/raw").content == MESSAGE.replace(
        b"\r\n", b"\n"
    )
    assert admin.put(f"/users/{full}/password", json={"password": "pw-2"}).status_code == 204
    for name in (local, full, full.upper(), local.upper()):
        auth = internal.post("/auth", json={"username": name, "password": "pw-2"}).json()
        assert auth["valid"] and auth["username"] == full, name
    assert admin.delete(f"/users/{local}/messages/{first}").status_code == 204
    assert admin.get(f"/users/{full}").json()["messages"] == 2
    assert admin.delete(f"/users/{full}", params={"purge": "true"}).status_code == 204
    assert error(admin.get(f"/users/{local}"), 404)["code"] == "unknown_user"


def test_mail_domains_in_u_labels_seed_a_labels_and_bare_names_follow(make_mailstore):
    store = make_mailstore(MAIL_DOMAINS="Straße.Test,other.example")
    store.start()
    with store.admin() as admin, store.internal() as internal:
        domains = listed(admin)
        assert set(domains) == {"xn--strae-oqa.test", "other.example"}
        assert domains["xn--strae-oqa.test"]["primary"] is True
        assert domains["xn--strae-oqa.test"]["unicode"] == "straße.test"
        r = admin.post("/users", json={"username": "bob", "password": "pw-b"})
        assert r.json()["username"] == "bob@xn--strae-oqa.test"
        auth = internal.post("/auth", json={"username": "bob", "password": "pw-b"}).json()
        assert auth["valid"] and auth["username"] == "bob@xn--strae-oqa.test"
        assert (store.data_dir / "mail" / "xn--strae-oqa.test" / "bob" / "new").is_dir()


def test_force_is_423_while_pop3_holds_an_account_of_the_domain(mailstore, redis_server, admin):
    name = new_domain(admin)
    held = f"held@{name}"
    assert admin.post("/users", json={"username": held, "password": "pw"}).status_code == 201
    assert admin.post(
        "/users", json={"username": f"free@{name}", "password": "pw"}
    ).status_code == (201)

    lease = redis_server.acquire(held)
    try:
        r = admin.delete(f"/domains/{name}", params={"force": "true"})
        assert error(r, 423)["code"] == "mailbox_locked"
        assert listed(admin)[name]["accounts"] == 2  # nothing removed, not even the free one
        assert mailstore.maildir(f"free@{name}").is_dir()
    finally:
        redis_server.release(lease)
    assert admin.delete(f"/domains/{name}", params={"force": "true"}).status_code == 204
