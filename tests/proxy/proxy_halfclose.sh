#!/usr/bin/env bash
# Half-close through csql-proxy: a client sends 4 MiB, shuts down its sending
# side, and still receives the backend's answer, which the backend only sends
# after it has read to EOF. The same client through Google's v1 proxy is
# logged for comparison (v1 closes both sides at the first EOF).
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
CSQL_SCRIPT_NAME=proxy-halfclose
csql_deadline 120

token=proxy-token-$$
backend_ip=$(csql_unique_ip 30)
csql_ip=$(csql_unique_ip 21)
v1_ip=$(csql_unique_ip 20)
inst=proj-$$:us-central1:eof
csql_tempdir work csql-proxy-halfclose

# Backend: read to EOF, then answer "<bytes> <sha256>" and close.
/usr/bin/python3 - "$backend_ip" <<'PY' &
import asyncio, hashlib, sys
async def handle(r, w):
    data = await r.read()
    w.write(f"{len(data)} {hashlib.sha256(data).hexdigest()}\n".encode())
    await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(handle, sys.argv[1], 4000)
    async with s:
        await s.serve_forever()
asyncio.run(main())
PY
csql_defer kill $!
csql_wait_tcp "$backend_ip" 4000 10 || csql_die "backend did not start"
csql_start_emulator --static-token "$token" \
    --instance "$inst?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=$backend_ip:4000"
proxy_start halfclose --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$csql_ip" \
    --port 6000 "$inst"
proxy_wait_ready

client() {
    /usr/bin/python3 - "$1" <<'PY'
import hashlib, os, socket, sys
data = os.urandom(4 << 20)
s = socket.create_connection((sys.argv[1], 6000), timeout=30)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
answer = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        answer += chunk
except OSError as e:
    answer += f"<{e.__class__.__name__}>".encode()
want = f"{len(data)} {hashlib.sha256(data).hexdigest()}\n".encode()
print("same" if answer == want else f"different: {answer!r}")
PY
}
csql_expect "answer after the client's half-close, through csql-proxy" same "$(client "$csql_ip")"
csql_expect "again (a second connection)" same "$(client "$csql_ip")"

csql_start_v1proxy "$EMU_URL" "$token" "$inst=tcp:$v1_ip:6000"
csql_log "for comparison, Google's v1 proxy: $(client "$v1_ip" 2>&1 | head -c 200)"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143
csql_log "PASS: half-close is forwarded through csql-proxy"
