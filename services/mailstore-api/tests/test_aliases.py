"""Aliases (exact, catch-all, alias to alias), and postmaster@ / abuse@ of every domain, against
the real mailstore: an RCPT is ``GET /internal/v1/recipients/{address}``, and the accounts it
answers are what a delivery is stored for."""

from __future__ import annotations

import os
import secrets
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)


def error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return dict(r.json()["error"])


@pytest.fixture
def domain(admin: httpx.Client) -> str:
    """A fresh domain of the shared mailstore, so its catch-all is the test's own."""
    name = f"a{secrets.token_hex(4)}.test"
    assert admin.post("/domains", json={"name": name}).status_code == 201
    return name


def account(admin: httpx.Client, address: str) -> str:
    r = admin.post("/users", json={"username": address, "password": "pw"})
    assert r.status_code == 201, r.text
    return str(r.json()["username"])


def alias(admin: httpx.Client, address: str, targets: list[str]) -> dict[str, Any]:
    r = admin.post("/aliases", json={"address": address, "targets": targets})
    assert r.status_code == 201, r.text
    return dict(r.json())


def rcpt(internal: httpx.Client, address: str) -> list[str]:
    r = internal.get(f"/recipients/{address}")
    assert r.status_code == 200, (address, r.text)
    return list(r.json()["accounts"])


def test_an_exact_alias_delivers_to_its_account_with_or_without_a_tag(admin, internal, domain):
    ann = account(admin, f"ann@{domain}")
    made = alias(admin, f"Sales@{domain.upper()}", [ann])
    assert made["created_at"]
    assert {k: v for k, v in made.items() if k != "created_at"} == {
        "address": f"sales@{domain}",
        "domain": domain,
        "targets": [ann],
        "accounts": [ann],
    }
    for address in (f"sales@{domain}", f"SALES@{domain}", f"sales+x@{domain}", f"sales+@{domain}"):
        r = internal.get(f"/recipients/{address}")
        assert r.json() == {"address": f"sales@{domain}", "accounts": [ann], "limited": False}, (
            address
        )
    assert error(internal.get(f"/recipients/sale@{domain}"), 404)["code"] == "unknown_user"
    assert (
        error(admin.post("/aliases", json={"address": f"sales@{domain}", "targets": [ann]}), 409)[
            "code"
        ]
        == "alias_exists"
    )
    assert [
        a["address"] for a in admin.get("/aliases", params={"domain": domain}).json()["aliases"]
    ] == [f"sales@{domain}"]
    # deleted: nobody receives at the address any more
    assert admin.delete(f"/aliases/sales@{domain}").status_code == 204
    assert error(internal.get(f"/recipients/sales@{domain}"), 404)["code"] == "unknown_user"
    assert error(admin.delete(f"/aliases/sales@{domain}"), 404)["code"] == "unknown_alias"
    assert rcpt(internal, f"ann@{domain}") == [ann]


def test_a_catch_all_takes_what_no_account_or_alias_takes(admin, internal, domain):
    ann, ben, cat = (account(admin, f"{x}@{domain}") for x in ("ann", "ben", "cat"))
    assert error(internal.get(f"/recipients/anything@{domain}"), 404)["code"] == "unknown_user"
    made = alias(admin, f"@{domain}", [cat])
    assert made["address"] == f"@{domain}" and made["accounts"] == [cat]
    alias(admin, f"sales@{domain}", [ben])
    r = internal.get(f"/recipients/Whoever+tag@{domain}")
    assert r.json() == {"address": f"whoever@{domain}", "accounts": [cat], "limited": False}
    assert rcpt(internal, f"ann@{domain}") == [ann]  # an account is itself
    assert rcpt(internal, f"sales@{domain}") == [ben]  # the exact alias wins over the catch-all
    assert rcpt(internal, f"sales+x@{domain}") == [ben]
    # the catch-all is only its domain's
    assert error(internal.get("/recipients/whoever@other.example"), 404)["code"] == "unknown_user"
    assert admin.delete(f"/aliases/@{domain}").status_code == 204
    assert error(internal.get(f"/recipients/whoever@{domain}"), 404)["code"] == "unknown_user"


