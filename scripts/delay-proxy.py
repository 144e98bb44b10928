#!/usr/bin/env python3
"""A TCP proxy that delays every byte by a fixed time in each direction, without limiting
throughput: data read at t is written at t + delay, reads continue meanwhile. With 20 ms each
way it turns a local link into one with 40 ms of round-trip time (this kernel has no netem).
Written for scripts/bench-latency.sh.

    delay-proxy.py LISTEN_HOST:PORT TARGET_HOST:PORT DELAY_MS [--handshake]

With --handshake a new connection also costs the round trip of TCP's handshake before its
first byte goes (without it, connecting is free: the proxy accepts locally).
"""
import asyncio
import sys
import time

CHUNK = 1 << 18
# Bytes held per direction: a bandwidth-delay product's worth (1 Gbit/s x 40 ms = 5 MB) plus
# room, so the sender still feels back-pressure as on a real link.
HELD = 8 << 20


async def pipe(reader, writer, delay):
    queue = asyncio.Queue()
    held = 0
    room = asyncio.Event()
    room.set()

    async def feed():
        nonlocal held
        while True:
            await room.wait()
            data = await reader.read(CHUNK)
            held += len(data)
            if held > HELD:
                room.clear()
            queue.put_nowait((time.monotonic() + delay, data))
            if not data:
                return

    async def drain():
        nonlocal held
        while True:
            due, data = await queue.get()
            held -= len(data)
            if held <= HELD:
                room.set()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                try:
                    writer.write_eof()
                except OSError:
                    pass
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(feed(), drain())
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main():
    lhost, lport = sys.argv[1].rsplit(":", 1)
    thost, tport = sys.argv[2].rsplit(":", 1)
    delay = float(sys.argv[3]) / 1000.0
    handshake = sys.argv[4:] == ["--handshake"]

    async def handle(creader, cwriter):
        if handshake:
            # The local accept was instant; a real link takes a round trip (SYN, SYN-ACK)
            # before the first byte can go, so hold this connection's bytes that long.
            await asyncio.sleep(2 * delay)
        try:
            ureader, uwriter = await asyncio.open_connection(thost, int(tport))
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(pipe(creader, uwriter, delay), pipe(ureader, cwriter, delay))

    server = await asyncio.start_server(handle, lhost, int(lport), limit=CHUNK)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
