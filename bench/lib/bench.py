"""Runs the benchmark scenarios side by side and writes bench/RESULTS.md, results.json and charts.

Called by bench/run (which installs the tools and builds cohort). Each scenario starts every config it
compares, then interleaves the measurements (A B C, A B C, ...) for the given number of rounds and keeps
the median; everything it started is torn down in a finally block. See docs/benchmarks.md.
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
import report  # noqa: E402
import wrk  # noqa: E402
import autoscale_bench  # noqa: E402
from targets import (NotYet, Skip, PM2, Cohort, Cluster, make_app, log_file,  # noqa: E402
                     start_nginx, start_haproxy, start_cohort_balancer, live_workers)

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = ["cluster", "balancer", "footprint", "recovery", "reload", "logs", "autoscale"]


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def status_of(e):
    return ("not yet: " if isinstance(e, NotYet) else "skipped: ") + str(e)


class Params:
    def __init__(self, quick, rounds):
        self.quick = quick
        self.rounds = rounds or (3 if quick else 5)
        self.load_s = 2 if quick else 10        # throughput runs (wrk -d)
        self.warm_s = 1 if quick else 2
        self.event_s = 4 if quick else 6        # recovery / reload runs: one event at t=1s
        self.ls_runs = 10 if quick else 30
        self.log_lines = 100_000 if quick else 200_000
        self.footprint_procs = 50


def start_configs(reg, configs, starter):
    """Start each config; a failure marks that config's status instead of aborting the scenario."""
    for c in configs:
        try:
            starter(c)
            c["status"] = "ok"
        except (NotYet, Skip) as e:
            c["status"] = status_of(e)
            log(f"  {c['label']}: {c['status']}")
        except Exception as e:  # an anchor or cohort misbehaving must not end the run
            c["status"] = f"error: {type(e).__name__}: {e}"[:200]
            log(f"  {c['label']}: {c['status']}")


def new_cohort(reg, root, name, need=("start",)):
    return Cohort(reg, os.path.join(root, name), need)


def manager(reg, root, tool, need=("start",)):
    """The process manager a config runs under: PM2, cohort, or None (plain node)."""
    if tool == "pm2":
        return PM2(reg, os.path.join(root, "pm2home"))
    if tool == "cohort":
        return new_cohort(reg, root, "cohorthome", need)
    return None


# --- 1. cluster ---------------------------------------------------------------------------------

def scenario_cluster(reg, root, P):
    configs = [
        {"key": "node1", "label": "node (1 process)", "kind": "node"},
        {"key": "rr", "label": "Node cluster rr (2)", "kind": "node-rr"},
        {"key": "none", "label": "Node cluster SCHED_NONE (2)", "kind": "node-none"},
        {"key": "pm2", "label": "pm2 -i 2", "kind": "pm2"},
        {"key": "cohort", "label": "cohort -i 2", "kind": "cohort"},
    ]

    def starter(c):
        t = c["t"] = Cluster(reg, root, c["key"], c["label"], c["kind"])
        t.start(manager(reg, root, c["kind"]))

    start_configs(reg, configs, starter)
    live = [c for c in configs if c["status"] == "ok"]
    for c in live:
        wrk.run(c["t"].port, P.warm_s)
        c["rounds"] = []
        c["rounds_close"] = []
    for r in range(P.rounds):
        for c in live:
            t = c["t"]
            # New connection per request: every accept is on the path (Node's master accepts and
            # passes each one to a worker; cohort's workers accept on their own sockets).
            res = wrk.run(t.port, P.load_s, conns=64, close=True)
            res.pop("raw", None)
            c["rounds_close"].append(res)
            log(f"  cluster r{r + 1} {c['label']} (Connection: close): {res['rps']} req/s "
                f"p99 {res['p99_ms']} ms failed {res['failed']}")
            before = t.counts()
            res = wrk.run(t.port, P.load_s, conns=64)
            time.sleep(0.35)  # let the workers flush their counters
            after = t.counts()
            deltas = sorted((after.get(p, 0) - before.get(p, 0) for p in after), reverse=True)
            total = sum(deltas) or 1
            res["shares"] = [round(100.0 * d / total, 1) for d in deltas if d > 0]
            res.pop("raw", None)
            c["rounds"].append(res)
            log(f"  cluster r{r + 1} {c['label']}: {res['rps']} req/s p99 {res['p99_ms']} ms "
                f"shares {res['shares']}")
    for c in configs:
        rs = c.get("rounds", [])
        c["median"] = {k: med([x[k] for x in rs]) for k in ("rps", "p50_ms", "p99_ms", "failed")} if rs else {}
        if rs:
            n = max(len(x["shares"]) for x in rs)
            c["median"]["shares"] = [med([x["shares"][i] if i < len(x["shares"]) else 0 for x in rs])
                                     for i in range(n)]
        rc = c.get("rounds_close", [])
        for k in ("rps", "p50_ms", "p99_ms", "failed"):
            c.setdefault("median", {})[k + "_close"] = med([x[k] for x in rc]) if rc else None
        c.pop("t", None)
    return {"configs": configs,
            "ratio": ratio(configs, "cohort", "rr", "rps"),
            "ratio_close": ratio(configs, "cohort", "rr", "rps_close"),
            "ratio_close_pm2": ratio(configs, "cohort", "pm2", "rps_close"),
            "command": f"wrk -t1 -c64 -d{P.load_s}s --latency http://127.0.0.1:PORT/",
            "command_close": f"wrk -t1 -c64 -d{P.load_s}s --latency -H 'Connection: close' http://127.0.0.1:PORT/"}


