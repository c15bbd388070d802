"""Process plumbing for the bench harness: spawning, /proc reading, ports, HTTP probes, cleanup.

Everything the harness starts lives under one run directory (bench/work/<run>), so cleanup can find
stragglers by that unique path in their command line or environment and kill them by PID; nothing is
ever killed by name.
"""
import http.client
import os
import signal
import socket
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def read_file(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return b"" if "b" in mode else ""


def cmdline(pid):
    return read_file(f"/proc/{pid}/cmdline", "rb").replace(b"\0", b" ").decode(errors="replace")


def environ(pid):
    return read_file(f"/proc/{pid}/environ", "rb").decode(errors="replace")


def ppid(pid):
    s = read_file(f"/proc/{pid}/stat")
    try:
        return int(s.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return None


def start_time(pid):
    """Start time of a process in ticks since boot: tells a pid from a later reuse of the same number."""
    s = read_file(f"/proc/{pid}/stat")
    try:
        return int(s.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def cpu_ticks(pid):
    """utime+stime of one process (all its threads), in clock ticks; None if gone."""
    s = read_file(f"/proc/{pid}/stat")
    try:
        f = s.rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except (IndexError, ValueError):
        return None


def rss_bytes(pid):
    s = read_file(f"/proc/{pid}/statm")
    try:
        return int(s.split()[1]) * PAGE
    except (IndexError, ValueError):
        return None


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def children(pid):
    return [p for p in all_pids() if ppid(p) == pid]


def tree_cpu_seconds(pid):
    """CPU seconds of a process and its live direct children (nginx master + workers)."""
    total = 0
    for p in [pid] + children(pid):
        t = cpu_ticks(p)
        if t is not None:
            total += t
    return total / CLK_TCK


def pid_listening_on_unix(path):
    """PID of a process holding a Unix socket bound to `path` (a daemon's control socket)."""
    inodes = set()
    for line in read_file("/proc/net/unix").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[7] == path:
            inodes.add(parts[6])
    if not inodes:
        return None
    for p in all_pids():
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    link = os.readlink(f"/proc/{p}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return p
        except OSError:
            continue
    return None


def http_get(port, path="/", timeout=1.0):
    """One request on a fresh connection: (status, body) or (None, error)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return None, str(e)
    finally:
        conn.close()


def wait_http(port, deadline_s, proc=None):
    """Poll until GET / answers 200; False on deadline or if `proc` exited."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        st, _ = http_get(port, timeout=0.5)
        if st == 200:
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def poll(fn, deadline_s, interval=0.05):
    end = time.monotonic() + deadline_s
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= end:
            return v
        time.sleep(interval)


class Registry:
    """Remembers what a scenario started and tears it all down, pass or fail."""

    def __init__(self, root):
        self.root = root  # unique run directory: marks our processes
        self.popens = []
        self.pids = {}  # pid -> start time when we learnt about it
        self.teardowns = []  # callables (e.g. `pm2 kill` with its PM2_HOME)

    def spawn(self, argv, env=None, cwd=None, log=None):
        out = open(log, "ab") if log else subprocess.DEVNULL
        p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                             start_new_session=True)
        if log:
            out.close()
        self.popens.append(p)
        return p

    def remember(self, pid):
        if pid and int(pid) not in self.pids:
            self.pids[int(pid)] = start_time(int(pid))

    def ours(self, pid):
        return self.root in cmdline(pid) or self.root in environ(pid)

    def cleanup(self):
        for fn in reversed(self.teardowns):
            try:
                fn()
            except Exception:  # teardown is best effort; the PID sweep below is the backstop
                pass
        self.teardowns.clear()
        for p in self.popens:
            if p.poll() is None:
                try:
                    p.terminate()
                except OSError:
                    pass
        end = time.monotonic() + 3
        for p in self.popens:
            try:
                p.wait(timeout=max(0.05, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    p.kill()
                    p.wait(timeout=2)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        self.popens.clear()
        # Stragglers: pids we recorded, and anything whose cmdline/environ names our run directory.
        me = os.getpid()
        victims = {p for p, st in self.pids.items() if alive(p) and st is not None and start_time(p) == st}
        victims |= {p for p in all_pids() if p != me and alive(p) and self.ours(p)}
        victims.discard(me)
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        self.pids.clear()
