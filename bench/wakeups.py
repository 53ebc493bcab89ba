"""What waking a thread on another core costs here, against one on the same core.

    .venv/bin/python -m bench.wakeups [--rounds 5] [--trips 2000]

A tile through our stack wakes threads many times: wrk's request wakes the
gateway's event loop; its gRPC call wakes the decoder's network thread, its
completion-queue thread, its event loop and a render thread, and the answer
wakes the same chain back. On a virtual machine whose idle cores halt (no
guest halt polling, as on the Firecracker machines we benchmark on), a
wake-up on another core goes through the hypervisor, and that can cost
more than the work it wakes. IIPImage behind lighttpd has two crossings
per request; a two-process Python pipeline has many more.

Two exchanges, each with its two ends in two processes placed three ways:
both on core 0 (`same core`, the baseline), on cores 0 and 1 (`across
cores`), or wherever the scheduler puts them (`free`, as deployed):

- `socket ping-pong`: one byte back and forth over a socket pair, the
  bare cost of a wake-up (round trip in µs);
- `gRPC unary call`: a grpc.aio server on uvloop answering a blocking
  client's 100-byte call with the same bytes (round trip in µs).

Printed: the median over rounds of each, and each placement's ratio to
the same core, measured in the same run (the machine is noisy). Needs
two cores for `across cores`; with one, that column is left out.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Final

import grpc

# The two ends' cores per placement (None: the scheduler decides).
Placement = tuple[int | None, int | None]
PLACEMENTS: Final[dict[str, Placement]] = {
    "same core": (0, 0),
    "across cores": (0, 1),
    "free": (None, None),
}
BASELINE: Final = "same core"
EXCHANGES: Final = ("socket ping-pong", "gRPC unary call")
_METHOD: Final = "/bench.Echo/Echo"
_PAYLOAD: Final = b"x" * 100


def _identity(data: bytes) -> bytes:
    return data


def _pin(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})


@contextmanager
def _pinned(core: int | None) -> Iterator[None]:
    """This process on `core` for the block (all its cores when None)."""
    before = os.sched_getaffinity(0)
    _pin(core)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _echo(sock: socket.socket, core: int | None) -> None:
    _pin(core)
    while data := sock.recv(64):
        sock.send(data)


def _socket_round_trip_us(trips: int, placement: Placement) -> float:
    ours, theirs = socket.socketpair()
    child = mp.get_context("fork").Process(target=_echo, args=(theirs, placement[1]), daemon=True)
    child.start()
    theirs.close()
    try:
        with _pinned(placement[0]):
            for _ in range(trips // 10):  # both ends running, caches warm
                ours.send(b"x")
                ours.recv(64)
            start = time.perf_counter()
            for _ in range(trips):
                ours.send(b"x")
                ours.recv(64)
            return 1e6 * (time.perf_counter() - start) / trips
    finally:
        ours.close()
        child.join(5)


def _serve(core: int | None, ports: Connection) -> None:
    _pin(core)
    import uvloop

    async def echo(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def serve() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(echo, _identity, _identity)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),)
        )
        ports.send(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    uvloop.run(serve())


def _grpc_round_trip_us(trips: int, placement: Placement) -> float:
    ports, theirs = mp.get_context("spawn").Pipe()
    server = mp.get_context("spawn").Process(
        target=_serve, args=(placement[1], theirs), daemon=True
    )
    server.start()
    try:
        if not ports.poll(30):
            raise TimeoutError("the gRPC echo server did not start")
        port = ports.recv()
        with _pinned(placement[0]), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(_METHOD, _identity, _identity)
            for _ in range(trips // 10):
                call(_PAYLOAD, timeout=10)
            start = time.perf_counter()
            for _ in range(trips):
                call(_PAYLOAD, timeout=10)
            return 1e6 * (time.perf_counter() - start) / trips
    finally:
        server.kill()
        server.join(5)


MEASURES: Final[dict[str, Callable[[int, Placement], float]]] = {
    "socket ping-pong": _socket_round_trip_us,
    "gRPC unary call": _grpc_round_trip_us,
}


def placements(cores: set[int]) -> dict[str, Placement]:
    """The placements this process's cores allow (core numbers remapped to
    the first two it may use). Pure."""
    usable = sorted(cores)
    out: dict[str, Placement] = {}
    for name, (a, b) in PLACEMENTS.items():
        if a is None or b is None:
            out[name] = (a, b)
        elif max(a, b) < len(usable):
            out[name] = (usable[a], usable[b])
    return out


def measure(rounds: int, trips: int) -> dict[tuple[str, str], list[float]]:
    """Round trips in µs per (exchange, placement), placements alternating
    within each round, their order reversed every other round."""
    where = placements(os.sched_getaffinity(0))
    results: dict[tuple[str, str], list[float]] = {}
    for round_no in range(rounds):
        order = list(where.items())
        if round_no % 2:
            order.reverse()
        for exchange in EXCHANGES:
            for name, placement in order:
                value = MEASURES[exchange](trips, placement)
                results.setdefault((exchange, name), []).append(value)
    return results


def report(results: dict[tuple[str, str], list[float]]) -> str:
    """A markdown table of the medians and their ratios to the baseline."""
    names = [n for n in PLACEMENTS if any(key[1] == n for key in results)]
    others = [n for n in names if n != BASELINE]
    head = ["round trip (µs)", *names, *(f"{n} / {BASELINE}" for n in others)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for exchange in EXCHANGES:
        medians = {n: statistics.median(results[(exchange, n)]) for n in names}
        cells = [f"{medians[n]:.0f}" for n in names]
        cells += [f"{medians[n] / medians[BASELINE]:.2f}" for n in others]
        lines.append("| " + " | ".join([exchange, *cells]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trips", type=int, default=2000, help="round trips per measurement")
    args = parser.parse_args(argv)
    print(report(measure(args.rounds, args.trips)))


if __name__ == "__main__":
    main()
