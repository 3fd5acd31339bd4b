#!/usr/bin/env python3
"""A fault-injecting HTTP proxy between repozo and an S3 store (Garage) on
loopback, for tests/integration/s3_faults.rs. Python's standard library
only; one thread per client connection.

    s3_proxy.py --upstream 127.0.0.1:3900 [--port 0] [faults...] [--log FILE]

Prints ``PORT <n>`` on stdout once it listens, then serves until killed
(or, with --exit-after S, for at most S seconds).

Every request is forwarded byte for byte: the request line, the headers as
the client sent them (the Host header too: the client signed it with
SigV4, and the store checks the signature against the Host it receives)
and the body, on a fresh connection to the upstream; the response is
relayed byte for byte. Requests are numbered from 1 in the order their
headers arrive. Faults (each request gets at most one, in this order):

  --drop-nth N[,N...]     close the client's connection, for request N
  --drop F                ... for a fraction F of the requests
  --drop-when before|mid|any
                          before: read the request, close without
                          forwarding it; mid: forward it, relay the
                          response's headers and half of its body (the
                          store did the work, the client never learns);
                          any (default): one or the other at random
  --down-from N           an outage: from request N on, close every
                          connection before forwarding (the store is
                          gone: killed, unreachable)
  --down-for K            ... for K requests only, then forward again
                          (the store restarted)
  --down-secs S           ... for S seconds from request N
  --slowdown-first N      answer 503 SlowDown (an S3 XML error) to the
                          first N requests, without forwarding them
  --slowdown F            ... to a fraction F of the requests
  --delay S               wait S seconds before forwarding each request
  --fault-after N         no fault for the first N requests (say, the
                          listing that opens the repository)
  --only METHODS          faults only on these methods (GET,PUT,...)
  --path-has TEXT         faults only on requests whose path (with its
                          query) contains TEXT (uploadId=: the parts and
                          the completion of multipart uploads)
  --spare TEXT            no fault on requests whose path contains TEXT
                          (list-type=: the listings)
  --max-faults N          at most N faults in all (the outage aside)
  --seed N                for the fractions (default: 1)

--log FILE appends one line per request: ``<n> <method> <path> <fault>``
(fault: ok, down, drop-before, drop-mid, slowdown), written when its fault is
chosen.
"""

import argparse
import random
import socket
import socketserver
import sys
import threading
import time

SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<Error><Code>SlowDown</Code>'
    b'<Message>Please reduce your request rate.</Message>'
    b'<Resource>/</Resource><RequestId>s3-proxy</RequestId></Error>'
)


class Faults:
    def __init__(self, a):
        self.a = a
        self.lock = threading.Lock()
        self.n = 0
        self.rng = random.Random(a.seed)
        self.drop_nth = set(int(x) for x in a.drop_nth.split(',') if x) if a.drop_nth else set()
        self.only = set(m.strip().upper() for m in a.only.split(',')) if a.only else None
        self.log = open(a.log, 'a', buffering=1) if a.log else None
        self.faults = 0
        self.down_since = None

    def choose(self, method, path):
        """Number the request and pick its fault."""
        with self.lock:
            self.n += 1
            n = self.n
            a = self.a
            # draw every time, so that the choices of a seed do not depend
            # on which requests are eligible
            r_drop, r_slow, r_when = self.rng.random(), self.rng.random(), self.rng.random()
            fault = 'ok'
            eligible = (n > a.fault_after
                        and (self.only is None or method in self.only)
                        and (not a.path_has or a.path_has in path)
                        and (not a.spare or a.spare not in path)
                        and (not a.max_faults or self.faults < a.max_faults))
            if a.down_from and n == a.down_from:
                self.down_since = time.monotonic()
            if a.down_from and n >= a.down_from and (
                    not a.down_for or n < a.down_from + a.down_for) and (
                    not a.down_secs
                    or time.monotonic() - self.down_since < a.down_secs):
                fault = 'down'
            elif eligible:
                if n in self.drop_nth or r_drop < a.drop:
                    when = a.drop_when
                    if when == 'any':
                        when = 'before' if r_when < 0.5 else 'mid'
                    fault = 'drop-' + when
                elif n <= a.fault_after + a.slowdown_first or r_slow < a.slowdown:
                    fault = 'slowdown'
                if fault != 'ok':
                    self.faults += 1
            if self.log:
                self.log.write(f'{n} {method} {path} {fault}\n')
            return n, fault


def read_line(f):
    line = f.readline(65537)
    if not line:
        raise EOFError
    return line


def read_head(f):
    """The request or status line and the header lines, raw; and the
    headers parsed (lower-case names)."""
    first = read_line(f)
    raw = [first]
    headers = {}
    while True:
        line = read_line(f)
        raw.append(line)
        if line in (b'\r\n', b'\n'):
            break
        name, _, value = line.partition(b':')
        headers[name.strip().lower().decode('latin-1')] = value.strip().decode('latin-1')
    return first, b''.join(raw), headers


