"""The web console over real HTTP: sign-in (token, admin password), throttling, the session
cookie, CSRF refusals, security headers, and the mailbox pages calling the REST API's rules."""

from __future__ import annotations

import secrets

import pytest
from consolekit import ConsoleClient

pytestmark = pytest.mark.timeout(90)


def cookie_attributes(set_cookie: str) -> set[str]:
    return {part.strip().lower() for part in set_cookie.split(";")[1:]}


def test_pages_need_a_session_and_the_rest_api_keeps_its_bearer_token(mailstore):
    with ConsoleClient(mailstore.url) as ui:
        r = ui.get("/ui/domains")
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/signin?next=/ui/domains"
        assert ui.get("/ui").status_code in {301, 307, 308}
        r = ui.post("/ui/domains", {"name": "nosession.example"}, csrf=False)
        assert r.status_code == 403
        ui.sign_in(mailstore.admin_token)
        # the console's cookie opens no REST route
        assert ui.http.get("/api/v1/users").status_code == 401


def test_sign_in_with_the_token_sets_a_strict_http_only_cookie(mailstore):
    with ConsoleClient(mailstore.url) as ui:
        page = ui.get("/ui/signin")
        assert page.status_code == 200 and "<form" in page.text
        r = ui.http.post(
            "/ui/signin", data={"password": mailstore.admin_token, "next": "/ui/aliases"}
        )
        assert r.status_code == 303 and r.headers["location"] == "/ui/aliases"
        attributes = cookie_attributes(r.headers["set-cookie"])
        assert {"httponly", "samesite=strict", "path=/ui/"} <= attributes
        assert "secure" not in attributes  # plain HTTP on loopback; Secure over TLS
        assert ui.get("/ui/domains").status_code == 200


def test_next_never_leads_off_the_console(mailstore):
    with ConsoleClient(mailstore.url) as ui:
        for given in ("https://evil.example/", "//evil.example/ui/", "/api/v1/users"):
            r = ui.http.post("/ui/signin", data={"password": mailstore.admin_token, "next": given})
            assert r.headers["location"] == "/ui/", given


def test_wrong_password_is_refused_without_a_cookie(mailstore):
    with ConsoleClient(mailstore.url) as ui:
        r = ui.http.post("/ui/signin", data={"password": "not-the-token"})
        assert r.status_code == 401
        assert "Wrong password" in r.text
        assert "set-cookie" not in r.headers
        assert ui.get("/ui/domains").status_code == 303


def test_admin_password_set_through_the_api_signs_in_and_signs_everyone_out(make_mailstore):
    store = make_mailstore()
    store.start()
    with ConsoleClient(store.url) as old, ConsoleClient(store.url) as ui:
        old.sign_in(store.admin_token)
        with store.admin() as api:
            assert api.put("/console/password", json={"password": ""}).status_code == 422
            r = api.put("/console/password", json={"password": "correct horse battery"})
            assert r.status_code == 204
        assert old.get("/ui/domains").status_code == 303  # signed out by the change
        assert ui.http.post("/ui/signin", data={"password": "wrong horse"}).status_code == 401
        ui.sign_in("correct horse battery")
        assert ui.get("/ui/accounts").status_code == 200
        r = ui.post("/ui/signout")
        assert r.status_code == 303
        assert ui.get("/ui/domains").status_code == 303


def test_failed_sign_ins_are_throttled_even_for_the_right_token(make_mailstore, own_redis):
    store = make_mailstore(
        REDIS_URL=own_redis.url, CONSOLE_AUTH_FAIL_MAX_PER_IP="3", CONSOLE_AUTH_FAIL_WINDOW="86400"
    )
    store.start()
    with ConsoleClient(store.url) as ui:
        for _ in range(3):
            assert ui.http.post("/ui/signin", data={"password": "guess"}).status_code == 401
        r = ui.http.post("/ui/signin", data={"password": store.admin_token})
        assert r.status_code == 429
        assert "set-cookie" not in r.headers


