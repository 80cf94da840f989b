"""A TCP relay that adds latency: each byte is delivered ``--delay`` seconds after it arrived.

This kernel has no netem, so the SSH benchmark puts this relay between adora and
the test sshd: listening on 127.0.0.1, forwarding to ``--target``, delaying each
direction by ``--delay`` (default 25 ms, i.e. 50 ms of added round-trip time).
Only latency is added: chunks keep their order and are not throttled (each is
written out at its arrival time + delay, whatever the chunks queued before it).
Nagle's algorithm is off on both sides, so small packets are not held back.

    python benchmarks/relay.py --target 127.0.0.1:2222 --delay 0.025
    # prints "listening 127.0.0.1 PORT" on stdout once ready, runs until killed

Standard library only (asyncio).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys

_CHUNK = 1 << 16


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def pump() -> None:
        while True:
            try:
                data = await reader.read(_CHUNK)
            except (ConnectionError, OSError):
                data = b""
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                return

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return

    await asyncio.gather(pump(), deliver())


async def _serve(target_host: str, target_port: int, delay: float, port: int) -> None:
    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            u_reader, u_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            c_writer.close()
            return
        _nodelay(c_writer)
        _nodelay(u_writer)
        try:
            await asyncio.gather(_forward(c_reader, u_writer, delay),
                                 _forward(u_reader, c_writer, delay))
        finally:
            for w in (c_writer, u_writer):
                w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening 127.0.0.1 {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to.")
    parser.add_argument("--delay", type=float, default=0.025,
                        help="Seconds added in each direction (default 0.025).")
    parser.add_argument("--port", type=int, default=0, help="Port to listen on (default: free).")
    opts = parser.parse_args(argv)
    host, _, port = opts.target.rpartition(":")
    asyncio.run(_serve(host or "127.0.0.1", int(port), opts.delay, opts.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
