#!/usr/bin/env python3
"""The client of scripts/callgrind-http.sh: a fixed number of requests over one HTTP/1.1
keep-alive connection, bracketed by `callgrind_control -z` and `-d` on the server.

It runs outside Valgrind, so its own work is not counted. On one connection it sends
WARMUP requests, zeroes the server's counters, sends REQUESTS requests one after the
other (each waits for the previous answer), dumps the counters, then closes. Every
answer must be 200 and contain EXPECT; the connection is opened before the warm-up so
the accept and the connection set-up are not in the dump.

  callgrind_http_client.py ADDR PID ENDPOINT WARMUP REQUESTS [EXPECT]

ADDR is host:port, PID the Valgrind process, ENDPOINT `is_authorized`, `gateway` or `gateway_jwt` (see scripts/bench-http.sh for the
requests; `gateway_jwt` reads its token from PORTCULLIS_BENCH_TOKEN).
"""

import os
import socket
import subprocess
import sys

BODY = (
    b'{"principal":"Portal::User::\\"bea\\"","action":"Portal::Action::\\"PayInvoice\\"",'
    b'"resource":"Portal::Invoice::\\"inv-1001\\"","context":{}}'
)


def request_bytes(endpoint: str, host: str) -> bytes:
    if endpoint == "is_authorized":
        head = (
            "POST /v1/is_authorized HTTP/1.1\r\n"
            f"host: {host}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(BODY)}\r\n"
            "\r\n"
        )
        return head.encode() + BODY
    if endpoint == "gateway":
        head = (
            "GET /forward-auth/nginx HTTP/1.1\r\n"
            f"host: {host}\r\n"
            "x-original-method: POST\r\n"
            "x-original-uri: /accounts/acme/invoices/inv-1001/pay\r\n"
            "x-portcullis-user: bea\r\n"
            "\r\n"
        )
        return head.encode()
    if endpoint == "gateway_jwt":
        # The same check as `gateway`, bea named by a JWT (scripts/mint-jwt.sh).
        token = os.environ["PORTCULLIS_BENCH_TOKEN"]
        head = (
            "GET /forward-auth/nginx HTTP/1.1\r\n"
            f"host: {host}\r\n"
            "x-original-method: POST\r\n"
            "x-original-uri: /accounts/acme/invoices/inv-1001/pay\r\n"
            f"authorization: Bearer {token}\r\n"
            "\r\n"
        )
        return head.encode()
    raise SystemExit(f"unknown endpoint {endpoint!r}")


class Connection:
    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise SystemExit("server closed the connection")
        self.buf += chunk

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Sends one request and reads its whole response (Content-Length framed)."""
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
            elif name.strip().lower() == "transfer-encoding":
                raise SystemExit(f"unexpected transfer-encoding: {value.strip()}")
        if length is None:
            raise SystemExit(f"response without content-length: {lines[0]}")
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def close(self) -> None:
        self.sock.close()


def callgrind_control(flag: str, pid: str) -> None:
    done = subprocess.run(["callgrind_control", flag, pid], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"callgrind_control {flag} {pid} failed:\n{done.stdout}{done.stderr}")


def main() -> None:
    if len(sys.argv) not in (6, 7):
        raise SystemExit(__doc__)
    addr, pid, endpoint, warmup, requests = sys.argv[1:6]
    expect = sys.argv[6].encode() if len(sys.argv) == 7 else b""
    host, _, port = addr.rpartition(":")
    request = request_bytes(endpoint, addr)
    conn = Connection(host, int(port))

    def run(n: int) -> None:
        for _ in range(n):
            status, body = conn.exchange(request)
            if status != 200 or expect not in body:
                raise SystemExit(f"unexpected answer: {status} {body[:200]!r}")

    run(int(warmup))
    callgrind_control("-z", pid)
    run(int(requests))
    callgrind_control("-d", pid)
    conn.close()


if __name__ == "__main__":
    main()