def ratio(configs, a, b, field):
    ca = next((c for c in configs if c["key"] == a), None)
    cb = next((c for c in configs if c["key"] == b), None)
    va = ca and ca.get("median", {}).get(field)
    vb = cb and cb.get("median", {}).get(field)
    return round(va / vb, 3) if va and vb else None


# --- 2. balancer --------------------------------------------------------------------------------

def scenario_balancer(reg, root, P):
    backends = []
    for i in range(2):
        port = procs.free_port()
        d = make_app(root, f"backend{i}", port)
        p = reg.spawn(["node", os.path.join(d, "hello.js")])
        if not procs.wait_http(port, 15, p):
            raise RuntimeError("backend did not start")
        backends.append(port)
    configs = [
        {"key": "nginx1", "label": "NGINX 1 worker", "start": lambda port: start_nginx(reg, root, "nginx1", port, backends, 1)},
        {"key": "nginx", "label": "NGINX auto (2)", "start": lambda port: start_nginx(reg, root, "nginx", port, backends, "auto")},
        {"key": "haproxy1", "label": "HAProxy 1 thread", "start": lambda port: start_haproxy(reg, root, "haproxy1", port, backends, 1)},
        {"key": "haproxy2", "label": "HAProxy 2 threads", "start": lambda port: start_haproxy(reg, root, "haproxy2", port, backends, 2)},
        {"key": "cohort", "label": "cohort balance", "start": lambda port: start_cohort_balancer(reg, root, "cohortlb", port, backends)},
        # Sticky sessions on: wrk sends no cookie, so every answer is a first visit and carries a
        # Set-Cookie (the most the feature costs per request).
        {"key": "cohort_sticky", "label": "cohort balance --sticky-cookie (every answer pins)",
         "start": lambda port: start_cohort_balancer(reg, root, "cohortsticky", port, backends,
                                                     ["--sticky-cookie", "srv"])},
        # Not a competitor: an L4 relay does no HTTP work at all, so it bounds what any HTTP proxy
        # could reach on this machine with the same sockets (the kernel's share is the same).
        {"key": "cohort_tcp", "label": "reference: cohort balance --mode tcp (L4 relay, no HTTP)",
         "start": lambda port: start_cohort_balancer(reg, root, "cohortl4", port, backends, ["--mode", "tcp"])},
    ]

    if P.baseline:
        # Another cohort binary (e.g. the commit before a change), measured interleaved with this
        # one under the same load: the change's cost, side by side.
        configs.insert(configs.index(next(c for c in configs if c["key"] == "cohort")) + 1,
                       {"key": "cohort_baseline", "label": f"cohort balance, baseline ({P.baseline_label})",
                        "start": lambda port: start_cohort_balancer(reg, root, "cohortbase", port, backends,
                                                                    binary=P.baseline)})
    if P.configs:
        configs = [c for c in configs if c["key"] in P.configs]

    def starter(c):
        c["port"] = procs.free_port()
        c["pid"] = c["start"](c["port"])

    start_configs(reg, configs, starter)
    live = [c for c in configs if c["status"] == "ok"]
    for c in live:
        wrk.run(c["port"], P.warm_s)
        c["rounds"] = []
    for r in range(P.rounds):
        # Alternate the order every round, so neither of two configs always runs right after a third.
        for c in (live if r % 2 == 0 else live[::-1]):
            cpu0, t0 = procs.tree_cpu_seconds(c["pid"]), time.monotonic()
            res = wrk.run(c["port"], P.load_s, conns=64)
            cpu1, t1 = procs.tree_cpu_seconds(c["pid"]), time.monotonic()
            res.pop("raw", None)
            res["proxy_cores"] = round((cpu1 - cpu0) / (t1 - t0), 3)
            res["proxy_us_per_req"] = round(1e6 * (cpu1 - cpu0) / res["requests"], 2) if res["requests"] else None
            c["rounds"].append(res)
            log(f"  balancer r{r + 1} {c['label']}: {res['rps']} req/s p99 {res['p99_ms']} ms "
                f"proxy {res['proxy_cores']} cores")
    for c in configs:
        rs = c.get("rounds", [])
        c["median"] = {k: med([x[k] for x in rs]) for k in
                       ("rps", "p50_ms", "p99_ms", "failed", "proxy_cores", "proxy_us_per_req")} if rs else {}
        c.pop("start", None)
    out = {"configs": configs, "ratio": ratio(configs, "cohort", "nginx", "rps"),
           "command": f"wrk -t1 -c64 -d{P.load_s}s --latency http://127.0.0.1:PROXY/ (2 node backends)"}
    if P.baseline:
        out["ratio_baseline"] = ratio(configs, "cohort", "cohort_baseline", "rps")
        out["ratio_baseline_us"] = ratio(configs, "cohort", "cohort_baseline", "proxy_us_per_req")
        # Each round's ratio (the two ran back to back in it): the spread the median hides.
        a, b = (next((c for c in configs if c["key"] == k), {}) for k in ("cohort", "cohort_baseline"))
        out["ratio_baseline_rounds"] = [round(x["rps"] / y["rps"], 3) for x, y in
                                        zip(a.get("rounds", []), b.get("rounds", [])) if x["rps"] and y["rps"]]
    return out


