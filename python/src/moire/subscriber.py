"""Subscribers of a result bus: every message decoded, gaps in `seq` counted per stream."""
from __future__ import annotations

from typing import AsyncIterator, Dict, Iterable, Iterator, Optional

import zmq
import zmq.asyncio

from .wire import Frame, Message, RunStart, RunStop, WireError, decode


class _Tally:
    """Counts what a subscriber saw: messages, malformed ones, gaps in each stream's `seq`."""

    def __init__(self, wait_for_start: bool) -> None:
        self.wait_for_start = wait_for_start
        self.run: Optional[str] = None
        self.start: Optional[RunStart] = None
        self.last_seq: Dict[str, int] = {}
        self.gaps = 0
        self.malformed = 0
        self.before_start = 0

    def accept(self, parts: list) -> Optional[Message]:
        """The decoded message when it goes to the caller; None for a malformed message (counted),
        a replayed start it has, or a frame before the first start."""
        try:
            message = decode(parts)
        except WireError:
            self.malformed += 1
            return None
        return message if self.keep(message) else None

    def keep(self, message: Message) -> bool:
        """True when the message goes to the caller (a replayed start it has is not)."""
        if isinstance(message, RunStart):
            if message.run == self.run:
                return False
            self.run, self.start = message.run, message
            self.last_seq.clear()
            return True
        if isinstance(message, RunStop):
            return True
        if self.wait_for_start and self.run is None:
            self.before_start += 1
            return False
        key = f"{message.header.stream}.{message.header.channel}"
        previous = self.last_seq.get(key)
        if previous is not None and message.header.seq != previous + 1:
            self.gaps += 1
        self.last_seq[key] = message.header.seq
        return True


def _prepare(socket: zmq.Socket, endpoint: str, topics: Iterable[str]) -> None:
    wanted = list(topics)
    for topic in wanted:
        socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
    if wanted and "" not in wanted and not any("run".startswith(t) for t in wanted):
        socket.setsockopt(zmq.SUBSCRIBE, b"run")           # lifecycle messages always
    socket.setsockopt(zmq.RCVHWM, 0)
    socket.connect(endpoint)


class Subscriber:
    """A blocking subscriber. Iterating yields RunStart, Frame and RunStop objects; it ends after
    `timeout` seconds without a message. Frames before the first `start` are skipped (a client
    that joins mid-run needs `start` to interpret them); the daemon replays `start` to late joiners."""

    def __init__(self, endpoint: str, topics: Iterable[str] = ("",), timeout: float = 30.0,
                 wait_for_start: bool = True, context: Optional[zmq.Context] = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        _prepare(self._socket, endpoint, topics)
        self.tally = _Tally(wait_for_start)

    def receive(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message for the caller, or None after `timeout` seconds without one."""
        wait_ms = int(1000 * (self.timeout if timeout is None else timeout))
        while True:
            if not self._socket.poll(wait_ms):
                return None
            message = self.tally.accept(self._socket.recv_multipart())
            if message is not None:
                return message

    def __iter__(self) -> Iterator[Message]:
        while True:
            message = self.receive()
            if message is None:
                return
            yield message

    def frames(self, until_stop: bool = True) -> Iterator[Frame]:
        """Only the frames; ends at the run's `stop` when `until_stop`."""
        for message in self:
            if isinstance(message, Frame):
                yield message
            elif isinstance(message, RunStop) and until_stop:
                return

    @property
    def gaps(self) -> int:
        return self.tally.gaps

    def close(self) -> None:
        self._socket.close(0)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscriber:
    """The asyncio subscriber: `async for message in AsyncSubscriber(endpoint)`."""

    def __init__(self, endpoint: str, topics: Iterable[str] = ("",), timeout: float = 30.0,
                 wait_for_start: bool = True, context: Optional[zmq.asyncio.Context] = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._context = context or zmq.asyncio.Context.instance()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        _prepare(self._socket, endpoint, topics)
        self.tally = _Tally(wait_for_start)

    async def receive(self, timeout: Optional[float] = None) -> Optional[Message]:
        wait_ms = int(1000 * (self.timeout if timeout is None else timeout))
        while True:
            if not await self._socket.poll(wait_ms):
                return None
            message = self.tally.accept(await self._socket.recv_multipart())
            if message is not None:
                return message

    async def __aiter__(self) -> AsyncIterator[Message]:
        while True:
            message = await self.receive()
            if message is None:
                return
            yield message

    @property
    def gaps(self) -> int:
        return self.tally.gaps

    def close(self) -> None:
        self._socket.close(0)

    async def __aenter__(self) -> "AsyncSubscriber":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
