#!/usr/bin/env python3
"""Measures GET /metrics with many managed processes: latency per scrape and the daemon's CPU time per
scrape (time on CPU of the daemon's threads from /proc/<pid>/task/*/schedstat, before and after N
scrapes, divided by N).

Usage: bench/metrics_scrape.py [--procs 200] [--scrapes 200] [--bin target/release/cohort]
It uses its own COHORT_HOME (a temp folder), starts `sleep` processes, scrapes over the Unix socket
and, with --tcp, over the web listener too; everything it started is stopped at the end.
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def get(sock_path, path, tcp=None, token=None):
    if tcp:
        s = socket.create_connection(tcp)
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock_path)
    req = f"GET {path} HTTP/1.0\r\nHost: cohort\r\n"
    if token:
        req += f"Authorization: Bearer {token}\r\n"
    s.sendall((req + "\r\n").encode())
    chunks = []
    while True:
        c = s.recv(1 << 16)
        if not c:
            break
        chunks.append(c)
    s.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head[:200]
    return body


def cpu_seconds(pid):
    """Time on CPU of every thread of `pid`, in ns precision (schedstat), not clock ticks."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def measure(label, fn, pid, scrapes):
    fn()  # warm up
    times = []
    cpu0 = cpu_seconds(pid)
    for _ in range(scrapes):
        t = time.perf_counter()
        body = fn()
        times.append((time.perf_counter() - t) * 1000)
    cpu = (cpu_seconds(pid) - cpu0) / scrapes * 1000
    times.sort()
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    lines = body.count(b"\n")
    print(f"{label}: {len(body)} bytes, {lines} lines; latency p50 {p50:.2f} ms, "
          f"p99 {p99:.2f} ms, max {times[-1]:.2f} ms; daemon cpu {cpu:.3f} ms per scrape "
          f"(schedstat, averaged over {scrapes})")
    return p50, p99, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=200)
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target/release/cohort"))
    ap.add_argument("--tcp", action="store_true", help="also scrape the TCP web listener (with a token)")
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    home = tempfile.mkdtemp(prefix="cohort-metrics-bench-")
    env = dict(os.environ, COHORT_HOME=home)
    run = lambda *args: subprocess.run([binary, *args], env=env, check=True, capture_output=True, text=True)
    try:
        per_app = 20
        for i in range(a.procs // per_app):
            run("start", "sleep 100000", "--name", f"app{i}", "-i", str(per_app))
        pid = int(open(os.path.join(home, "daemon.pid")).read())
        n = len(__import__("json").loads(run("jlist").stdout))
        print(f"{n} processes under cohort (daemon pid {pid}); {a.scrapes} scrapes each")
        time.sleep(2.5)  # one sampling tick, so every process has memory figures
        sock = os.path.join(home, "cohort.sock")
        measure("unix socket /metrics", lambda: get(sock, "/metrics"), pid, a.scrapes)
        measure("unix socket /processes (ls --json, for comparison)", lambda: get(sock, "/processes"), pid, a.scrapes)
        if a.tcp:
            port_sock = socket.socket()
            port_sock.bind(("127.0.0.1", 0))
            port = port_sock.getsockname()[1]
            port_sock.close()
            run("web", "--listen", f"127.0.0.1:{port}", "--token", "bench-token")
            measure("tcp /metrics (token)", lambda: get(None, "/metrics", ("127.0.0.1", port), "bench-token"), pid, a.scrapes)
    finally:
        subprocess.run([binary, "kill"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