# --- 3. footprint -------------------------------------------------------------------------------

def rss_median(pid, n=3):
    vals = []
    for _ in range(n):
        vals.append(procs.rss_bytes(pid))
        time.sleep(0.5)
    v = med(vals)
    return round(v / 2**20, 1) if v else None


def scenario_footprint(reg, root, P):
    configs = [{"key": "pm2", "label": "PM2"}, {"key": "cohort", "label": "cohort"}]
    n = P.footprint_procs
    script = os.path.join(make_app(root, "idle"), "idle.js")

    def starter(c):
        mgr = c["mgr"] = manager(reg, root, c["key"], ("start", "ls"))
        pid = c["pid"] = mgr.ensure_daemon()
        if not pid:
            raise Skip("daemon pid not found")
        time.sleep(1)
        c["median"] = {"rss_idle_mib": rss_median(pid)}
        mgr.start(script, "idle", n)
        if not procs.poll(lambda: mgr.online() >= n, 90, 0.5):
            raise (NotYet if c["key"] == "cohort" else Skip)(f"{n} processes never all online")
        time.sleep(2)
        c["median"]["rss_50_mib"] = rss_median(pid)

    start_configs(reg, configs, starter)
    live = [c for c in configs if c["status"] == "ok"]
    times = {c["key"]: [] for c in live}
    for _ in range(P.ls_runs):
        for c in live:
            t0 = time.perf_counter()
            subprocess.run(c["mgr"].ls_argv(), env=c["mgr"].env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)
            times[c["key"]].append((time.perf_counter() - t0) * 1000)
    for c in live:
        c["median"]["ls_ms"] = round(med(times[c["key"]]), 1)
        c["ls_ms_all"] = [round(x, 1) for x in times[c["key"]]]
        log(f"  footprint {c['label']}: {c['median']}")
    for c in configs:
        c.pop("mgr", None)
        c.setdefault("median", {})
    return {"configs": configs, "apps": f"one app `idle.js` (setInterval, no port) started with -i {n}",
            "ratio_rss": ratio(configs, "cohort", "pm2", "rss_50_mib"),
            "ratio_ls": ratio(configs, "cohort", "pm2", "ls_ms"),
            "command": f"RSS of the daemon pid (/proc/PID/statm); `ls` wall time, median of {P.ls_runs}"}


