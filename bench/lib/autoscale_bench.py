"""The autoscale scenario: a step load (light -> heavy -> light) against the same CPU-bound app
(hello.js spinning `burn_ms` per request to /burn; the light client asks for / which costs nothing) run by cohort three ways, measured interleaved:
`instances = { min = 1, max = "max" }` (autoscaled), fixed `-i 1`, fixed `-i max`. Reports p99 and
req/s during the heavy step, failed requests (wrk + a paced light client that runs throughout),
the time from the step to a second serving worker, the time back to one worker after the step,
and the worker count over time. See docs/benchmarks.md and docs/autoscaling.md.
"""
import http.client
import os
import statistics
import threading
import time

import procs
import wrk
from targets import NotYet, make_app, live_workers

BURN_MS = 5
SCALE_DOWN_AFTER_S = 5      # shorter than the default 30 s, so a round shows the way back
LIGHT_RPS = 20              # the light phases: one keep-alive client, paced
HEAVY_CONNS = 16


def _med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def _light_client(port, stop, out):
    """One keep-alive client, LIGHT_RPS requests a second, until `stop`; counts ok and failed."""
    conn = None
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/")
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                out["ok"] += 1
            else:
                out["failed"] += 1
            if (r.getheader("connection") or "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            out["failed"] += 1
            if conn is not None:
                conn.close()
            conn = None
        time.sleep(max(0.0, 1.0 / LIGHT_RPS - (time.monotonic() - t0)))
    if conn is not None:
        conn.close()


def _sampler(app_dir, t0, stop, out):
    """Live worker count every 100 ms, as (seconds since t0, count) at each change."""
    last = None
    while not stop.is_set():
        n = len(live_workers(app_dir))
        if n != last:
            out.append((round(time.monotonic() - t0, 2), n))
            last = n
        time.sleep(0.1)


def scenario_autoscale(reg, root, P, start_configs, new_cohort, log):
    cpus = os.cpu_count() or 1
    configs = [
        {"key": "cohort-auto", "label": 'cohort instances = { min = 1, max = "max" }', "mode": "auto"},
        {"key": "cohort-1", "label": "cohort -i 1", "mode": "1"},
        {"key": "cohort-max", "label": f"cohort -i max ({cpus})", "mode": "max"},
    ]
    heavy_s = 4 if P.quick else 10
    mgr = {}

    def starter(c):
        if "m" not in mgr:
            mgr["m"] = new_cohort(reg, root, "cohorthome")
        m = mgr["m"]
        port = procs.free_port()
        d = make_app(root, c["key"], port, burn_ms=BURN_MS, workers=1)
        script = os.path.join(d, "hello.js")
        if c["mode"] == "auto":
            cfg = os.path.join(d, "cohort.toml")
            with open(cfg, "w") as f:
                f.write(f'[[apps]]\nname = "{c["key"]}"\nscript = "{script}"\nexec_mode = "cluster"\n'
                        f'instances = {{ min = 1, max = "max", scale_down_after = "{SCALE_DOWN_AFTER_S}s" }}\n')
            p = m.cmd("start", cfg)
            reg.remember(m.daemon_pid())
            if p.returncode != 0:
                raise NotYet("start with instances = { min, max } failed: " + (p.stderr or p.stdout).strip()[:160])
            c["base"] = 1
        else:
            m.start(script, c["key"], c["mode"], extra=("--exec-mode", "cluster"))
            c["base"] = 1 if c["mode"] == "1" else cpus
        c.update(port=port, dir=d)
        if not (procs.wait_http(port, 20) and procs.poll(lambda: len(live_workers(d)) == c["base"], 15)):
            raise NotYet(f"{c['label']}: {c['base']} workers never served on port {port}")

    start_configs(reg, configs, starter)
    live = [c for c in configs if c["status"] == "ok"]
    for c in live:
        c["rounds"] = []
    for r in range(P.rounds):
        for c in live:
            # Each round starts from the config's resting count (autoscaled: back at min).
            if not procs.poll(lambda: len(live_workers(c["dir"])) == c["base"], 40, 0.2):
                log(f"  autoscale {c['label']}: not back at {c['base']} workers before round {r + 1}")
            for w in live_workers(c["dir"]):
                reg.remember(w)
            stop, light, samples = threading.Event(), {"ok": 0, "failed": 0}, []
            t0 = time.monotonic()
            threads = [threading.Thread(target=_light_client, args=(c["port"], stop, light), daemon=True),
                       threading.Thread(target=_sampler, args=(c["dir"], t0, stop, samples), daemon=True)]
            for t in threads:
                t.start()
            time.sleep(1.0)                                   # light
            step = round(time.monotonic() - t0, 2)
            res = wrk.run(c["port"], heavy_s, conns=HEAVY_CONNS, path="/burn")  # heavy
            res.pop("raw", None)
            end = round(time.monotonic() - t0, 2)
            # Light again: for the autoscaled app, until it is back at one worker (bounded).
            tail = SCALE_DOWN_AFTER_S + 6 if c["mode"] == "auto" else 1
            procs.poll(lambda: c["mode"] == "auto" and len(live_workers(c["dir"])) == 1
                       and time.monotonic() - t0 > end + 0.5, tail, 0.1)
            stop.set()
            for t in threads:
                t.join(timeout=10)
            for w in live_workers(c["dir"]):
                reg.remember(w)
            up = next((t for t, n in samples if t >= step and n >= 2), None)
            down = next((t for t, n in samples if t >= end and n == 1), None)
            res.update(
                step_s=step,
                scale_up_s=round(up - step, 2) if up is not None and c["mode"] == "auto" else None,
                back_to_min_s=round(down - end, 2) if down is not None and c["mode"] == "auto" else None,
                light_ok=light["ok"], light_failed=light["failed"],
                failed_all=res["failed"] + light["failed"],
                workers=samples,
                peak=max((n for _, n in samples), default=None),
            )
            c["rounds"].append(res)
            log(f"  autoscale r{r + 1} {c['label']}: p99 {res['p99_ms']} ms, {res['rps']} req/s, failed "
                f"{res['failed_all']}, up after {res['scale_up_s']} s, back to 1 after {res['back_to_min_s']} s, "
                f"workers {samples}")
    for c in configs:
        rs = c.get("rounds", [])
        c["median"] = {k: _med([x[k] for x in rs]) for k in
                       ("p99_ms", "p50_ms", "rps", "failed_all", "scale_up_s", "back_to_min_s", "peak")} if rs else {}
        if rs:
            c["median"]["workers_last_round"] = rs[-1]["workers"]
        for k in ("dir", "port"):
            c.pop(k, None)
    auto = next((c for c in configs if c["key"] == "cohort-auto"), {}).get("median", {})
    fixed1 = next((c for c in configs if c["key"] == "cohort-1"), {}).get("median", {})
    fixedmax = next((c for c in configs if c["key"] == "cohort-max"), {}).get("median", {})

    def r(a, b, k):
        return round(a[k] / b[k], 3) if a.get(k) and b.get(k) else None
    return {"configs": configs,
            "ratio_p99_vs_1": r(auto, fixed1, "p99_ms"),
            "ratio_p99_vs_max": r(auto, fixedmax, "p99_ms"),
            "command": f"light: 1 keep-alive client at {LIGHT_RPS} req/s throughout; heavy step at t=1s: "
                       f"wrk -t1 -c{HEAVY_CONNS} -d{heavy_s}s --latency on /burn ({BURN_MS} ms of CPU per request); "
                       f"autoscaled app: instances = {{ min = 1, max = \"max\", scale_down_after = "
                       f"\"{SCALE_DOWN_AFTER_S}s\" }}, other knobs default"}


def section(s, charts, fmt, row, rows, bar_chart, error):
    """RESULTS.md lines for the autoscale scenario."""
    L = ["## 7. Autoscaling under a step load", "", f"`{s.get('command', '')}`. p99 and req/s are wrk's over "
         "the heavy step (the autoscaled app starts it with one worker); failed counts wrk's errors and the light "
         "client's; scale up = step to a second serving worker; back to 1 = end of the step to one worker.", ""]
    L += error
    L += ["| config | p99 ms (step) | p50 ms | req/s (step) | failed | scale up after (s) | back to 1 after (s) "
          "| peak workers | workers over time, last round (s: count) |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in s["configs"]:
        md = c.get("median", {})
        timeline = ", ".join(f"{t}: {n}" for t, n in md.get("workers_last_round", [])) or "—"
        L.append(row(c, [fmt(md.get("p99_ms"), 2), fmt(md.get("p50_ms"), 2), fmt(md.get("rps")),
                         fmt(md.get("failed_all")), fmt(md.get("scale_up_s"), 2), fmt(md.get("back_to_min_s"), 2),
                         fmt(md.get("peak")), timeline]))
    L += ["", f"**autoscaled / fixed -i 1 (p99 during the step): {fmt(s.get('ratio_p99_vs_1'), 3) if s.get('ratio_p99_vs_1') else 'not yet'}; "
          f"autoscaled / fixed -i max: {fmt(s.get('ratio_p99_vs_max'), 3) if s.get('ratio_p99_vs_max') else 'not yet'}**",
          "", "![autoscale p99](charts/autoscale_p99.svg)", ""]
    bar_chart(os.path.join(charts, "autoscale_p99.svg"), "p99 during a step load (5 ms CPU per request)", "ms",
              rows(s["configs"], "p99_ms"), True)
    return L
