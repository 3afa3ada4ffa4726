"""A small HTTP/1.1 keep-alive load generator: each connection sends its own pre-built
requests in order and times each round trip. Pre-built, so signing and encryption cost
nothing during the measurement.

By default each connection sends its next request as soon as the last is answered (the
server's saturation). With `rate`, the requests are sent on a fixed schedule, `rate` a
second over all connections (connection c's request i at (i * connections + c) / rate), and
each latency is counted from the request's scheduled time: a server falling behind the
schedule pays the wait in its latencies, not by being sent less."""
from __future__ import annotations

import asyncio
import time


def build_request(host: str, port: int, path_qs: str, body: bytes) -> bytes:
    head = (f"POST {path_qs} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _connection(host, port, requests, latencies, failures, check, last, schedule=None):
    reader, writer = await asyncio.open_connection(host, port)
    body = b""
    try:
        for i, req in enumerate(requests):
            if schedule is not None:  # (start, first offset, interval): send at its time
                t0 = schedule[0] + schedule[1] + i * schedule[2]
                wait = t0 - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
            else:
                t0 = time.perf_counter()
            writer.write(req)
            status, body = await _read_response(reader)
            latencies.append(time.perf_counter() - t0)
            if status != 200 or (check and not check(body)):
                failures.append((status, body[:200], req[-300:]))
    finally:
        writer.close()
        last.append(body)


async def _run(host, port, per_connection, check, rate=None):
    latencies: list[float] = []
    failures: list = []
    last: list[bytes] = []
    n = len(per_connection)
    t0 = time.perf_counter()
    start = t0 + 0.2  # every connection open by then
    await asyncio.gather(*(_connection(host, port, reqs, latencies, failures, check, last,
                                       (start, c / rate, n / rate) if rate else None)
                           for c, reqs in enumerate(per_connection)))
    elapsed = time.perf_counter() - (start if rate else t0)
    return latencies, failures, elapsed, last


def run(host: str, port: int, per_connection: list[list[bytes]], check=None,
        rate: float | None = None) -> dict:
    latencies, failures, elapsed, last = asyncio.run(_run(host, port, per_connection, check,
                                                          rate))
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "rps": n / elapsed,
        "p50_ms": latencies[n // 2] * 1000,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000,
        "max_ms": latencies[-1] * 1000,
        "last": last,  # each connection's last response body (to check what was answered)
    }