# --- 4. recovery --------------------------------------------------------------------------------

def probe_new_worker(port, old, stop, out):
    """Fresh-connection GETs until a pid not in `old` answers; stores seconds since start in out."""
    t0 = time.monotonic()
    out["probe_failures"] = 0
    while not stop.is_set() and time.monotonic() - t0 < 15:
        # Short timeout: a probe connection handed to the dying worker must not hide the new one.
        st, body = procs.http_get(port, timeout=0.3)
        if st != 200:
            out["probe_failures"] += 1
        if st == 200:
            m = re.search(r"(\d+)", body)
            if m and int(m.group(1)) not in old:
                out["new_worker_s"] = time.monotonic() - t0
                return
        time.sleep(0.005)


def read_sysctl(path):
    """A sysctl as this process's network namespace sees it (None if absent)."""
    try:
        with open("/proc/sys/" + path) as f:
            return f.read().strip()
    except OSError:
        return None


def event_run(t, P, action, conns=32, close=False):
    """wrk for P.event_s seconds; `action()` at t=1s; returns wrk result + what action returned."""
    bg = wrk.Background(t.port, P.event_s, conns=conns, close=close)
    time.sleep(1.0)
    info = action()
    res = bg.result()
    res.pop("raw", None)
    res.update(info or {})
    return res


def scenario_recovery(reg, root, P):
    configs = [
        {"key": "node", "label": "Node cluster (re-fork on exit)", "kind": "node-rr"},
        {"key": "pm2", "label": "pm2 -i 2", "kind": "pm2"},
        {"key": "cohort", "label": "cohort -i 2", "kind": "cohort"},
    ]

    def starter(c):
        t = c["t"] = Cluster(reg, root, "rec-" + c["key"], c["label"], c["kind"])
        t.start(manager(reg, root, c["kind"]))

    start_configs(reg, configs, starter)
    live = [c for c in configs if c["status"] == "ok"]
    for c in live:
        c["rounds"] = []
    for r in range(P.rounds):
        for c in live:
            t = c["t"]
            if not t.settle():
                log(f"  recovery {c['label']}: did not get back to {t.instances} workers")
            old = set(t.workers())
            victim = sorted(old)[r % len(old)] if old else None
            stop, out = threading.Event(), {}

            def kill():
                th = threading.Thread(target=probe_new_worker, args=(t.port, old, stop, out), daemon=True)
                if victim:
                    os.kill(victim, signal.SIGKILL)
                th.start()
                return {"_th": th}

            res = event_run(t, P, kill)
            th = res.pop("_th")
            th.join(timeout=15)
            stop.set()
            res["recovery_ms"] = round(out["new_worker_s"] * 1000, 1) if "new_worker_s" in out else None
            res["probe_failures"] = out.get("probe_failures")
            c["rounds"].append(res)
            log(f"  recovery r{r + 1} {c['label']}: new worker serving after {res['recovery_ms']} ms, "
                f"failed {res['failed']}, longest {res['max_ms']} ms, failed probes {res['probe_failures']}")
    for c in configs:
        rs = c.get("rounds", [])
        c["median"] = {k: med([x[k] for x in rs]) for k in ("recovery_ms", "failed", "max_ms", "rps", "probe_failures")} if rs else {}
        c.pop("t", None)
    return {"configs": configs, "ratio": ratio(configs, "cohort", "node", "recovery_ms"),
            "ratio_max": ratio(configs, "cohort", "node", "max_ms"),
            "tcp_migrate_req": read_sysctl("net/ipv4/tcp_migrate_req"),
            "command": f"wrk -t1 -c32 -d{P.event_s}s --latency; kill -9 of one worker at t=1s; "
                       "fresh-connection probe every 5 ms until a new pid answers"}