def test_an_alias_of_three_accounts_stores_one_copy_each(mailstore, admin, internal, domain):
    members = [account(admin, f"m{i}@{domain}") for i in range(3)]
    other = account(admin, f"solo@{domain}")
    alias(admin, f"team@{domain}", members)
    alias(admin, f"leads@{domain}", [f"team@{domain}", members[0]])  # an alias of an alias
    assert rcpt(internal, f"team@{domain}") == members
    assert rcpt(internal, f"leads+q@{domain}") == members  # each account once
    # what smtp-in does: every RCPT's accounts, one delivery for all of them
    recipients = rcpt(internal, f"team@{domain}") + rcpt(internal, f"leads@{domain}") + [other]
    r = internal.post(
        "/deliveries",
        params=[("recipient", x) for x in recipients],
        content=b"Subject: to the team\r\n\r\nhello\r\n",
    )
    assert r.status_code == 201, r.text
    assert r.json()["recipients"] == [*members, other]
    mid = r.json()["id"]
    for member in [*members, other]:
        (path,) = mailstore.files(member, "new")
        assert path.name == mid
        assert path.read_bytes() == b"Subject: to the team\n\nhello\n"
        assert admin.get(f"/users/{member}").json()["messages"] == 1
    assert os.stat(mailstore.maildir(members[0]) / "new" / mid).st_nlink == 4  # one file, 4 links


def test_sender_addresses_are_the_account_and_the_aliases_that_reach_it(admin, internal, domain):
    """smtp-submit's question: as whom may this account send? Its own address, and every alias
    that delivers to it (directly or through another alias); never a catch-all's addresses."""
    bob = account(admin, f"bob@{domain}")
    eve = account(admin, f"eve@{domain}")
    alias(admin, f"team@{domain}", [bob, eve])
    alias(admin, f"all@{domain}", [f"team@{domain}"])
    alias(admin, f"eves@{domain}", [eve])
    alias(admin, f"@{domain}", [bob])

    def senders(name: str) -> httpx.Response:
        return internal.get(f"/accounts/{name}/sender-addresses")

    r = senders(bob)
    assert r.status_code == 200, r.text
    assert r.json() == {"account": bob, "addresses": [bob, f"all@{domain}", f"team@{domain}"]}
    assert senders(eve).json()["addresses"] == [
        eve,
        f"all@{domain}",
        f"eves@{domain}",
        f"team@{domain}",
    ]
    assert error(senders(f"nobody@{domain}"), 404)["code"] == "unknown_user"


def test_loops_dangling_targets_and_clashes_are_refused(admin, internal, domain):
    ann = account(admin, f"ann@{domain}")
    alias(admin, f"a@{domain}", [ann])
    alias(admin, f"b@{domain}", [f"a@{domain}"])
    alias(admin, f"c@{domain}", [f"b@{domain}"])
    before = admin.get("/aliases", params={"domain": domain}).json()
    for address, targets, code in (
        (f"self@{domain}", [f"self@{domain}"], "alias_loop"),
        (f"d@{domain}", [f"nobody@{domain}"], "unknown_target"),
        (f"d@{domain}", [ann, f"nobody@{domain}"], "unknown_target"),
        (f"d@{domain}", ["nobody@elsewhere.example"], "unknown_target"),
        (f"d@{domain}", ["not an address"], "invalid_target"),
        (f"d@{domain}", [f"@{domain}"], "invalid_target"),
        (f"d@{domain}", [], "validation_error"),
        (f"x@elsewhere-{domain}", [ann], "unknown_domain"),
        ("bad address@" + domain, [ann], "invalid_alias"),
    ):
        r = admin.post("/aliases", json={"address": address, "targets": targets})
        assert error(r, 422)["code"] == code, (address, targets, r.text)
    # a loop through other aliases: a -> ... must not lead back to a
    r = admin.delete(f"/aliases/a@{domain}")
    assert r.status_code == 204
    looped = admin.post("/aliases", json={"address": f"a@{domain}", "targets": [f"c@{domain}"]})
    assert error(looped, 422)["code"] == "alias_loop"
    alias(admin, f"a@{domain}", [ann])
    # an alias cannot take an account's address, nor an account an alias's
    r = admin.post("/aliases", json={"address": ann, "targets": [f"a@{domain}"]})
    assert error(r, 409)["code"] == "address_is_account"
    r = admin.post("/users", json={"username": f"b@{domain}", "password": "pw"})
    assert error(r, 409)["code"] == "address_is_alias"
    after = admin.get("/aliases", params={"domain": domain}).json()
    assert sorted(a["address"] for a in after["aliases"]) == sorted(
        a["address"] for a in before["aliases"]
    )
    assert rcpt(internal, f"c@{domain}") == [ann]


