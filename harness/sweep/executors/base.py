"""The executor interface: something that measures sweep points and yields their rows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator

from harness.sweep.plan import SweepPoint
from harness.sweep.record import PointRow


class Executor(ABC):
    """Runs points and yields ``(point, row)`` as each finishes (in any order); asks
    ``should_stop()`` between points and stops early when it says so."""

    @abstractmethod
    def run(self, points: Iterable[SweepPoint],
            should_stop: Callable[[], bool]) -> Iterator[tuple[SweepPoint, PointRow]]:
        ...

    def close(self) -> None:
        """Release workers and connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