# --- 5. reload ----------------------------------------------------------------------------------

def scenario_reload(reg, root, P):
    configs = []
    for tool in ("pm2", "cohort"):
        for drain in (False, True):
            configs.append({"key": f"{tool}-{'drain' if drain else 'naive'}", "tool": tool, "drain": drain,
                            "label": f"{'PM2' if tool == 'pm2' else 'cohort'} reload, {'draining' if drain else 'naive'} app"})
    mgrs = {}

    def starter(c):
        if c["tool"] not in mgrs:
            mgrs[c["tool"]] = manager(reg, root, c["tool"], ("start", "reload"))
        t = c["t"] = Cluster(reg, root, "rl-" + c["key"], c["label"], c["tool"], drain=c["drain"])
        t.start(mgrs[c["tool"]])

    start_configs(reg, configs, starter)
    live = [c for c in configs if c["status"] == "ok"]
    loads = [("keepalive", 32, False), ("close", 16, True)]
    for c in live:
        c["rounds"] = {name: [] for name, _, _ in loads}
    for r in range(P.rounds):
        for lname, conns, close in loads:
            for c in live:
                t = c["t"]
                if not t.settle():
                    log(f"  reload {c['label']}: did not settle at {t.instances} workers")
                argv = t.mgr.reload_argv(t.name)
                old = set(t.workers())

                def do_reload():
                    t0 = time.monotonic()
                    p = subprocess.run(argv, env=t.mgr.env, capture_output=True, text=True, timeout=60)
                    return {"reload_s": round(time.monotonic() - t0, 3), "reload_rc": p.returncode}

                res = event_run(t, P, do_reload, conns=conns, close=close)
                res["reload_within_load"] = res["reload_s"] < P.event_s - 1.05
                # Checked when the load stops: did every old worker go, i.e. did the whole reload
                # happen inside the measured window (a reload command may return before it is done)?
                now = set(t.workers())
                res["replaced_in_window"] = res["reload_within_load"] and bool(now) and not (old & now)
                c["rounds"][lname].append(res)
                log(f"  reload r{r + 1} {lname} {c['label']}: failed {res['failed']} "
                    f"(non2xx {res['non2xx']}, socket {res['socket_errors']}), reload took {res['reload_s']} s, "
                    f"all workers replaced in window: {res['replaced_in_window']}")
    for c in configs:
        rs = c.get("rounds", {})
        c["median"] = {}
        for lname in rs:
            c["median"][f"failed_{lname}"] = med([x["failed"] for x in rs[lname]])
            c["median"][f"reload_s_{lname}"] = med([x["reload_s"] for x in rs[lname]])
            c["median"][f"replaced_{lname}"] = sum(1 for x in rs[lname] if x["replaced_in_window"])
            c["median"]["runs"] = len(rs[lname])
        c.pop("t", None)
    return {"configs": configs,
            "command": f"keep-alive: wrk -t1 -c32 -d{P.event_s}s; new connections: wrk -t1 -c16 "
                       f"-H 'Connection: close' -d{P.event_s}s; one reload at t=1s"}


# --- 6. logs ------------------------------------------------------------------------------------

