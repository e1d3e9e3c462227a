"""Many HTTP/1.1 requests launched at once from one asyncio event loop, each on its own connection, each timed from its
launch to the end of its answer: the load generator of ``tests/benchmarks/load.py``. Requests are pre-built bytes and
answers are parsed only as far as the status line and the body's length, so the client costs a small fraction of a
millisecond of CPU per request (a thread per request with ``urllib`` cost 1.5 ms) and is not what a load test
measures. Stdlib only."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """One request's outcome: the HTTP status (0 when no complete answer came: refused, reset, cut short, timed
    out), the body (or what went wrong), and the seconds from launch to the end of the answer."""

    status: int
    body: bytes
    seconds: float


def build_request(method: str, host: str, path: str, headers: Mapping[str, str] | None = None,
                  body: bytes = b"") -> bytes:
    """The bytes of one HTTP/1.1 request that asks the server to close the connection after answering."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_answer(raw: bytes, seconds: float, problem: str | None = None) -> Answer:
    """The ``Answer`` of the bytes a server sent before closing: status 0 unless the head is complete and the body
    as long as its ``Content-Length`` (or a complete chunked body)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return Answer(0, f"{problem or 'no complete HTTP answer'}: {raw[:80]!r}".encode(), seconds)
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(b":") for h in header_lines)}
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body, complete = _dechunk(body)
    else:
        length = headers.get(b"content-length")
        complete = length is None or (length.isdigit() and len(body) == int(length))
    if not complete:
        return Answer(0, f"answer cut short ({problem or 'closed'}): {len(body)} body bytes".encode(), seconds)
    return Answer(int(parts[1]), body, seconds)


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    out, pos = [], 0
    while True:
        end = data.find(b"\r\n", pos)
        size_text = data[pos:end].split(b";")[0].strip() if end >= 0 else b""
        try:
            size = int(size_text, 16)
        except ValueError:
            return b"".join(out), False
        if size == 0:
            return b"".join(out), True
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
        if pos > len(data):
            return b"".join(out), False


class _Exchange(asyncio.Protocol):
    """One connection: send the request once connected, keep every byte, settle ``done`` when the server closes."""

    def __init__(self, request: bytes, started: float, done: asyncio.Future[Answer]) -> None:
        self.request, self.started, self.done = request, started, done
        self.chunks: list[bytes] = []
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> bool:
        self._settle(None)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle(str(exc) if exc else None)

    def _settle(self, problem: str | None) -> None:
        if not self.done.done():
            self.done.set_result(parse_answer(b"".join(self.chunks), time.perf_counter() - self.started, problem))


async def _burst(host: str, port: int, requests: Sequence[bytes], timeout_s: float) -> list[Answer]:
    loop = asyncio.get_running_loop()
    exchanges: list[_Exchange] = []

    async def one(request: bytes) -> Answer:
        started = time.perf_counter()
        done: asyncio.Future[Answer] = loop.create_future()
        exchange = _Exchange(request, started, done)
        exchanges.append(exchange)
        try:
            await loop.create_connection(lambda: exchange, host, port)
        except OSError as exc:
            return Answer(0, f"connect: {exc}".encode(), time.perf_counter() - started)
        return await done

    tasks = [asyncio.ensure_future(one(request)) for request in requests]
    if tasks:
        await asyncio.wait(tasks, timeout=timeout_s)
    answers = []
    for task in tasks:
        if task.done():
            answers.append(task.result())
        else:
            task.cancel()
            answers.append(Answer(0, f"no answer within {timeout_s} s".encode(), timeout_s))
    for exchange in exchanges:
        if exchange.transport is not None:
            exchange.transport.close()
    return answers


def burst(host: str, port: int, requests: Sequence[bytes], timeout_s: float = 120.0) -> list[Answer]:
    """Send every request in ``requests`` at once, each on its own connection to ``host:port``; their answers in
    order. Never raises for a failed request: it is an ``Answer`` with status 0."""
    return asyncio.run(_burst(host, port, requests, timeout_s))
