#!/usr/bin/env python3
"""Memory of a proxy per connection (bench/run.sh scale).

usage: scale.py hold IP PORT PID N BUSY_SECS   -> JSON {rss0_kib, idle_kib, busy_kib, n, ...}
       scale.py cycles IP PORT PID N WORKERS  -> JSON {before_kib, after_kib, n}
The far end is bench/sink.py behind the proxy: each connection sends one byte and waits
for the sink's one-byte answer, so every connection counted went through the whole path.
hold: open N connections (in batches), RSS of PID idle; then BUSY_SECS of writes on every
connection at once (the sink discards them), RSS while busy; then close everything.
cycles: 1,000 warm-up cycles (or N/10 if fewer), RSS, then N connect/send/answer/close
cycles from WORKERS threads, RSS again once the proxy has settled.
Every wait is bounded; a connection that fails is an error (exit 1), never skipped.
"""
import json
import selectors
import socket
import sys
import threading
import time

BATCH = 200
DEADLINE_S = 300


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def die(msg):
    print(f"scale.py: {msg}", file=sys.stderr)
    sys.exit(1)


def open_batch(ip, port, n, deadline):
    """n connections, each through the whole path (one byte out, one byte back)."""
    socks = []
    sel = selectors.DefaultSelector()
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((ip, port))
        sel.register(s, selectors.EVENT_WRITE, "connect")
        socks.append(s)
    pending = n
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            die(f"{pending} of {n} connections not answered in time")
        for key, ev in sel.select(min(left, 5)):
            s = key.fileobj
            if key.data == "connect":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    die(f"connect to {ip}:{port} failed: errno {err}")
                s.send(b"x")
                sel.modify(s, selectors.EVENT_READ, "answer")
            else:
                if s.recv(1) != b"y":
                    die("a connection closed before the sink answered")
                sel.unregister(s)
                pending -= 1
    sel.close()
    return socks


def hold(ip, port, pid, n, busy_secs):
    deadline = time.monotonic() + DEADLINE_S
    time.sleep(0.5)
    rss0 = rss_kib(pid)
    t0 = time.monotonic()
    socks = []
    while len(socks) < n:
        socks += open_batch(ip, port, min(BATCH, n - len(socks)), deadline)
    opened = time.monotonic() - t0
    time.sleep(2)  # let the proxy settle (handshake buffers freed)
    idle = rss_kib(pid)
    # Busy: every connection has data in flight at once.
    chunk = b"b" * 4096
    sent = 0
    peak = idle
    end = time.monotonic() + busy_secs
    for s in socks:
        s.setblocking(False)
    while time.monotonic() < end:
        for s in socks:
            try:
                sent += s.send(chunk)
            except BlockingIOError:
                pass
        peak = max(peak, rss_kib(pid))
    busy = rss_kib(pid)
    for s in socks:
        s.close()
    return {"n": n, "rss0_kib": rss0, "idle_kib": idle, "busy_kib": max(busy, peak),
            "open_s": round(opened, 2), "busy_mib_sent": round(sent / 1048576, 1)}


def cycle_worker(ip, port, count, deadline, errors):
    for _ in range(count):
        if time.monotonic() > deadline:
            errors.append("deadline")
            return
        try:
            with socket.create_connection((ip, port), timeout=30) as s:
                s.sendall(b"x")
                if s.recv(1) != b"y":
                    errors.append("no answer from the sink")
                    return
        except OSError as e:
            errors.append(str(e))
            return


def run_cycles(ip, port, n, workers, deadline):
    errors = []
    per = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    ts = [threading.Thread(target=cycle_worker, args=(ip, port, c, deadline, errors)) for c in per]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        die(f"{len(errors)} cycle worker(s) failed: {errors[0]}")


def cycles(ip, port, pid, n, workers):
    deadline = time.monotonic() + DEADLINE_S
    run_cycles(ip, port, min(1000, max(n // 10, 1)), workers, deadline)
    time.sleep(2)
    before = rss_kib(pid)
    t0 = time.monotonic()
    run_cycles(ip, port, n, workers, deadline)
    took = time.monotonic() - t0
    time.sleep(2)
    after = rss_kib(pid)
    return {"n": n, "before_kib": before, "after_kib": after, "secs": round(took, 2)}


def main():
    if len(sys.argv) != 7 or sys.argv[1] not in ("hold", "cycles"):
        die("usage: scale.py hold IP PORT PID N BUSY_SECS | cycles IP PORT PID N WORKERS")
    mode, ip, port, pid, n, x = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
        int(sys.argv[5]), int(sys.argv[6])
    if mode == "hold":
        out = hold(ip, port, pid, n, x)
    else:
        out = cycles(ip, port, pid, n, x)
    print(json.dumps(out))


main()
