#!/usr/bin/env python3
"""A TCP sink standing in for a database (bench/run.sh scale, tests/proxy/bench_proxy.sh).

usage: sink.py IP PORT
Every connection: read the client's first byte, answer one byte ("y", so the client knows
the whole path is up), then read and discard everything until the client closes.
"""
import asyncio
import sys


async def handle(r, w):
    try:
        if await r.read(1):
            w.write(b"y")
            await w.drain()
            while await r.read(65536):
                pass
    except (ConnectionError, OSError):
        pass
    finally:
        w.close()


async def main():
    s = await asyncio.start_server(handle, sys.argv[1], int(sys.argv[2]), backlog=4096)
    async with s:
        await s.serve_forever()


asyncio.run(main())
