"""What both ways of running the stack share: ``with`` starts it and stops it."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Running:
    """A stack that ``start()``s on entering a ``with`` block and ``stop()``s on leaving it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

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
