#!/usr/bin/env python3
"""Open N idle HTTP/1.1 keep-alive connections to host:port (one request each, so they
are real HTTP connections), report the server process's RSS before and after, then close.

usage: idle_conns.py HOST PORT PID N PATH TOKEN
"""
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    host, port, pid, n, path, token = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
    time.sleep(0.5)
    before = rss_kib(pid)
    conns = []
    for i in range(n):
        s = socket.create_connection((host, port))
        s.sendall(request)
        conns.append(s)
        if len(conns) % 500 == 0:
            for c in conns[-500:]:
                c.recv(65536)
    for c in conns[len(conns) - len(conns) % 500:]:
        c.recv(65536)
    time.sleep(2.0)
    after = rss_kib(pid)
    print(f"{before} {after} {(after - before) * 1024 / n:.0f}")
    for c in conns:
        c.close()


if __name__ == "__main__":
    main()
