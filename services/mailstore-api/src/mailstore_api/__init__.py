"""mailstore-api: accounts (SQLite, argon2id) and one Maildir per user behind a FastAPI REST API.

The only process that touches the data volume. ``python -m mailstore_api`` serves it; ``mailctl``
(:mod:`mailstore_api.cli`) administers it over HTTP. See docs/architecture.md.
"""
