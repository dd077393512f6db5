"""What a migration may need besides the database."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Context:
    primary_domain: str  # the first of MAIL_DOMAINS
    now: str  # ISO 8601, for created_at columns
