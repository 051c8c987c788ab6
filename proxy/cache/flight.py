"""Single-flight: identical concurrent misses make one upstream call.

The first miss for a key leads: it asks upstream and, when the answer is
cacheable, hands it to every request that arrived for the same key meanwhile.
Followers wait for the leader's finished answer (a stream follower then gets
the replay of the whole stream at once, as any hit); when the leader ends
without a cacheable answer (an error, a cut stream), each follower asks
upstream itself, since the error was the leader's and need not be theirs.
In-process only: with several workers each may lead once per key.
"""

from __future__ import annotations

import asyncio


class Flight:
    __slots__ = ("done", "body", "followers")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.body: bytes | None = None
        self.followers = 0


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def join(self, key: str) -> tuple[Flight, bool]:
        """(the flight for `key`, whether the caller leads it)."""
        flight = self._flights.get(key)
        if flight is not None:
            flight.followers += 1
            return flight, False
        flight = self._flights[key] = Flight()
        return flight, True

    def finish(self, key: str, flight: Flight, body: bytes | None) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        flight.body = body
        flight.done.set()

    def __len__(self) -> int:
        return len(self._flights)