def test_aliases_survive_a_restart(make_mailstore):
    store = make_mailstore()
    store.start()
    with store.admin() as admin:
        ann = account(admin, "ann")
        alias(admin, "sales", [ann])  # a bare name: the primary domain
        alias(admin, "@other.example", ["sales"])
    store.stop()
    store.start()
    with store.admin() as admin, store.internal() as internal:
        assert rcpt(internal, f"sales@{store.primary}") == [ann]
        assert rcpt(internal, "anyone@other.example") == [ann]
        listed = {a["address"]: a for a in admin.get("/aliases").json()["aliases"]}
        assert listed[f"sales@{store.primary}"]["targets"] == [ann]
        assert listed["@other.example"]["targets"] == [f"sales@{store.primary}"]


# -- postmaster@ and abuse@ ----------------------------------------------------------------------


def test_postmaster_and_abuse_reach_the_first_account_created(make_mailstore):
    store = make_mailstore()
    store.start()
    with store.admin() as admin, store.internal() as internal:
        r = internal.get(f"/recipients/postmaster@{store.primary}")
        assert error(r, 503)["code"] == "no_postmaster"  # nobody yet: try again later, no 550
        first = account(admin, "first")
        account(admin, "second@other.example")
        assert admin.post("/domains", json={"name": "third.test"}).status_code == 201
        for domain in (store.primary, "other.example", "third.test"):
            for local in ("postmaster", "abuse", "Postmaster", "ABUSE", "postmaster+x"):
                r = internal.get(f"/recipients/{local}@{domain}")
                assert r.json() == {
                    "address": f"{local.lower().partition('+')[0]}@{domain}",
                    "accounts": [first],
                    "limited": False,
                }, (local, domain)
        # the first account gone: the next one created
        assert admin.delete("/users/first").status_code == 204
        assert rcpt(internal, "postmaster@third.test") == ["second@other.example"]
        # a domain of someone else's is still not ours
        r = internal.get("/recipients/postmaster@elsewhere.example")
        assert error(r, 404)["code"] == "unknown_domain"


def test_postmaster_address_names_the_account_and_an_alias_wins(make_mailstore):
    store = make_mailstore(POSTMASTER_ADDRESS="boss@other.example")
    store.start()
    with store.admin() as admin, store.internal() as internal:
        first = account(admin, "first")
        # named but not created yet: the first account
        assert rcpt(internal, "postmaster@other.example") == [first]
        boss = account(admin, "boss@other.example")
        for domain in (store.primary, "other.example"):
            assert rcpt(internal, f"postmaster@{domain}") == [boss]
            assert rcpt(internal, f"abuse@{domain}") == [boss]
        # an operator points one domain's abuse@ and postmaster@ elsewhere
        desk = account(admin, "desk")
        alias(admin, "abuse@other.example", [desk])
        alias(admin, "postmaster@other.example", [desk, boss])
        assert rcpt(internal, "abuse@other.example") == [desk]
        assert rcpt(internal, "postmaster@other.example") == [desk, boss]
        assert rcpt(internal, f"abuse@{store.primary}") == [boss]  # other domains unchanged
        # an account of that name is itself, before the role
        own = account(admin, f"postmaster@{store.primary}")
        assert rcpt(internal, f"postmaster@{store.primary}") == [own]
        assert rcpt(internal, f"abuse@{store.primary}") == [boss]
        # a catch-all does not take them
        alias(admin, "@other.example", [first])
        assert admin.delete("/aliases/abuse@other.example").status_code == 204
        assert rcpt(internal, "abuse@other.example") == [boss]
        assert rcpt(internal, "someone@other.example") == [first]
