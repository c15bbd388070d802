"""The things being compared: plain node, Node cluster, PM2, cohort, NGINX, HAProxy.

Each target knows how to start itself inside a scenario's run directory and how to find its worker PIDs
(through the stats files hello.js writes). A cohort target that the binary can't run yet raises NotYet,
which the tables show as "not yet" instead of failing the run.
"""
import glob
import json
import os
import shutil
import subprocess
import time

import procs

APPS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "apps")


class NotYet(Exception):
    """The compared tool can't do this (yet): shown as 'not yet: <reason>' in the tables."""


class Skip(Exception):
    """An anchor tool is missing on this machine: shown as 'skipped: <reason>'."""


def make_app(root, name, port=None, **cfg):
    """A directory with the bench apps and a bench.json holding this instance's settings."""
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "stats"), exist_ok=True)
    for f in ("hello.js", "primary.js", "logger.js", "idle.js"):
        shutil.copy(os.path.join(APPS, f), d)
    cfg.update(port=port, stats=os.path.join(d, "stats"))
    with open(os.path.join(d, "bench.json"), "w") as f:
        json.dump(cfg, f)
    return d


def stats_counts(app_dir):
    out = {}
    sd = os.path.join(app_dir, "stats")
    for name in os.listdir(sd):
        try:
            out[int(name)] = int(procs.read_file(os.path.join(sd, name)) or 0)
        except ValueError:
            continue
    return out


def live_workers(app_dir):
    return sorted(p for p in stats_counts(app_dir) if procs.alive(p))


def _first_line(s):
    """The most telling line of an error output: the first ALERT/error line, else the first line."""
    lines = [x for x in (s or "").strip().splitlines() if x.strip()]
    for x in lines:
        if "ALERT" in x or "error" in x.lower() or "emerg" in x:
            return x.strip()[:160]
    return lines[0].strip()[:160] if lines else ""


class _Manager:
    """What PM2 and cohort share: the same start/reload/ls/delete verbs. Subclasses set `bin`, `reg`,
    `label` and `unavailable` (the exception that marks their column as not measurable)."""

    def start(self, script, name, instances=None, extra=()):
        a = ["start", script, "--name", name]
        if instances:
            a += ["-i", str(instances)]
        p = self.cmd(*a, *extra)
        self.reg.remember(self.daemon_pid())
        if p.returncode != 0:
            raise self.unavailable(f"{self.label} start failed: " + _first_line(p.stderr or p.stdout))

    def reload_argv(self, name):
        return [self.bin, "reload", name]

    def ls_argv(self):
        return [self.bin, "ls"]

    def delete(self, name):
        self.cmd("delete", name)


