#!/usr/bin/env python3
"""Data integrity through a tunnel (tests/faults/integrity.sh runs it).

  integrity.py serve HOST PORT RESULTS_DIR
      A raw TCP backend. Each connection starts with a 40-byte header:
      16-byte id, 8-byte download size, 8-byte seed, 8-byte mode (0 both ways
      at once, 1 client half-closes first: the download starts only after the
      upload's EOF, 2 server half-closes first: the download, then EOF, and
      only then does the client upload). The backend streams the download
      (random bytes from the seed), reads the upload to EOF, half-closes its
      side after the download, and writes RESULTS_DIR/<id hex> with
      "<upload bytes> <upload sha256>" once both are done.

  integrity.py run HOST PORT RESULTS_DIR UP DOWN MODE [PARALLEL]
      PARALLEL connections (default 1) at once, each uploading UP random bytes
      and downloading DOWN, in MODE (both|client-first|server-first). Prints
      one line per connection; exits 1 if any byte was lost, added, changed or
      reordered (sha256 and length, both directions), or a connection failed.
"""
import asyncio
import hashlib
import os
import random
import socket
import struct
import sys
import threading
import time

CHUNK = 64 * 1024
MODES = {"both": 0, "client-first": 1, "server-first": 2}


def stream(seed, size):
    """The download: `size` bytes from `seed`, in chunks (both sides chunk alike)."""
    r = random.Random(seed)
    left = size
    while left > 0:
        n = min(CHUNK, left)
        yield r.randbytes(n)
        left -= n


async def handle(reader, writer, results):
    try:
        head = await reader.readexactly(40)
    except asyncio.IncompleteReadError:
        writer.close()
        return
    cid, down, seed, mode = head[:16], *struct.unpack(">QQQ", head[16:])
    up = hashlib.sha256()
    up_len = 0
    got_eof = asyncio.Event()

    async def read_all():
        nonlocal up_len
        while True:
            b = await reader.read(CHUNK)
            if not b:
                break
            up.update(b)
            up_len += len(b)
        got_eof.set()

    async def send_all():
        if mode == 1:
            await got_eof.wait()
        for b in stream(seed, down):
            writer.write(b)
            await writer.drain()
        writer.write_eof()  # half-close: the client may still be sending

    await asyncio.gather(read_all(), send_all())
    path = os.path.join(results, cid.hex())
    with open(path + ".tmp", "w") as f:
        f.write(f"{up_len} {up.hexdigest()}\n")
    os.rename(path + ".tmp", path)
    writer.close()


def serve(host, port, results):
    async def main():
        s = await asyncio.start_server(lambda r, w: handle(r, w, results), host, int(port))
        print("listening", flush=True)
        async with s:
            await s.serve_forever()
    asyncio.run(main())


def one(host, port, results, up_size, down_size, mode, out, i):
    t0 = time.monotonic()
    cid = os.urandom(16)
    seed = random.getrandbits(63)
    want_down = hashlib.sha256()
    for b in stream(seed, down_size):
        want_down.update(b)
    up_data = os.urandom(up_size)
    want_up = f"{up_size} {hashlib.sha256(up_data).hexdigest()}"
    s = socket.create_connection((host, int(port)), timeout=120)
    s.sendall(cid + struct.pack(">QQQ", down_size, seed, MODES[mode]))
    got = hashlib.sha256()
    got_len = 0
    eof_at = None

    def upload():
        view = memoryview(up_data)
        for off in range(0, len(view), CHUNK):
            s.sendall(view[off:off + CHUNK])
        s.shutdown(socket.SHUT_WR)

    sender = None
    if mode != "server-first":
        sender = threading.Thread(target=upload)
        sender.start()
    try:
        while True:
            b = s.recv(CHUNK)
            if not b:
                eof_at = time.monotonic()
                break
            got.update(b)
            got_len += len(b)
    except OSError as e:
        out[i] = f"FAIL connection {i}: download broke after {got_len} bytes: {e}"
        return
    if mode == "server-first":
        try:
            upload()  # after the server's EOF: this direction must still work
        except OSError as e:
            out[i] = f"FAIL connection {i}: upload after the server's half-close broke: {e}"
            return
    else:
        sender.join()
    path = os.path.join(results, cid.hex())
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    s.close()
    if not os.path.exists(path):
        out[i] = f"FAIL connection {i}: the backend never saw the end of the upload"
        return
    with open(path) as f:
        got_up = f.read().strip()
    problems = []
    if got_len != down_size or got.hexdigest() != want_down.hexdigest():
        problems.append(f"download: got {got_len} bytes sha256 {got.hexdigest()[:16]}.., "
                        f"want {down_size} bytes {want_down.hexdigest()[:16]}..")
    if got_up != want_up:
        problems.append(f"upload: backend got '{got_up[:40]}..', want '{want_up[:40]}..'")
    ms = int((time.monotonic() - t0) * 1000)
    if problems:
        out[i] = f"FAIL connection {i} ({mode}, up {up_size}, down {down_size}): " + "; ".join(problems)
    else:
        out[i] = f"ok connection {i} ({mode}, up {up_size}, down {down_size}): both sha256 equal, {ms} ms"


def run(host, port, results, up, down, mode, parallel="1"):
    n = int(parallel)
    if mode not in MODES:
        sys.exit(f"integrity.py: unknown mode {mode} (want {', '.join(MODES)})")
    out = [None] * n
    threads = [threading.Thread(target=one, args=(host, port, results, int(up), int(down), mode, out, i))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = 0
    for line in out:
        line = line or "FAIL a connection thread died"
        print(line, flush=True)
        bad += not line.startswith("ok")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "serve":
        serve(*sys.argv[2:5])
    elif len(sys.argv) >= 8 and sys.argv[1] == "run":
        run(*sys.argv[2:])
    else:
        sys.exit(__doc__)
