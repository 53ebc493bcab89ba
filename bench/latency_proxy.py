"""A TCP proxy on 127.0.0.1 that delays every request by a fixed time.

``python -m bench.latency_proxy --port P --upstream 127.0.0.1:Q --delay-ms 20``

Object stores answer from another building, not from loopback: the S3 case
puts this in front of SeaweedFS so that every S3 request (HEAD, ranged GET,
LIST) pays a realistic round trip. The delay is applied to each chunk the
client sends; an S3 client sends one request per chunk and waits for the
answer before the next on that connection, so that is one delay per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    try:
        while data := await reader.read(256 * 1024):
            if delay_s:
                await asyncio.sleep(delay_s)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(port: int, upstream_host: str, upstream_port: int, delay_s: float) -> None:
    """Proxy 127.0.0.1:`port` to the upstream until SIGTERM or SIGINT."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            client_w.close()
            return
        # Only the client-to-store direction is delayed: one delay per request.
        await asyncio.gather(_pump(client_r, up_w, delay_s), _pump(up_r, client_w, 0.0))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    asyncio.run(serve(args.port, host or "127.0.0.1", int(port), args.delay_ms / 1000))


if __name__ == "__main__":
    main()