def tail(path, n=256):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def scenario_logs(reg, root, P):
    configs = [{"key": "pm2", "label": "PM2 (fork mode)"}, {"key": "cohort", "label": "cohort"}]
    N = P.log_lines

    def starter(c):
        c["mgr"] = manager(reg, root, c["key"], ("start", "delete"))
        c["pid"] = c["mgr"].ensure_daemon()
        if not c["pid"]:
            raise Skip("daemon pid not found")

    start_configs(reg, configs, starter)
    live = [c for c in configs if c["status"] == "ok"]
    for c in live:
        c["rounds"] = []
    for r in range(P.rounds):
        for c in live:
            mgr, name = c["mgr"], f"log{r}"
            d = make_app(root, f"log-{c['key']}-{r}", lines=N)
            cpu0 = procs.cpu_ticks(c["pid"]) or 0
            try:
                mgr.start(os.path.join(d, "logger.js"), name)
            except (NotYet, Skip) as e:
                c["status"] = status_of(e)
                break
            t_end = None
            deadline = time.monotonic() + 120
            path = None
            while time.monotonic() < deadline:
                path = path or log_file(mgr, name)
                if path and re.search(r"(^|\s)end\s*$", tail(path)):
                    t_end = time.time()
                    break
                time.sleep(0.01)
            cpu1 = procs.cpu_ticks(c["pid"]) or 0
            res = {"log_file": path, "complete": t_end is not None}
            seen, t_start = set(), None
            if path:
                with open(path, errors="replace") as f:
                    for line in f:
                        m = re.search(r"line (\d+)\s*$", line)
                        if m:
                            seen.add(int(m.group(1)))
                        elif t_start is None:
                            m = re.search(r"start (\d{13})", line)
                            if m:
                                t_start = int(m.group(1)) / 1000
            res["lines_seen"] = len(seen)
            res["lines_lost"] = N - len(seen)
            dur = (t_end - t_start) if (t_end and t_start) else None
            res["seconds"] = round(dur, 3) if dur else None
            res["lines_per_s"] = round(N / dur) if dur else None
            res["daemon_cpu_s"] = round((cpu1 - cpu0) / procs.CLK_TCK, 2)
            c["rounds"].append(res)
            mgr.delete(name)
            log(f"  logs r{r + 1} {c['label']}: {res['lines_per_s']} lines/s, lost {res['lines_lost']}, "
                f"daemon cpu {res['daemon_cpu_s']} s")
    for c in configs:
        rs = c.get("rounds", [])
        c["median"] = {k: med([x[k] for x in rs]) for k in ("lines_per_s", "lines_lost", "daemon_cpu_s")} if rs else {}
        if rs:
            c["median"]["lines_lost_max"] = max(x["lines_lost"] for x in rs)
        c.pop("mgr", None)
    return {"configs": configs, "lines": N, "ratio": ratio(configs, "cohort", "pm2", "lines_per_s"),
            "command": f"node logger.js printing {N} numbered lines (one console.log per line)"}


# --- main ---------------------------------------------------------------------------------------

def run_cmd(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=15)
        return (p.stdout + p.stderr).strip().splitlines()[0] if (p.stdout + p.stderr).strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def repo_of(binary):
    """The checkout a target/<profile>/cohort binary was built in, if it looks like one."""
    parts = os.path.abspath(binary).split(os.sep) if binary else []
    if len(parts) > 3 and parts[-3] == "target":
        return os.sep.join(parts[:-3])
    return None