def read_body(f, headers, out=None, limit=None):
    """Read a body framed by Content-Length or chunked encoding, raw; send
    it to `out` as it comes (`limit`: stop after that many bytes, a
    dropped connection). Returns the bytes unless `out` is given."""
    chunks = []

    def emit(b):
        if out is None:
            chunks.append(b)
        else:
            out.sendall(b)

    sent = 0
    if 'chunked' in headers.get('transfer-encoding', '').lower():
        while True:
            size_line = read_line(f)
            emit(size_line)
            size = int(size_line.split(b';')[0].strip(), 16)
            if size == 0:
                # trailers up to the empty line
                while True:
                    t = read_line(f)
                    emit(t)
                    if t in (b'\r\n', b'\n'):
                        break
                break
            data = f.read(size + 2)
            if len(data) < size + 2:
                raise EOFError
            if limit is not None and sent + len(data) > limit:
                emit(data[: max(0, limit - sent)])
                raise ConnectionAbortedError
            emit(data)
            sent += len(data)
    else:
        left = int(headers.get('content-length', '0') or 0)
        while left > 0:
            data = f.read(min(left, 1 << 20))
            if not data:
                raise EOFError
            if limit is not None and sent + len(data) > limit:
                emit(data[: max(0, limit - sent)])
                raise ConnectionAbortedError
            emit(data)
            sent += len(data)
            left -= len(data)
    return b''.join(chunks)


def response_has_body(method, status):
    return not (method == 'HEAD' or status in (204, 304) or 100 <= status < 200)


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        faults = self.server.faults
        a = faults.a
        client = self.request
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cf = client.makefile('rb')
        try:
            while True:
                try:
                    first, raw_head, headers = read_head(cf)
                except EOFError:
                    return
                parts = first.decode('latin-1').split()
                method, path = parts[0].upper(), parts[1] if len(parts) > 1 else '/'
                n, fault = faults.choose(method, path)
                body = read_body(cf, headers)
                if fault in ('drop-before', 'down'):
                    return
                if fault == 'slowdown':
                    client.sendall(
                        b'HTTP/1.1 503 Slow Down\r\n'
                        b'Content-Type: application/xml\r\n'
                        b'Content-Length: ' + str(len(SLOWDOWN_BODY)).encode() + b'\r\n'
                        b'\r\n' + SLOWDOWN_BODY
                    )
                    continue
                if a.delay:
                    time.sleep(a.delay)
                if not self.forward(client, method, raw_head, body, fault == 'drop-mid', headers):
                    return
        except (ConnectionError, EOFError, OSError):
            return
        finally:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()

    def forward(self, client, method, raw_head, body, drop, req_headers):
        """Send one request upstream and relay its answer; False when the
        client's connection is to be closed."""
        host, port = self.server.upstream
        try:
            up = socket.create_connection((host, port), timeout=120)
        except OSError:
            return False  # the store is down: the client sees a closed connection
        try:
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up.sendall(raw_head + body)
            uf = up.makefile('rb')
            first, raw, headers = read_head(uf)
            status = int(first.split()[1])
            while 100 <= status < 200:  # 100 Continue and the like
                client.sendall(raw)
                first, raw, headers = read_head(uf)
                status = int(first.split()[1])
            if drop:
                client.sendall(raw)
                length = int(headers.get('content-length', '0') or 0)
                if response_has_body(method, status) and length > 1:
                    try:
                        read_body(uf, headers, out=client, limit=length // 2)
                    except ConnectionAbortedError:
                        pass
                return False
            client.sendall(raw)
            if response_has_body(method, status):
                if 'content-length' in headers or 'chunked' in headers.get('transfer-encoding', '').lower():
                    read_body(uf, headers, out=client)
                else:
                    # delimited by the close of the connection
                    while True:
                        data = uf.read1(1 << 20)
                        if not data:
                            break
                        client.sendall(data)
                    return False
            close = headers.get('connection', '').lower() == 'close' or \
                req_headers.get('connection', '').lower() == 'close'
            return not close
        finally:
            up.close()


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--upstream', required=True, help='HOST:PORT of the store')
    p.add_argument('--port', type=int, default=0)
    p.add_argument('--drop', type=float, default=0.0)
    p.add_argument('--drop-nth', default='')
    p.add_argument('--drop-when', choices=['before', 'mid', 'any'], default='any')
    p.add_argument('--down-from', type=int, default=0)
    p.add_argument('--down-for', type=int, default=0)
    p.add_argument('--down-secs', type=float, default=0.0)
    p.add_argument('--slowdown', type=float, default=0.0)
    p.add_argument('--slowdown-first', type=int, default=0)
    p.add_argument('--delay', type=float, default=0.0)
    p.add_argument('--fault-after', type=int, default=0)
    p.add_argument('--only', default='')
    p.add_argument('--path-has', default='')
    p.add_argument('--spare', default='')
    p.add_argument('--max-faults', type=int, default=0)
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--log')
    p.add_argument('--exit-after', type=float, default=0.0)
    a = p.parse_args()
    host, _, port = a.upstream.rpartition(':')
    host = host.replace('http://', '')
    server = Server(('127.0.0.1', a.port), Handler)
    server.faults = Faults(a)
    server.upstream = (host or '127.0.0.1', int(port))
    print(f'PORT {server.server_address[1]}', flush=True)
    if a.exit_after:
        threading.Timer(a.exit_after, server.shutdown).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