def test_changes_without_the_sessions_csrf_token_are_refused(mailstore, admin):
    with ConsoleClient(mailstore.url) as ui, ConsoleClient(mailstore.url) as other:
        ui.sign_in(mailstore.admin_token)
        other.sign_in(mailstore.admin_token)
        name = f"csrf{secrets.token_hex(4)}.example"
        assert ui.post("/ui/domains", {"name": name}, csrf=False).status_code == 403
        assert (
            ui.http.post("/ui/domains", data={"name": name, "csrf": other.csrf}).status_code == 403
        )
        assert ui.http.post("/ui/signout").status_code == 403
        assert name not in [d["name"] for d in admin.get("/domains").json()["domains"]]
        # the header works as the field does
        r = ui.http.post("/ui/domains", data={"name": name}, headers={"X-CSRF-Token": ui.csrf})
        assert r.status_code == 303
        assert name in [d["name"] for d in admin.get("/domains").json()["domains"]]


def test_security_headers_on_pages_errors_and_static_files(mailstore):
    with ConsoleClient(mailstore.url) as ui:
        ui.sign_in(mailstore.admin_token)
        for path in ("/ui/signin", "/ui/domains", "/ui/static/console.js", "/ui/nowhere"):
            r = ui.get(path)
            csp = r.headers["content-security-policy"]
            directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ")}
            assert directives["default-src"] == ["'none'"], path
            assert directives["script-src"] == ["'self'"], path
            assert directives["frame-ancestors"] == ["'none'"], path
            assert directives["base-uri"] == ["'none'"], path
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["cache-control"] == "no-store"
        assert ui.get("/ui/nowhere").status_code == 404
        assert "<script>" not in ui.get("/ui/domains").text  # no inline script anywhere


def test_domains_accounts_and_aliases_are_managed_with_the_rest_apis_rules(
    mailstore, admin, redis_server
):
    tag = secrets.token_hex(4)
    domain, account = f"ui{tag}.example", f"ann{tag}@ui{tag}.example"
    with ConsoleClient(mailstore.url) as ui:
        ui.sign_in(mailstore.admin_token)
        assert ui.post("/ui/domains", {"name": domain}).status_code == 303
        assert ui.post("/ui/domains", {"name": domain}).status_code == 409  # as the API says
        assert ui.post("/ui/domains", {"name": "not a domain"}).status_code == 422
        assert f"<td>{domain}" in ui.get("/ui/domains").text

        r = ui.post("/ui/accounts", {"username": account, "password": "pw1", "quota_bytes": "x"})
        assert r.status_code == 422
        r = ui.post("/ui/accounts", {"username": account, "password": "pw1", "quota_bytes": "5000"})
        assert r.status_code == 303
        assert admin.get(f"/users/{account}").json()["quota_bytes"] == 5000
        page = ui.get(f"/ui/accounts?domain={domain}")
        assert account in page.text and "free" in page.text

        assert ui.post(f"/ui/accounts/{account}/quota", {"quota_bytes": "7000"}).status_code == 303
        assert admin.get(f"/users/{account}").json()["quota_bytes"] == 7000
        assert ui.post(f"/ui/accounts/{account}/password", {"password": "pw2"}).status_code == 303

        alias = f"info@{domain}"
        assert (
            ui.post("/ui/aliases", {"address": alias, "targets": "nobody@" + domain}).status_code
            == 422
        )
        assert ui.post("/ui/aliases", {"address": alias, "targets": account}).status_code == 303
        assert admin.get("/aliases", params={"domain": domain}).json()["aliases"][0][
            "accounts"
        ] == [account]
        assert alias in ui.get("/ui/aliases").text
        assert ui.post(f"/ui/aliases/{alias}/delete").status_code == 303
        assert admin.get("/aliases", params={"domain": domain}).json()["aliases"] == []

        lease = redis_server.acquire(account)
        try:
            assert "session open" in ui.get(f"/ui/accounts?domain={domain}").text
            assert ui.post(f"/ui/accounts/{account}/delete", {"purge": "on"}).status_code == 423
        finally:
            redis_server.release(lease)
        assert ui.post(f"/ui/domains/{domain}/delete").status_code == 409  # not empty
        assert ui.post(f"/ui/accounts/{account}/delete", {"purge": "on"}).status_code == 303
        assert admin.get(f"/users/{account}").status_code == 404
        assert ui.post(f"/ui/domains/{domain}/delete").status_code == 303
        assert f"<td>{domain}" not in ui.get("/ui/domains").text
        assert domain not in [d["name"] for d in admin.get("/domains").json()["domains"]]
