"""schemathesis against the mailstore's OpenAPI, loaded from the running service.

Every admin operation (``/api/v1``) and the health endpoints are called with generated inputs,
valid (positive) and invalid (negative), authenticated with the admin token, and the internal API
with the service token: never a 5xx, and every response matches what the published schema says
(status code documented, content type, body).
"""

from __future__ import annotations

import traceback
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = 8
# The import route takes a message as its body (message/rfc822): generated bodies are sent as
# the octets they are, as for application/octet-stream.
schemathesis.serializer.alias("message/rfc822", "application/octet-stream")
ALL_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def runner(operation: Any, mode: GenerationMode, checks: list[Any], auth: dict[str, str]) -> Any:
    """A hypothesis test calling ``operation`` with generated ``mode`` inputs."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(checks=checks, headers=auth)

    return run


def fuzz_openapi(
    stack: Any,
    plan: dict[GenerationMode, list[Any]],
    token: str | None = None,
    paths: str = r"^/(api/v1/|healthz|readyz)",
) -> tuple[list[str], list[str]]:
    """Run schemathesis over ``paths`` (the admin API and health); returns (operations, failures)."""
    schema = schemathesis.openapi.from_url(f"{stack.api_url}/openapi.json", timeout=30)
    auth = {"Authorization": f"Bearer {token or stack.admin_token}"}
    schema.config.update(base_url=stack.api_url, request_timeout=30, headers=auth)
    # The token is given, not generated (refusing bad tokens is test_security_tokens' business).
    schema.config.generation.update(with_security_parameters=False)
    schema = schema.include(path_regex=paths)
    failures: list[str] = []
    operations: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations.append(operation.label)
        for mode, checks in plan.items():
            run = runner(operation, mode, checks, auth)
            try:
                run()
            except Unsatisfiable:
                pass  # nothing in this operation can be made invalid (no parameters, no body)
            except (Exception, BaseExceptionGroup):
                failures.append(
                    f"{operation.label} ({mode.value}):\n{traceback.format_exc()[-3000:]}"
                )
    return operations, failures


def test_admin_api_conforms_to_its_openapi(stack: Any) -> None:
    operations, failures = fuzz_openapi(
        stack, {GenerationMode.POSITIVE: ALL_CHECKS, GenerationMode.NEGATIVE: ALL_CHECKS}
    )
    assert len(operations) >= 11, operations  # the admin API of the design brief, and health
    assert not failures, "\n\n".join(failures)


def test_internal_api_conforms_to_its_openapi(stack: Any) -> None:
    """The same for the internal API, with the service token (what a front end could send)."""
    token = stack.service_token
    operations, failures = fuzz_openapi(
        stack,
        {GenerationMode.POSITIVE: ALL_CHECKS, GenerationMode.NEGATIVE: ALL_CHECKS},
        token=token,
        paths=r"^/internal/v1/",
    )
    assert len(operations) >= 7, operations
    assert not failures, "\n\n".join(failures)
