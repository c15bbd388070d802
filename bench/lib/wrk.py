"""Runs wrk (always bounded by -d) and parses its --latency report into numbers."""
import re
import subprocess
import threading

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(tok):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", tok)
    return float(m.group(1)) * _UNIT[m.group(2)] if m else None


def parse(out):
    r = {"rps": None, "p50_ms": None, "p99_ms": None, "max_ms": None, "requests": 0,
         "errors_connect": 0, "errors_read": 0, "errors_write": 0, "errors_timeout": 0, "non2xx": 0}
    m = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    if m:
        r["max_ms"] = _ms(m.group(3))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s+%s(?:\.000)?%%\s+(\S+)" % pct, out, re.M)
        if m:
            r[key] = _ms(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        for i, k in enumerate(("errors_connect", "errors_read", "errors_write", "errors_timeout")):
            r[k] = int(m.group(i + 1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    r["socket_errors"] = r["errors_connect"] + r["errors_read"] + r["errors_write"] + r["errors_timeout"]
    r["failed"] = r["socket_errors"] + r["non2xx"]
    return r


def argv(port, duration, conns=64, threads=1, close=False, path="/"):
    a = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if close:
        a += ["-H", "Connection: close"]
    return a + [f"http://127.0.0.1:{port}{path}"]


def run(port, duration, **kw):
    p = subprocess.run(argv(port, duration, **kw), capture_output=True, text=True, timeout=duration + 30)
    r = parse(p.stdout)
    r["raw"] = p.stdout
    return r


class Background:
    """wrk in the background, for scenarios that do something (kill, reload) during the load."""

    def __init__(self, port, duration, **kw):
        self.duration = duration
        self.proc = subprocess.Popen(argv(port, duration, **kw), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.out = ""
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        self.out = self.proc.stdout.read()

    def result(self):
        try:
            self.proc.wait(timeout=self.duration + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.t.join(timeout=5)
        r = parse(self.out)
        r["raw"] = self.out
        return r