def machine_info():
    cpu = next((l.split(":", 1)[1].strip() for l in procs.read_file("/proc/cpuinfo").splitlines()
                if l.startswith("model name")), None)
    pm2v = None
    pj = os.path.join(BENCH, ".tools", "node_modules", "pm2", "package.json")
    if os.path.exists(pj):
        import json
        pm2v = json.load(open(pj)).get("version")
    cohort = os.environ.get("COHORT_BIN", "")
    info = {
        "cores": os.cpu_count(), "cpu": cpu, "kernel": os.uname().release,
        "os": next((l.split("=", 1)[1].strip('"') for l in procs.read_file("/etc/os-release").splitlines()
                    if l.startswith("PRETTY_NAME=")), None),
        "node": run_cmd(["node", "-v"]), "nginx": run_cmd(["nginx", "-v"]),
        "haproxy": run_cmd(["haproxy", "-v"]), "pm2": pm2v,
        "wrk": run_cmd(["wrk", "-v"]), "python": sys.version.split()[0],
        "cohort": (run_cmd([cohort, "--version"]) if cohort else None) or "not built",
        "cohort_bin": cohort or None,
        "cohort_commit": os.environ.get("COHORT_LABEL") or run_cmd(
            ["git", "-C", repo_of(cohort) or os.path.dirname(BENCH), "rev-parse", "--short", "HEAD"]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_at_start": procs.read_file("/proc/loadavg").split()[:3],
    }
    if info["wrk"]:
        info["wrk"] = info["wrk"].split(" [")[0]
    return info


def main():
    ap = argparse.ArgumentParser(description="cohort benchmarks (see docs/benchmarks.md)")
    ap.add_argument("--quick", action="store_true", help="short runs (~3-4 min), still 3 rounds")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(SCENARIOS))
    ap.add_argument("--rounds", type=int, default=0, help="rounds per scenario (default 3 quick, 5 full)")
    ap.add_argument("--out", default=BENCH, help="where RESULTS.md, results.json, charts/ go")
    ap.add_argument("--baseline", default=os.environ.get("COHORT_BASELINE_BIN", ""),
                    help="balancer scenario: another cohort binary measured interleaved with COHORT_BIN "
                         "(label: COHORT_BASELINE_LABEL)")
    ap.add_argument("--configs", default="",
                    help="balancer scenario: comma-separated config keys to run (e.g. cohort,cohort_baseline)")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s] or SCENARIOS
    for s in only:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}")
    if not shutil.which("wrk"):
        sys.exit("error: wrk not found (run bench/run as root so it can apt-get install wrk)")
    P = Params(args.quick, args.rounds)
    if args.baseline and not os.access(args.baseline, os.X_OK):
        sys.exit(f"error: --baseline {args.baseline}: not an executable file")
    P.baseline = os.path.abspath(args.baseline) if args.baseline else ""
    P.baseline_label = os.environ.get("COHORT_BASELINE_LABEL") or os.path.basename(args.baseline)
    P.configs = [k for k in args.configs.split(",") if k]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run_root = os.path.join(BENCH, "work", time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}")
    os.makedirs(run_root)
    results = {"mode": "quick" if P.quick else "full", "rounds": P.rounds, "machine": machine_info(),
               "params": vars(P), "scenarios": {}}
    log(f"mode {results['mode']}, {P.rounds} rounds, cohort: {results['machine']['cohort']}")
    t_all = time.monotonic()
    fns = {"cluster": scenario_cluster, "balancer": scenario_balancer, "footprint": scenario_footprint,
           "recovery": scenario_recovery, "reload": scenario_reload, "logs": scenario_logs,
           "autoscale": lambda reg, root, P: autoscale_bench.scenario_autoscale(
               reg, root, P, start_configs, new_cohort, log)}
    for s in only:
        log(f"scenario {s}")
        root = os.path.join(run_root, s)
        os.makedirs(root)
        reg = procs.Registry(root)
        t0 = time.monotonic()
        load0 = procs.read_file("/proc/loadavg").split()[0]
        try:
            results["scenarios"][s] = fns[s](reg, root, P)
        except Exception as e:
            log(f"scenario {s} failed: {type(e).__name__}: {e}")
            results["scenarios"][s] = {"error": f"{type(e).__name__}: {e}", "configs": []}
        finally:
            reg.cleanup()
        results["scenarios"][s]["seconds"] = round(time.monotonic() - t0, 1)
        results["scenarios"][s]["loadavg_1m"] = [load0, procs.read_file("/proc/loadavg").split()[0]]
    results["seconds"] = round(time.monotonic() - t_all, 1)
    report.write(results, args.out)
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(run_root, ignore_errors=True)
    log(f"done in {results['seconds']} s: {os.path.join(args.out, 'RESULTS.md')}")


if __name__ == "__main__":
    main()
