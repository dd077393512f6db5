"""What both ways of running the stack share: ``with`` starts it and stops it; logs are read."""

from __future__ import annotations

import functools
from types import TracebackType
from typing import Self

from mailstack.logs import Record, Where, wait_for_records


class Running:
    """A stack that ``start()``s on entering a ``with`` block and ``stop()``s on leaving it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def logs(self, name: str) -> str:
        """What ``name`` has written to its log so far."""
        raise NotImplementedError

    def wait_for_log(self, name: str, where: Where, count: int = 1) -> list[Record]:
        """Wait until ``count`` of ``name``'s log lines match ``where``; every line that does."""
        return wait_for_records(functools.partial(self.logs, name), where, count)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