class PM2(_Manager):
    label, unavailable = "pm2", Skip

    def __init__(self, reg, home):
        self.bin = os.environ.get("PM2_BIN", "")
        if not self.bin or not os.access(self.bin, os.X_OK):
            raise Skip("pm2 not installed (bench/run installs it into bench/.tools)")
        self.reg, self.home = reg, home
        os.makedirs(home, exist_ok=True)
        self.env = dict(os.environ, PM2_HOME=home)
        reg.teardowns.append(self.kill)

    def cmd(self, *args, timeout=90):
        return subprocess.run([self.bin, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def daemon_pid(self):
        try:
            return int(procs.read_file(os.path.join(self.home, "pm2.pid")).strip())
        except ValueError:
            return None

    def ensure_daemon(self):
        self.cmd("ping")
        pid = procs.poll(self.daemon_pid, 15)
        self.reg.remember(pid)
        return pid

    def jlist(self):
        out = self.cmd("jlist").stdout
        try:
            return json.loads(out[out.index("["):])
        except ValueError:
            return []

    def online(self):
        return sum(1 for x in self.jlist() if x.get("pm2_env", {}).get("status") == "online")

    def log_glob(self, name):
        return os.path.join(self.home, "logs", f"{name}-out*.log")

    def kill(self):
        pid = self.daemon_pid()
        self.reg.remember(pid)
        self.cmd("kill", timeout=30)


_help_cache = {}


def cohort_commands(binary):
    """Subcommands `cohort --help` lists (empty set if there is no usable binary)."""
    if binary in _help_cache:
        return _help_cache[binary]
    cmds = set()
    if binary and os.access(binary, os.X_OK):
        try:
            out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        section = False
        for line in out.splitlines():
            if line.strip().lower().startswith("commands:"):
                section = True
                continue
            if section:
                if not line.startswith("  "):
                    if line.strip():
                        section = False
                    continue
                cmds.add(line.split()[0])
    _help_cache[binary] = cmds
    return cmds


class Cohort(_Manager):
    label, unavailable = "cohort", NotYet

    def __init__(self, reg, home, need=("start",)):
        self.bin = os.environ.get("COHORT_BIN", "")
        if not self.bin or not os.access(self.bin, os.X_OK):
            raise NotYet("no cohort binary (cargo build --release failed?)")
        cmds = cohort_commands(self.bin)
        for n in need:
            if n not in cmds:
                raise NotYet(f"no `cohort {n}`")
        self.reg, self.home = reg, home
        os.makedirs(home, exist_ok=True)
        self.env = dict(os.environ, COHORT_HOME=home)
        reg.teardowns.append(self.kill)

    def cmd(self, *args, timeout=90):
        try:
            return subprocess.run([self.bin, *args], env=self.env, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise NotYet(f"`cohort {args[0]}` did not return within {timeout}s")

    def daemon_pid(self):
        try:
            pid = int(procs.read_file(os.path.join(self.home, "daemon.pid")).strip())
            if procs.alive(pid):
                return pid
        except ValueError:
            pass
        return procs.pid_listening_on_unix(os.path.join(self.home, "cohort.sock"))

    def ensure_daemon(self):
        p = self.cmd("ls")
        if p.returncode != 0:
            raise NotYet("cohort ls failed: " + _first_line(p.stderr or p.stdout))
        pid = procs.poll(self.daemon_pid, 10)
        if not pid:
            raise NotYet("cohort daemon pid not found (cohort ping / cohort.sock)")
        self.reg.remember(pid)
        return pid

    def jlist(self):
        p = self.cmd("ls", "--json")
        try:
            return json.loads(p.stdout)
        except ValueError:
            return []

    def online(self):
        return sum(1 for x in self.jlist() if x.get("status") == "online")

    def log_glob(self, name):
        return os.path.join(self.home, "logs", f"{name}-*out*.log")

    def kill(self):
        self.reg.remember(procs.pid_listening_on_unix(os.path.join(self.home, "cohort.sock")))
        self.cmd("kill", timeout=30)


class Cluster:
    """A hello-world service on one port, run by one of the tools. `.workers()` lists live worker pids."""

    def __init__(self, reg, root, key, label, kind, instances=2, drain=False, refork=True):
        self.reg, self.key, self.label, self.kind = reg, key, label, kind
        self.port = procs.free_port()
        self.dir = make_app(root, key, self.port, drain=drain, workers=instances,
                            policy="none" if kind == "node-none" else "rr", refork=refork)
        self.instances = instances
        self.mgr = None
        self.name = key

    def start(self, mgr=None):
        script = os.path.join(self.dir, "hello.js")
        if self.kind == "node":
            p = self.reg.spawn(["node", script])
        elif self.kind in ("node-rr", "node-none"):
            env = dict(os.environ, NODE_CLUSTER_SCHED_POLICY="none" if self.kind == "node-none" else "rr")
            p = self.reg.spawn(["node", os.path.join(self.dir, "primary.js")], env=env)
        else:
            self.mgr, p = mgr, None
            mgr.start(script, self.name, self.instances)
        want = 1 if self.kind == "node" else self.instances
        ok = procs.wait_http(self.port, 20, p) and procs.poll(lambda: len(self.workers()) >= want, 10)
        if not ok:
            if self.kind == "cohort":
                modes = {str(x.get("mode")) for x in mgr.jlist() if x.get("name") == self.name}
                raise NotYet(f"port {self.port} never served {want} workers after `cohort start -i {want}`"
                             + (f" (ls --json mode: {'/'.join(sorted(modes))})" if modes else ""))
            raise Skip(f"{self.label} did not come up on port {self.port}")
        # Stable: the same `want` workers a second later (not one serving and one crash-looping).
        first = set(self.workers())
        time.sleep(1.0)
        second = set(self.workers())
        for w in first | second:
            self.reg.remember(w)
        if self.kind == "cohort":
            modes = {x.get("mode") for x in mgr.jlist() if x.get("name") == self.name}
            if modes and modes != {"cluster"}:
                raise NotYet(f"`cohort start -i {want}` ran in {'/'.join(sorted(map(str, modes)))} mode, "
                             "not cluster mode")
        if first != second or len(second) != want:
            msg = f"{self.label}: workers not stable ({len(first)} then {len(second)} live, {want} wanted)"
            raise NotYet(msg) if self.kind == "cohort" else Skip(msg)

    def workers(self):
        return live_workers(self.dir)

    def counts(self):
        return stats_counts(self.dir)

    def settle(self, want=None, deadline=20):
        """Wait until exactly `want` workers are alive and the port answers."""
        want = want or (1 if self.kind == "node" else self.instances)
        ok = procs.poll(lambda: len(self.workers()) == want, deadline, 0.1)
        ok = ok and procs.wait_http(self.port, 5)
        for w in self.workers():
            self.reg.remember(w)
        return bool(ok)


def log_file(mgr, name):
    files = sorted(glob.glob(mgr.log_glob(name)))
    return files[0] if files else None


def nginx_bin():
    for p in ("/usr/sbin/nginx", shutil.which("nginx")):
        if p and os.access(p, os.X_OK):
            return p
    return None


def haproxy_bin():
    for p in ("/usr/sbin/haproxy", shutil.which("haproxy")):
        if p and os.access(p, os.X_OK):
            return p
    return None


def start_nginx(reg, root, key, port, backends, workers):
    exe = nginx_bin()
    if not exe:
        raise Skip("nginx not installed (bench/run apt-get installs it when root)")
    d = os.path.join(root, key)
    os.makedirs(d, exist_ok=True)
    ups = "\n".join(f"    server 127.0.0.1:{b};" for b in backends)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = f"""{user}worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream backends {{
{ups}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    p = reg.spawn([exe, "-p", d, "-c", path], log=os.path.join(d, "stderr.log"))
    if not procs.wait_http(port, 10, p):
        raise Skip("nginx did not start: " + _first_line(procs.read_file(os.path.join(d, "stderr.log"))))
    return p.pid


def start_haproxy(reg, root, key, port, backends, threads):
    exe = haproxy_bin()
    if not exe:
        raise Skip("haproxy not installed (bench/run apt-get installs it when root)")
    d = os.path.join(root, key)
    os.makedirs(d, exist_ok=True)
    servers = "\n".join(f"  server s{i} 127.0.0.1:{b}" for i, b in enumerate(backends))
    conf = f"""global
  nbthread {threads}
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  balance roundrobin
  http-reuse always
{servers}
"""
    path = os.path.join(d, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(conf)
    p = reg.spawn([exe, "-db", "-f", path], log=os.path.join(d, "stderr.log"))
    if not procs.wait_http(port, 10, p):
        raise Skip("haproxy did not start: " + _first_line(procs.read_file(os.path.join(d, "stderr.log"))))
    return p.pid


def start_cohort_balancer(reg, root, key, port, backends, extra=(), binary=None):
    binary = binary or os.environ.get("COHORT_BIN", "")
    if not binary or not os.access(binary, os.X_OK):
        raise NotYet("no cohort binary")
    if "balance" not in cohort_commands(binary):
        raise NotYet("no `cohort balance`")
    d = os.path.join(root, key)
    os.makedirs(d, exist_ok=True)
    # Access logs are off for every proxy in this scenario (NGINX: access_log off; HAProxy: no log).
    argv = [binary, "balance", "--listen", f"127.0.0.1:{port}", "--no-access-log"]
    for b in backends:
        argv += ["--upstream", f"127.0.0.1:{b}"]
    argv += list(extra)
    log = os.path.join(d, "stderr.log")
    p = reg.spawn(argv, env=dict(os.environ, COHORT_HOME=os.path.join(d, "home")), log=log)
    if not procs.wait_http(port, 10, p):
        time.sleep(0.1)
        raise NotYet("cohort balance: " + (_first_line(procs.read_file(log)) or "did not serve"))
    return p.pid
