#!/usr/bin/env python3
"""The portcullis benchmark driver (stdlib only). Run it through `bash bench/run.sh`,
which installs the packages and builds the binaries first; see bench/README.md.

Starts, on loopback only: the upstream (nginx, static page), nginx as a plain reverse
proxy, Caddy as a plain reverse proxy, the test provider, Apache + mod_auth_openidc,
portcullis, and a second portcullis with the Redis session store (and its redis-server);
logs in once at each authenticating proxy; checks that each contender returns
the upstream page; then measures them interleaved with wrk, and prints one Markdown table,
the ratios and a PASS/MISS line per target of issue 4. Every process it starts is stopped
at the end, whatever happens.
"""

import datetime
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import login as login_client  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def env_int(name, default):
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def env_flag(name, default):
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in ("1", "true", "yes", "on")


DURATION = os.environ.get("BENCH_DURATION", "10s")
WARMUP = os.environ.get("BENCH_WARMUP", "1s")
ROUNDS = env_int("BENCH_ROUNDS", 3)
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "32 256").split()]
LOGINS = env_int("BENCH_LOGINS", 200)
STREAM_MIB = env_int("BENCH_STREAM_MIB", 1024)
RUN_STREAM = env_flag("BENCH_STREAM", True)
RUN_SESSION_MEMORY = env_flag("BENCH_SESSION_MEMORY", True)
RUN_CRITERION = env_flag("BENCH_CRITERION", True)
IDLE_CONNECTIONS = env_int("BENCH_IDLE_CONNECTIONS", 1000)
# How long the idle connections rest before RSS is read: a browser's pause between clicks
# (portcullis gives a quiet connection's upstream connection to its shared pool after 1 s;
# nginx and Caddy give theirs back at once).
IDLE_PAUSE = 2.0
KEEP_TMP = env_flag("BENCH_KEEP_TMP", False)
PERF = env_flag("BENCH_PERF", False)
PORTCULLIS_BIN = os.environ.get("PORTCULLIS_BIN", os.path.join(ROOT, "target", "release", "portcullis"))
# examples/bare_proxy.rs: hyper's server and hyper-util's pooled client forwarding every
# request, no authentication: what portcullis' own stack costs before portcullis adds anything.
BARE_BIN = os.path.join(ROOT, "target", "release", "examples", "bare_proxy")
# Other portcullis binaries measured as extra rows in the same run (A/B of a change).
COMPARE_BINS = os.environ.get("BENCH_COMPARE", "").split()
# The upstream's page under its file name: public at portcullis (policy.public_paths), and
# measured without a cookie in the "portcullis public path" row.
PUBLIC_PATH = "/index.html"

# The classic nginx welcome page: the "small static body" of the issue (612 bytes).
WELCOME = """<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
    body {
        width: 35em;
        margin: 0 auto;
        font-family: Tahoma, Verdana, Arial, sans-serif;
    }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# processes


class Processes:
    """Every process this run starts, each in its own process group, stopped at the end."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.started = []  # (name, Popen)

    def start(self, name, argv, env=None, cwd=None, stdout=None):
        logfile = open(os.path.join(self.tmp, f"{name}.log"), "wb")
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else logfile,
            stderr=logfile,
            start_new_session=True,
        )
        self.started.append((name, proc))
        return proc

    def stop_all(self):
        for name, proc in reversed(self.started):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 8
        for name, proc in reversed(self.started):
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        # Workers that outlived their parent are still in its process group.
        for name, proc in self.started:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.started = []

    def log_tail(self, name, lines=20):
        try:
            with open(os.path.join(self.tmp, f"{name}.log"), "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def http_get(url, headers=None, timeout=5):
    """(status, headers, body) of a GET to a loopback URL; the Host header keeps `localhost`."""
    parts = re.match(r"http://([^/:]+):(\d+)(/.*)?$", url)
    host, port, path = parts.group(1), int(parts.group(2)), parts.group(3) or "/"
    conn = http.client.HTTPConnection("127.0.0.1" if host == "localhost" else host, port, timeout=timeout)
    hdrs = {"Host": f"{host}:{port}", "Accept-Encoding": "identity"}
    if headers:
        hdrs.update(headers)
    try:
        conn.request("GET", path, headers=hdrs)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def redis_ping(port):
    """True when a redis-server answers PING on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def wait_until(what, check, proc, procs, name, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}:\n{procs.log_tail(name)}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} not ready after {timeout}s:\n{procs.log_tail(name)}")


# ---------------------------------------------------------------------------
# /proc


def children_map():
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(rest[1]), []).append(int(entry))
    return kids


def tree(pid):
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_times(pid):
    """(user, system) seconds of the process tree under `pid`, plus the root's reaped
    children, so a worker that exits between two readings is still counted."""
    user = system = 0
    for i, p in enumerate(tree(pid)):
        try:
            rest = proc_stat(p)
        except OSError:
            continue
        user += int(rest[11])
        system += int(rest[12])
        if i == 0:
            user += int(rest[13])
            system += int(rest[14])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pid):
    return sum(cpu_times(pid))


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid):
    """VmRSS summed over the process tree (master + workers for nginx and Apache)."""
    return sum(status_kib(p, "VmRSS") for p in tree(pid)) * 1024


def hwm_bytes(pid):
    return status_kib(pid, "VmHWM") * 1024


def system_busy_seconds():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


class RssSampler:
    """Peak of the summed tree RSS of some processes, sampled every 50 ms in a thread."""

    def __init__(self, pids):
        self.pids = pids
        self.peak = {pid: 0 for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        trees, refreshed = {}, 0.0
        while not self._stop.is_set():
            if time.time() - refreshed > 1.0:  # scanning /proc for children costs more than reading status
                trees = {pid: tree(pid) for pid in self.pids}
                refreshed = time.time()
            for pid in self.pids:
                rss = sum(status_kib(p, "VmRSS") for p in trees[pid]) * 1024
                self.peak[pid] = max(self.peak[pid], rss)
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------
# wrk


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_latency(text):
    match = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_wrk(out):
    result = {"errors": 0, "non2xx3xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        result[f"p{pct}"] = parse_latency(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", out)
    if m:
        result["requests"] = int(m.group(1))
        result["bytes"] = float(m.group(4)) * BYTES.get(m.group(5), 1)
    else:
        result["requests"], result["bytes"] = 0, 0.0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        result["errors"] = sum(int(x) for x in m.groups())
        result["error_detail"] = m.group(0)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        result["non2xx3xx"] = int(m.group(1))
    return result


def run_wrk(url, host, cookie, connections, duration):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "--latency", "-H", f"Host: {host}"]
    if cookie:
        argv += ["-H", f"Cookie: {cookie}"]
    argv.append(url)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{out}")
    result = parse_wrk(out)
    result["wrk_cpu"] = rusage.ru_utime + rusage.ru_stime
    result["raw"] = out
    return result


# ---------------------------------------------------------------------------
# configuration files


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def nginx_common(tmp, name):
    temp = os.path.join(tmp, f"{name}-temp")
    os.makedirs(temp, exist_ok=True)
    return f"""
worker_processes auto;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
"""


def nginx_http_common(tmp, name):
    temp = os.path.join(tmp, f"{name}-temp")
    return f"""
    access_log off;
    client_body_temp_path {temp}/client;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 65;
"""


def upstream_conf(tmp, port, www):
    return nginx_common(tmp, "upstream") + f"""
http {{
{nginx_http_common(tmp, "upstream")}
    sendfile on;
    tcp_nopush on;
    types {{ text/html html; application/octet-stream bin; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        index index.html;
    }}
}}
"""


def nginx_proxy_conf(tmp, port, upstream_port):
    return nginx_common(tmp, "nginx-proxy") + f"""
http {{
{nginx_http_common(tmp, "nginx-proxy")}
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 512;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # large bodies: stream them (no temporary file) through 64 KiB buffers; with
            # the defaults (8 x 4 KiB) nginx reaches about half of this
            proxy_max_temp_file_size 0;
            proxy_buffer_size 64k;
            proxy_buffers 16 64k;
            proxy_busy_buffers_size 128k;
        }}
    }}
}}
"""


def caddyfile(tmp, port, upstream_port):
    return f"""{{
    admin off
    auto_https off
    storage file_system {tmp}/caddy-data
}}

http://:{port} {{
    bind 127.0.0.1
    reverse_proxy 127.0.0.1:{upstream_port} {{
        transport http {{
            keepalive_idle_conns_per_host 512
        }}
    }}
}}
"""


def apache_conf(tmp, port, upstream_port, issuer):
    mods = "/usr/lib/apache2/modules"
    run = os.path.join(tmp, "apache-run")
    os.makedirs(run, exist_ok=True)
    os.chmod(run, 0o777)
    return f"""ServerRoot /etc/apache2
DefaultRuntimeDir {run}
PidFile {run}/apache2.pid
ServerName localhost
Listen 127.0.0.1:{port}
User www-data
Group www-data
ErrorLog {tmp}/apache-error.log
LogLevel warn

LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authn_core_module {mods}/mod_authn_core.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule authz_user_module {mods}/mod_authz_user.so
LoadModule proxy_module {mods}/mod_proxy.so
LoadModule proxy_http_module {mods}/mod_proxy_http.so
LoadModule auth_openidc_module {mods}/mod_auth_openidc.so

# Sized for 256 busy connections from the start (Debian's defaults, 2 x 25 threads and
# at most 150, refuse connections while Apache grows under the 256-connection load)
StartServers 6
ServerLimit 8
ThreadLimit 64
ThreadsPerChild 64
MaxRequestWorkers 512
MinSpareThreads 64
MaxSpareThreads 512
MaxConnectionsPerChild 0
# Idle keep-alive connections wait without a thread (the event MPM); a process takes up to
# ThreadsPerChild + factor x its idle threads, so that the idle-connection measurement's
# 2,000 fit (the default factor 2 stops at about 1,150 here)
AsyncRequestWorkerFactor 8
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 65

OIDCProviderMetadataURL {issuer}/.well-known/openid-configuration
OIDCClientID Express.js
OIDCClientSecret insecure_secret
OIDCProviderTokenEndpointAuth client_secret_basic
OIDCRedirectURI http://localhost:{port}/oauth2callback
OIDCCryptoPassphrase {secrets.token_urlsafe(32)}
OIDCScope "openid profile email groups"
OIDCPKCEMethod S256
OIDCRemoteUserClaim preferred_username
OIDCSessionInactivityTimeout 3600

<Location />
    AuthType openid-connect
    Require valid-user
    ProxyPass http://127.0.0.1:{upstream_port}/ keepalive=On
</Location>
"""


# ---------------------------------------------------------------------------
# the run


class Contender:
    def __init__(self, key, label, url, proc=None, cookie=None, authenticated=False, helper=None):
        self.key = key
        # A process the contender needs and whose CPU is reported beside its own (redis-server).
        self.helper = helper
        self.helper_cpu = 0.0
        self.label = label
        self.url = url
        self.host = re.match(r"http://[^/]+", url).group(0)[len("http://"):].replace("127.0.0.1", "localhost")
        self.wrk_url = url.replace("localhost", "127.0.0.1")
        self.proc = proc
        self.cookie = cookie
        self.authenticated = authenticated
        self.runs = {c: [] for c in CONNECTIONS}
        self.cpu = 0.0
        self.cpu_user = 0.0
        self.requests = 0
        self.rss_idle = 0
        self.rss_peak = 0
        self.rss_peak_by_conn = {c: 0 for c in CONNECTIONS}
        self.expected_bytes = 0
        self.warnings = []

    def best(self, conns):
        """The best figure of the rounds, each on its own: the highest req/s and the
        lowest p50 and p99, the least disturbed measurement of each (a round of the most
        requests can still hold a latency spike from a moment's other load)."""
        runs = self.runs.get(conns) or []
        if not runs:
            return None
        return {
            "rps": max(r["rps"] for r in runs),
            "p50": min(r["p50"] for r in runs),
            "p99": min(r["p99"] for r in runs),
        }


def verify(contender, body):
    headers = {"Cookie": contender.cookie} if contender.cookie else {}
    status, resp_headers, data = http_get(contender.url, headers)
    if status != 200 or data != body:
        raise SystemExit(
            f"{contender.label}: expected 200 and the upstream page, got {status} "
            f"({len(data)} bytes){' with the session cookie' if contender.cookie else ''}"
        )
    # Size of a whole response (status line + headers + body), to check wrk's byte count.
    head = 17 + sum(len(k) + len(v) + 4 for k, v in resp_headers.items()) + 2
    contender.expected_bytes = head + len(data)
    if contender.authenticated:
        status, _, _ = http_get(contender.url, {"Accept": "text/html"})
        if status != 302:
            raise SystemExit(f"{contender.label}: expected 302 without a session, got {status}")
        log(f"{contender.label}: 200 + upstream page with the session cookie, 302 without it")
    else:
        log(f"{contender.label}: 200 + upstream page")


def fmt_rps(v):
    return f"{v:,.0f}"


def fmt_ms(v):
    if v != v:  # NaN
        return "?"
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"


def fmt_mib(b):
    return f"{b / MIB:.1f} MiB"


def machine_description():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, Linux {platform.release()}"


def versions():
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    modver = first_line(["dpkg-query", "-W", "-f=${Version}", "libapache2-mod-auth-openidc"])
    commit = first_line(["git", "-C", ROOT, "describe", "--always", "--dirty"])
    return {
        "nginx": first_line(["nginx", "-v"]).replace("nginx version: nginx/", ""),
        "caddy": first_line(["caddy", "version"]),
        "apache": first_line(["apache2", "-v"]).replace("Server version: ", ""),
        "mod_auth_openidc": modver,
        "wrk": first_line(["wrk", "-v"]).split(" [")[0],
        "redis": first_line(["redis-server", "--version"]).split(" sha=")[0],
        "portcullis": commit,
    }


def run_session_memory():
    """Runs the session-memory bench binary (built by run.sh) and parses its key=value lines."""
    log("memory per session: 100,000 Authelia-sized sessions into the memory store")
    out = subprocess.run(
        ["cargo", "bench", "--quiet", "--bench", "session_memory"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        log(f"session_memory failed:\n{out.stderr[-2000:]}")
        return None
    values = {"lines": []}
    for line in out.stdout.splitlines():
        values["lines"].append(line)
        m = re.match(r"(\w+)=([\d.]+)", line)
        if m:
            values[m.group(1)] = float(m.group(2))
    return values


def run_criterion():
    log("session store rates (criterion)")
    out = subprocess.run(
        ["cargo", "bench", "--quiet", "--bench", "session_store", "--", "--noplot"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        log(f"session_store failed:\n{out.stderr[-2000:]}")
        return None
    rates = {}
    name = None
    for line in out.stdout.splitlines():
        m = re.match(r"session_store/(\w+)", line.strip())
        if m:
            name = m.group(1)
        m = re.search(r"thrpt:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if m and name:
            value, unit = float(m.group(1)), m.group(2)
            scale = {"elem/s": 1, "Kelem/s": 1e3, "Melem/s": 1e6, "Gelem/s": 1e9}.get(unit, 1)
            rates[name] = value * scale
            name = None
    return rates


def stream_test(contenders, tmp):
    """Downloads the big file through each contender with curl; best of two."""
    results = {}
    for c in contenders:
        best = None
        peak_growth = 0
        for _ in range(2):
            before = rss_bytes(c.proc.pid)
            argv = [
                "curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download}",
                "-H", f"Host: {c.host}", c.wrk_url + "big.bin",
            ]
            if c.cookie:
                argv[1:1] = ["-H", f"Cookie: {c.cookie}"]
            with RssSampler([c.proc.pid]) as sampler:
                out = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout.split()
            code, size, speed = int(out[0]), int(out[1]), float(out[2])
            if code != 200 or size != STREAM_MIB * MIB:
                raise SystemExit(f"{c.label}: streaming got {code}, {size} bytes")
            peak_growth = max(peak_growth, sampler.peak[c.proc.pid] - before)
            best = max(best or 0, speed)
        results[c.key] = {"speed": best, "rss_growth": peak_growth}
        log(f"stream {STREAM_MIB} MiB via {c.label}: {best / MIB:,.0f} MiB/s, RSS +{fmt_mib(peak_growth)}")
    return results


def read_response(sock):
    """Reads one HTTP/1.1 response with a Content-Length body; returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    chunked = re.search(rb"(?im)^transfer-encoding:.*chunked", head)
    if not length and not chunked:
        raise ConnectionError("neither Content-Length nor chunked: " + head[:200].decode(errors="replace"))
    while (len(body) < int(length.group(1))) if length else not body.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return int(head.split(b" ", 2)[1])


def idle_connection_memory(contenders, n):
    """RSS growth per idle keep-alive connection: connections opened with one request each
    (so a proxy has dialed, and may keep, its upstream connections) and left open, n at a
    time, RSS read after a pause between clicks (IDLE_PAUSE). The first n use up heap the
    load before freed but the process kept (it would hide their cost); the growth from the
    second n is the measure."""
    results = {}
    for c in contenders:
        url = urllib.parse.urlsplit(c.wrk_url)
        head = f"GET {url.path or '/'} HTTP/1.1\r\nHost: {c.host}\r\n"
        if c.cookie:
            head += f"Cookie: {c.cookie}\r\n"
        request = (head + "\r\n").encode()
        socks, levels = [], []
        try:
            for _ in range(2):
                batch = []
                for _ in range(n):
                    sock = socket.create_connection(("127.0.0.1", url.port), timeout=10)
                    socks.append(sock)
                    sock.sendall(request)
                    batch.append(sock)
                statuses = {read_response(sock) for sock in batch}
                if statuses != {200}:
                    raise ConnectionError(f"answered {sorted(statuses)}, not 200")
                time.sleep(IDLE_PAUSE)
                levels.append(rss_bytes(c.proc.pid))
        except OSError as error:
            c.warnings.append(f"idle connections: {error} (after {len(socks)} connections)")
            continue
        finally:
            for sock in socks:
                sock.close()
        results[c.key] = (levels[1] - levels[0]) / n
        log(f"{2 * n} idle keep-alive connections at {c.label}: the second {n} +{fmt_mib(levels[1] - levels[0])}, {results[c.key] / 1024:.1f} KiB each")
    return results


def perf_profile(c, others, tmp, started_at):
    """`perf record` of portcullis during one extra c=32 run; the top of the report is saved."""
    if not shutil.which("perf"):
        log("BENCH_PERF=1 but perf is not installed (apt-get install linux-perf)")
        return
    # syscalls and context switches per request, portcullis vs nginx (no sampling overhead)
    events = [
        "raw_syscalls:sys_enter", "context-switches", "cpu-migrations",
        "syscalls:sys_enter_futex", "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_recvfrom",
        "syscalls:sys_enter_sendto", "syscalls:sys_enter_read", "syscalls:sys_enter_write",
        "syscalls:sys_enter_writev", "syscalls:sys_enter_readv", "syscalls:sys_enter_sched_yield",
    ]
    counts_text = []
    seconds = re.match(r"(\d+)", DURATION).group(1)
    for other in others + [c]:
        pids = ",".join(str(p) for p in tree(other.proc.pid))
        stat_out = os.path.join(tmp, f"perf-stat-{other.key}.txt")
        stat = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-o", stat_out, "-e", ",".join(events), "-p", pids, "--", "sleep", seconds],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(0.2)
        result = run_wrk(other.wrk_url, other.host, other.cookie, CONNECTIONS[0], DURATION)
        stat.wait()
        counts = {}
        with open(stat_out) as f:
            for line in f:
                fields = line.strip().split(",")
                if len(fields) > 2 and fields[0].replace(".", "").isdigit():
                    counts[fields[2]] = float(fields[0])
        req = max(1, result["requests"])
        per = ", ".join(f"{name.split(':')[-1].replace('sys_enter_', '')} {value / req:.2f}" for name, value in counts.items())
        counts_text.append(f"{other.label} (c={CONNECTIONS[0]}, {result['rps']:,.0f} req/s) per request: {per}")
        log(counts_text[-1])
    data = os.path.join(tmp, "perf.data")
    perf = subprocess.Popen(
        ["perf", "record", "-F", "1999", "-g", "-p", str(c.proc.pid), "-o", data, "--", "sleep", seconds],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.2)
    run_wrk(c.wrk_url, c.host, c.cookie, CONNECTIONS[0], DURATION)
    perf.wait()
    out_dir = os.path.join(ROOT, "target", "bench")
    os.makedirs(out_dir, exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    flat = subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.05"],
        capture_output=True, text=True,
    ).stdout
    by_dso = subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso", "-g", "none"],
        capture_output=True, text=True,
    ).stdout
    callers = subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--children", "--sort", "symbol", "-g", "none", "--percent-limit", "2"],
        capture_output=True, text=True,
    ).stdout
    crates = {}
    for line in flat.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*?)\s{2,}", line + "  ")
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
        if dso.startswith("[kernel"):
            group = "kernel"
        elif dso != "portcullis":
            group = dso
        else:
            sym = re.sub(r"^<", "", sym)
            group = re.split(r"::|<| as ", sym, maxsplit=1)[0] or sym
            if group in ("hyper", "hyper_util", "http", "tokio"):
                group = "::".join(sym.split("::")[:2])
        crates[group] = crates.get(group, 0.0) + pct
    by_crate = "\n".join(f"{pct:6.2f}%  {name}" for name, pct in sorted(crates.items(), key=lambda kv: -kv[1]))
    path = os.path.join(out_dir, f"perf-{stamp}.txt")
    write(path, "## syscalls and context switches per request\n" + "\n".join(counts_text) + "\n\n## by DSO\n" + by_dso + "\n## self time by crate/module (symbols >= 0.05%)\n" + by_crate + "\n" + "\n## self time by symbol\n" + flat + "\n## inclusive time by symbol\n" + callers)
    log(f"perf profile of portcullis at c={CONNECTIONS[0]} saved to {os.path.relpath(path, ROOT)}")


def login_cost(binaries, n, all_pids):
    """`n` logins at each portcullis in `binaries` (the measured one first, then any
    `BENCH_COMPARE` binaries); each one's own CPU time per login. The logins alternate
    between the binaries in batches of 20, so a host whose speed drifts moves them alike.
    Also the CPU the rest of the machine used meanwhile (not `all_pids`, not this
    script): a login's CPU time grows on a busy host, as every other figure does."""
    log(f"login cost: {n} logins at {len(binaries)} portcullis binar{'y' if len(binaries) == 1 else 'ies'} against the test provider")
    # one untimed login first (connection pools, JWKS cache, lazy statics)
    for c in binaries:
        login_client.login(c.url)
    cpu = {c.key: 0.0 for c in binaries}
    wall = {c.key: 0.0 for c in binaries}
    cookies = {c.key: [] for c in binaries}
    done = 0
    ours_before = sum(cpu_seconds(pid) for pid in all_pids) + sum(os.times()[:2])
    busy_before, started_all = system_busy_seconds(), time.time()
    with ThreadPoolExecutor(max_workers=2) as pool:
        while done < n:
            batch = min(20, n - done)
            for c in binaries:
                before = cpu_seconds(c.proc.pid)
                started = time.time()
                cookies[c.key] += pool.map(lambda _, url=c.url: login_client.login(url)[0], range(batch))
                wall[c.key] += time.time() - started
                cpu[c.key] += cpu_seconds(c.proc.pid) - before
            done += batch
    ours = sum(cpu_seconds(pid) for pid in all_pids) + sum(os.times()[:2]) - ours_before
    busy = system_busy_seconds() - busy_before
    other = max(0.0, busy - ours) / ((time.time() - started_all) * os.cpu_count())
    # every login must have produced a working session
    for c in binaries:
        for cookie in cookies[c.key][:: max(1, n // 10)]:
            status, _, _ = http_get(c.url, {"Cookie": cookie})
            if status != 200:
                raise SystemExit(f"a benchmark login at {c.label} did not give a working session ({status})")
    return {
        c.key: {"cpu_ms": cpu[c.key] * 1000 / n, "logins_per_s": n / wall[c.key], "n": n, "label": c.label, "other_load": other}
        for c in binaries
    }


def main():
    tmp = tempfile.mkdtemp(prefix="portcullis-bench-")
    procs = Processes(tmp)

    def on_signal(signum, _frame):
        raise SystemExit(f"interrupted by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started_at = datetime.datetime.now(datetime.timezone.utc)
    load_before = open("/proc/loadavg").read().split()[:3]
    try:
        report = run(tmp, procs, started_at, load_before)
    finally:
        procs.stop_all()
        if KEEP_TMP:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(report)
    out_dir = os.path.join(ROOT, "target", "bench")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"report-{started_at.strftime('%Y%m%dT%H%M%SZ')}.md")
    write(path, report + "\n")
    log(f"report saved to {os.path.relpath(path, ROOT)}")


def run(tmp, procs, started_at, load_before):
    session_memory = run_session_memory() if RUN_SESSION_MEMORY else None
    criterion = run_criterion() if RUN_CRITERION else None

    up_port, ngx_port, caddy_port, apache_port, pc_port, idp_port, redis_port, pcr_port, bare_port, *compare_ports = free_ports(
        9 + len(COMPARE_BINS)
    )

    # --- upstream: nginx with the welcome page and a sparse big file
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    write(os.path.join(www, "index.html"), WELCOME)
    body = WELCOME.encode()
    with open(os.path.join(www, "big.bin"), "wb") as f:
        f.truncate(STREAM_MIB * MIB)
    os.chmod(tmp, 0o755)
    conf = write(os.path.join(tmp, "upstream.conf"), upstream_conf(tmp, up_port, www))
    upstream = procs.start("upstream", ["nginx", "-c", conf, "-p", tmp, "-g", "daemon off;"])
    wait_until("upstream nginx", lambda: http_get(f"http://127.0.0.1:{up_port}/")[0] == 200, upstream, procs, "upstream")

    # --- nginx as a plain reverse proxy
    conf = write(os.path.join(tmp, "nginx-proxy.conf"), nginx_proxy_conf(tmp, ngx_port, up_port))
    nginx_proxy = procs.start("nginx-proxy", ["nginx", "-c", conf, "-p", tmp, "-g", "daemon off;"])

    # --- caddy as a plain reverse proxy
    conf = write(os.path.join(tmp, "Caddyfile"), caddyfile(tmp, caddy_port, up_port))
    caddy_env = dict(os.environ, HOME=tmp, XDG_DATA_HOME=f"{tmp}/xdg-data", XDG_CONFIG_HOME=f"{tmp}/xdg-config")
    caddy = procs.start("caddy", ["caddy", "run", "--config", conf, "--adapter", "caddyfile"], env=caddy_env)

    # --- the floor of portcullis' own stack: hyper + hyper-util forwarding, nothing else
    bare = procs.start(
        "bare",
        [BARE_BIN],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LISTEN_ADDR": f"127.0.0.1:{bare_port}",
             "UPSTREAM_URL": f"http://127.0.0.1:{up_port}"},
    )

    # --- the test provider
    idp_env = dict(
        os.environ,
        IDP_PORT=str(idp_port),
        IDP_REDIRECT_URIS=",".join(
            [f"http://localhost:{p}/callback" for p in [pc_port, pcr_port, *compare_ports]]
            + [f"http://localhost:{apache_port}/oauth2callback"]
        ),
        # mod_auth_openidc 2.4.12 has no PAR; portcullis still uses it (advertised by the provider)
        IDP_REQUIRE_PAR="0",
        IDP_QUIET="1",
    )
    idp = procs.start("idp", ["node", os.path.join(ROOT, "tests", "idp", "server.mjs")], env=idp_env)
    issuer = f"http://127.0.0.1:{idp_port}"
    wait_until(
        "test provider",
        lambda: http_get(f"{issuer}/.well-known/openid-configuration")[0] == 200,
        idp, procs, "idp",
    )

    # --- Apache + mod_auth_openidc
    conf = write(os.path.join(tmp, "apache.conf"), apache_conf(tmp, apache_port, up_port, issuer))
    apache_env = dict(os.environ, APACHE_RUN_DIR=f"{tmp}/apache-run", APACHE_LOG_DIR=tmp)
    apache = procs.start("apache", ["apache2", "-f", conf, "-DFOREGROUND"], env=apache_env)

    # --- Redis for the portcullis with the Redis session store: nothing on disk
    redis_dir = os.path.join(tmp, "redis")
    os.makedirs(redis_dir)
    redis = procs.start(
        "redis",
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", redis_dir, "--daemonize", "no"],
    )
    wait_until("redis-server", lambda: redis_ping(redis_port), redis, procs, "redis")

    # --- portcullis (and the binaries to compare it with)
    def start_portcullis(name, binary, port, extra_env=None):
        secret = subprocess.run([binary, "generate-secret"], capture_output=True, text=True, check=True).stdout.strip()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "APP_BASE_URL": f"http://localhost:{port}",
            "LISTEN_ADDR": f"127.0.0.1:{port}",
            "OIDC_ISSUER": issuer,
            "OIDC_CLIENT_ID": "Express.js",
            "OIDC_CLIENT_SECRET": "insecure_secret",
            "SESSION_ENCRYPTION_SECRET": secret,
            "UPSTREAM_URL": f"http://127.0.0.1:{up_port}",
            "RUST_LOG": "warn",
            # the login-cost measurement starts 200 logins in a few seconds from one
            # address; the default limits (20/s, burst 100; per client 60/min, burst 30)
            # would answer some of them with 503 or 429
            "PORTCULLIS_OIDC_LOGIN_RATE_PER_SECOND": "1000",
            "PORTCULLIS_OIDC_LOGIN_RATE_BURST": "1000",
            "PORTCULLIS_OIDC_LOGIN_RATE_PER_CLIENT_PER_MINUTE": "0",
            # the "public path" row: the same page under its own name, served without a
            # session; `/` (the authenticated row) stays protected
            "PORTCULLIS_POLICY_PUBLIC_PATHS": PUBLIC_PATH,
        }
        # allocator and runtime tuning, for experiments
        env.update({k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "MIMALLOC_", "GLIBC_TUNABLES", "TOKIO_"))})
        env.update(extra_env or {})
        return procs.start(name, [binary], env=env)

    portcullis = start_portcullis("portcullis", PORTCULLIS_BIN, pc_port)
    portcullis_redis = start_portcullis(
        "portcullis-redis",
        PORTCULLIS_BIN,
        pcr_port,
        {
            "PORTCULLIS_SESSION_STORE": "redis",
            "PORTCULLIS_SESSION_REDIS_URL": f"redis://127.0.0.1:{redis_port}",
        },
    )
    compared = [
        (f"compare{i + 1}", binary, port, start_portcullis(f"compare{i + 1}", binary, port))
        for i, (binary, port) in enumerate(zip(COMPARE_BINS, compare_ports))
    ]

    wait_until("nginx proxy", lambda: http_get(f"http://127.0.0.1:{ngx_port}/")[0] == 200, nginx_proxy, procs, "nginx-proxy")
    wait_until("bare hyper loop", lambda: http_get(f"http://127.0.0.1:{bare_port}/")[0] == 200, bare, procs, "bare")
    wait_until("caddy", lambda: http_get(f"http://127.0.0.1:{caddy_port}/")[0] == 200, caddy, procs, "caddy")
    wait_until("apache", lambda: http_get(f"http://localhost:{apache_port}/", {"Accept": "text/html"})[0] == 302, apache, procs, "apache")
    wait_until("portcullis", lambda: http_get(f"http://localhost:{pc_port}/.auth/readyz")[0] == 200, portcullis, procs, "portcullis")
    wait_until(
        "portcullis (redis store)",
        lambda: http_get(f"http://localhost:{pcr_port}/.auth/readyz")[0] == 200,
        portcullis_redis, procs, "portcullis-redis",
    )
    for key, binary, port, proc in compared:
        wait_until(binary, lambda port=port: http_get(f"http://localhost:{port}/.auth/readyz")[0] == 200, proc, procs, key)
    log("all servers up")

    contenders = [
        Contender("upstream", "upstream direct (nginx)", f"http://localhost:{up_port}/", upstream),
        Contender("nginx", "nginx proxy", f"http://localhost:{ngx_port}/", nginx_proxy),
        Contender("bare", "hyper bare loop, no auth", f"http://localhost:{bare_port}/", bare),
        Contender("caddy", "caddy proxy", f"http://localhost:{caddy_port}/", caddy),
        Contender("apache", "apache + mod_auth_openidc", f"http://localhost:{apache_port}/", apache, authenticated=True),
        Contender("portcullis", "portcullis authenticated", f"http://localhost:{pc_port}/", portcullis, authenticated=True),
        # the same process, a public path, no cookie: what the policy phase costs when it
        # lets a request through without the session phase
        Contender("portcullis_public", "portcullis public path", f"http://localhost:{pc_port}{PUBLIC_PATH}", portcullis),
        Contender(
            "portcullis-redis", "portcullis redis store", f"http://localhost:{pcr_port}/", portcullis_redis,
            authenticated=True, helper=redis,
        ),
    ] + [
        Contender(key, f"compare: {os.path.relpath(binary, ROOT) if binary.startswith(ROOT) else binary}", f"http://localhost:{port}/", proc, authenticated=True)
        for key, binary, port, proc in compared
    ]
    by_key = {c.key: c for c in contenders}

    for c in contenders:
        if c.authenticated:
            try:
                c.cookie, steps = login_client.login(c.url)
            except (login_client.LoginError, OSError) as error:
                raise SystemExit(f"login at {c.label} failed: {error}\n{procs.log_tail(c.key)}")
            log(f"logged in at {c.label} ({len(steps)} requests)")
        verify(c, body)

    time.sleep(1.0)
    for c in contenders:
        c.rss_idle = rss_bytes(c.proc.pid)

    # once each: two rows share the portcullis process
    all_pids = list(dict.fromkeys([c.proc.pid for c in contenders] + [idp.pid, redis.pid]))
    foreign = []
    total_runs = ROUNDS * len(CONNECTIONS) * len(contenders)
    n = 0
    log(f"measuring: {ROUNDS} round(s) x {CONNECTIONS} connections x {len(contenders)} contenders, {DURATION} each (+{WARMUP} warm-up)")
    # The two sides of each target ratio run back to back (nginx proxy, portcullis,
    # Apache), and every other round runs the order backwards: the speed of a shared
    # machine drifts over minutes, and this way the drift favours neither side.
    adjacent = ["upstream", "caddy", "bare", "nginx", "portcullis"]
    adjacent += [c.key for c in contenders if c.key.startswith("compare")]
    adjacent += ["apache", "portcullis_public", "portcullis-redis"]
    order = [by_key[k] for k in adjacent if k in by_key]
    order += [c for c in contenders if c not in order]
    for rnd in range(ROUNDS):
        for conns in CONNECTIONS:
            for c in order if rnd % 2 == 0 else order[::-1]:
                n += 1
                if WARMUP not in ("0", "0s", ""):
                    run_wrk(c.wrk_url, c.host, c.cookie, conns, WARMUP)
                user_before = cpu_times(c.proc.pid)[0]
                cpu_before = {pid: cpu_seconds(pid) for pid in all_pids}
                busy_before = system_busy_seconds()
                t0 = time.time()
                with RssSampler([c.proc.pid]) as sampler:
                    result = run_wrk(c.wrk_url, c.host, c.cookie, conns, DURATION)
                elapsed = time.time() - t0
                busy = system_busy_seconds() - busy_before
                cpu_after = {pid: cpu_seconds(pid) for pid in all_pids}
                c.cpu_user += cpu_times(c.proc.pid)[0] - user_before
                ours = sum(cpu_after[p] - cpu_before[p] for p in all_pids) + result["wrk_cpu"]
                other = max(0.0, busy - ours) / (elapsed * os.cpu_count())
                foreign.append(other)
                c.cpu += cpu_after[c.proc.pid] - cpu_before[c.proc.pid]
                if c.helper is not None:
                    c.helper_cpu += cpu_after[c.helper.pid] - cpu_before[c.helper.pid]
                c.requests += result["requests"]
                peak = max(sampler.peak[c.proc.pid], hwm_bytes(c.proc.pid) if len(tree(c.proc.pid)) == 1 else 0)
                c.rss_peak = max(c.rss_peak, peak)
                c.rss_peak_by_conn[conns] = max(c.rss_peak_by_conn[conns], sampler.peak[c.proc.pid])
                result["foreign"] = other
                write(os.path.join(tmp, f"wrk-{c.key}-c{conns}-r{rnd + 1}.txt"), result["raw"])
                c.runs[conns].append(result)
                if result["errors"] or result["non2xx3xx"]:
                    c.warnings.append(
                        f"c={conns}, round {rnd + 1}: {result.get('error_detail', 'no socket errors')}; "
                        f"{result['non2xx3xx']} non-2xx/3xx responses"
                    )
                per_response = result["bytes"] / max(1, result["requests"])
                if c.expected_bytes and per_response < 0.9 * c.expected_bytes:
                    c.warnings.append(
                        f"c={conns}: {per_response:.0f} bytes per response, expected ~{c.expected_bytes} (not the page?)"
                    )
                log(
                    f"[{n}/{total_runs}] {c.label:28s} c={conns:<3d} {fmt_rps(result['rps']):>8s} req/s  "
                    f"p50 {fmt_ms(result['p50'])}  p99 {fmt_ms(result['p99'])}  other load {other * 100:.0f}%  "
                    f"idle {max(0.0, 1 - busy / (elapsed * os.cpu_count())) * 100:.0f}%"
                )
            # the session must still be good after the load (and unauthenticated must not be)
            for c in contenders:
                verify(c, body)

    if PERF:
        perf_profile(
            by_key["portcullis"],
            [by_key["nginx"], by_key["caddy"]] + [c for c in contenders if c.key.startswith("compare")],
            tmp,
            started_at,
        )

    # After the throughput rounds (which RSS peak and CPU describe), for the proxies; the
    # public-path row shares portcullis' process.
    idle = (
        idle_connection_memory([c for c in contenders if c.key not in ("upstream", "portcullis_public")], IDLE_CONNECTIONS)
        if IDLE_CONNECTIONS > 0
        else {}
    )

    stream = None
    if RUN_STREAM:
        stream = stream_test([by_key["upstream"], by_key["nginx"], by_key["portcullis"]], tmp)

    logins = (
        login_cost([by_key["portcullis"]] + [c for c in contenders if c.key.startswith("compare")], LOGINS, all_pids)
        if LOGINS > 0
        else {}
    )
    for result in logins.values():
        log(
            f"login: {result['cpu_ms']:.2f} ms CPU per login at {result['label']} ({result['logins_per_s']:.0f} logins/s end to end, "
            f"other load {result['other_load'] * 100:.0f}%)"
        )
    login = logins.get("portcullis")
    login_compared = [result for key, result in logins.items() if key != "portcullis"]
    load_after = open("/proc/loadavg").read().split()[:3]
    return render(contenders, by_key, session_memory, criterion, stream, login, login_compared, foreign, idle, started_at, load_before, load_after)


def render(contenders, by_key, session_memory, criterion, stream, login, login_compared, foreign, idle, started_at, load_before, load_after):
    lines = []
    c_lo, c_hi = CONNECTIONS[0], CONNECTIONS[-1]
    v = versions()
    lines.append(f"### Benchmark, {started_at.strftime('%Y-%m-%d %H:%M UTC')}")
    lines.append("")
    lines.append(f"Machine: {machine_description()}; load average {' '.join(load_before)} before the run.")
    lines.append(
        f"Versions: portcullis {v['portcullis']}, nginx {v['nginx']}, Caddy {v['caddy']}, {v['apache']} + "
        f"mod_auth_openidc {v['mod_auth_openidc']}, {v['redis']}, {v['wrk']}."
    )
    lines.append(
        f"Command: `BENCH_DURATION={DURATION} BENCH_ROUNDS={ROUNDS} bash bench/run.sh` — `wrk -t1 -c<N> -d{DURATION} --latency`, "
        f"{ROUNDS} interleaved round(s) after a {WARMUP} warm-up each, the best of the rounds shown (highest req/s, "
        f"lowest p50 and p99); 612-byte page from nginx."
    )
    lines.append("")
    header = (
        f"| contender | req/s c={c_lo} | p50 | p99 | req/s c={c_hi} | p50 | p99 | CPU s/10k req | RSS idle | RSS peak |"
    )
    lines.append(header)
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in contenders:
        lo, hi = c.best(c_lo), c.best(c_hi)
        cells = [c.label]
        for r in (lo, hi):
            if r:
                cells += [fmt_rps(r["rps"]), fmt_ms(r["p50"]), fmt_ms(r["p99"])]
            else:
                cells += ["–", "–", "–"]
        cpu = c.cpu / c.requests * 10000 if c.requests else float("nan")
        user = c.cpu_user / c.requests * 10000 if c.requests else float("nan")
        cells += [f"{cpu:.3f} ({user:.2f} user)", fmt_mib(c.rss_idle), fmt_mib(c.rss_peak)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    worst = max(foreign) if foreign else 0
    mean = sum(foreign) / len(foreign) if foreign else 0
    note = (
        f"CPU used by other processes on the machine during the measurements: {mean * 100:.0f}% on average, "
        f"{worst * 100:.0f}% at worst (of all cores)."
    )
    if worst > 0.10:
        note += " **The machine was busy with other work: absolute numbers are disturbed; the ratios (same run, interleaved) hold better.**"
    lines.append(note)
    for c in contenders:
        if c.helper is not None and c.requests:
            lines.append(
                f"- {c.label}: CPU s/10k req is portcullis alone; redis-server used "
                f"{c.helper_cpu / c.requests * 10000:.3f} s/10k req more (one GETEX per request)."
            )
    if idle:
        per = ", ".join(f"{c.label} {idle[c.key] / 1024:.1f} KiB" for c in contenders if c.key in idle)
        lines.append(
            f"- Memory per idle keep-alive connection (one request each, left open; the RSS growth from "
            f"{IDLE_CONNECTIONS} to {2 * IDLE_CONNECTIONS} such connections / {IDLE_CONNECTIONS}, the proxy's upstream "
            f"connections included): {per}."
        )
    for c in contenders:
        for w in c.warnings:
            lines.append(f"- warning, {c.label}: {w}")
    lines.append("")

    pc, ngx, ap, cd = by_key["portcullis"], by_key["nginx"], by_key["apache"], by_key["caddy"]

    def ratio(a, b, conns, field="rps"):
        ra, rb = a.best(conns), b.best(conns)
        return ra[field] / rb[field] if ra and rb and rb[field] else float("nan")

    lines.append("Ratios:")
    for conns in CONNECTIONS:
        lines.append(
            f"- c={conns}: portcullis / nginx proxy = {ratio(pc, ngx, conns):.2f}×, "
            f"portcullis / mod_auth_openidc = {ratio(pc, ap, conns):.2f}×, "
            f"caddy / nginx proxy = {ratio(cd, ngx, conns):.2f}×"
        )
    bare = by_key["bare"]
    lines.append(
        "- hyper bare loop (no authentication) / nginx proxy: "
        + ", ".join(f"c={conns}: {ratio(bare, ngx, conns):.2f}×" for conns in CONNECTIONS)
        + "; portcullis authenticated / hyper bare loop: "
        + ", ".join(f"c={conns}: {ratio(pc, bare, conns):.2f}×" for conns in CONNECTIONS)
    )
    lines.append(f"- p99 at c={c_lo}: portcullis / nginx proxy = {ratio(pc, ngx, c_lo, 'p99'):.2f}×")
    pub = by_key["portcullis_public"]
    parts = [f"c={conns}: {ratio(pub, ngx, conns):.2f}× nginx proxy, {ratio(pub, pc, conns):.2f}× portcullis authenticated" for conns in CONNECTIONS]
    lines.append(f"- portcullis public path ({PUBLIC_PATH}, no cookie): " + "; ".join(parts))
    pcr = by_key["portcullis-redis"]
    lines.append(
        "- portcullis redis store / memory store: "
        + ", ".join(f"c={conns}: {ratio(pcr, pc, conns):.2f}×" for conns in CONNECTIONS)
        + f"; p99 at c={c_lo}: {ratio(pcr, pc, c_lo, 'p99'):.2f}×"
    )
    for c in contenders:
        if c.key.startswith("compare"):
            parts = [f"c={conns}: {ratio(c, ngx, conns):.2f}× nginx proxy, {ratio(c, pc, conns):.2f}× portcullis" for conns in CONNECTIONS]
            lines.append(f"- {c.label}: " + "; ".join(parts))
    lines.append("")

    targets = []

    def target(ok, text):
        targets.append(f"- {'PASS' if ok else 'MISS'}: {text}")

    if ROUNDS > 0:
        for conns in CONNECTIONS:
            r = ratio(pc, ngx, conns)
            target(r >= 0.8, f"throughput ≥ 0.8× nginx proxy at c={conns}: {r:.2f}×")
        for conns in CONNECTIONS:
            r = ratio(pc, ap, conns)
            target(r >= 4.0, f"throughput ≥ 4× Apache + mod_auth_openidc at c={conns}: {r:.2f}×")
        r = ratio(pc, ngx, c_lo, "p99")
        target(r <= 1.5, f"p99 at c={c_lo} ≤ 1.5× nginx proxy: {r:.2f}× ({fmt_ms(pc.best(c_lo)['p99'])} vs {fmt_ms(ngx.best(c_lo)['p99'])})")
    else:
        targets.append("- not measured: throughput, latency and RSS under load (BENCH_ROUNDS=0)")
    target(pc.rss_idle <= 12 * MIB, f"idle RSS ≤ 12 MiB: {fmt_mib(pc.rss_idle)}")
    if ROUNDS > 0:
        load_peak = max(pc.rss_peak_by_conn[c_hi], 0)
        target(load_peak <= 40 * MIB, f"RSS under the {c_hi}-connection load ≤ 40 MiB: {fmt_mib(load_peak)}")
    if session_memory and "bytes_per_session" in session_memory:
        b = session_memory["bytes_per_session"]
        target(
            b <= 3 * 1024,
            f"memory per session ≤ 3 KiB: {b / 1024:.2f} KiB "
            f"(RSS growth for {session_memory.get('sessions', 0):,.0f} sessions / count; "
            f"{session_memory.get('heap_bytes_per_session', 0):,.0f} B requested from malloc in "
            f"{session_memory.get('allocations_per_session', 0):.0f} allocations; mod_auth_openidc: 16.9 KiB per slot)",
        )
    else:
        targets.append("- not measured: memory per session (BENCH_SESSION_MEMORY=0 or the bench failed)")
    if login:
        target(login["cpu_ms"] <= 2.0, f"a login costs portcullis ≤ 2 ms CPU: {login['cpu_ms']:.2f} ms (over {login['n']} logins)")
    else:
        targets.append("- not measured: login CPU cost (BENCH_LOGINS=0)")
    if stream:
        s_pc, s_ngx = stream["portcullis"], stream["nginx"]
        r = s_pc["speed"] / s_ngx["speed"] if s_ngx["speed"] else float("nan")
        flat = s_pc["rss_growth"] <= 16 * MIB
        target(
            r >= 0.7 and flat,
            f"streaming {STREAM_MIB} MiB ≥ 0.7× nginx proxy with flat memory: {r:.2f}× "
            f"({s_pc['speed'] / MIB:,.0f} vs {s_ngx['speed'] / MIB:,.0f} MiB/s; upstream direct "
            f"{stream['upstream']['speed'] / MIB:,.0f} MiB/s), portcullis RSS +{fmt_mib(s_pc['rss_growth'])} during the transfer"
            f"{'' if flat else ' (not flat: > 16 MiB)'}",
        )
    else:
        targets.append("- not measured: streaming (BENCH_STREAM=0)")
    lines.append("Targets (issue 4):")
    lines.extend(targets)

    if session_memory or criterion:
        lines.append("")
        lines.append("Session store:")
        if session_memory:
            for line in session_memory["lines"]:
                if line.startswith("session:") or line.startswith("session value"):
                    lines.append(f"- {line}")
            lines.append(
                f"- approximate_size() (the store's weigher) {session_memory.get('approximate_size_bytes', 0):,.0f} B; "
                f"the default session.max_memory (256 MiB) holds {session_memory.get('sessions_fitting_default_max_memory', 0):,.0f} such sessions"
            )
        if criterion:
            parts = [f"{name} {rate / 1e6:.2f} M/s" if rate >= 1e6 else f"{name} {rate / 1e3:,.0f} k/s" for name, rate in criterion.items()]
            lines.append("- criterion (one thread): " + ", ".join(parts))
        elif session_memory:
            lines.append(
                f"- one thread: insert {session_memory.get('insert_per_second', 0):,.0f}/s (building the session included), "
                f"lookup {session_memory.get('lookup_per_second', 0):,.0f}/s (cookie parse + SHA-256 included)"
            )
    if login:
        lines.append("")
        lines.append(
            f"Logins: {login['n']} at portcullis, {login['cpu_ms']:.2f} ms of portcullis CPU each; "
            f"{login['logins_per_s']:.0f} logins/s end to end (2 clients, provider and client included); "
            f"CPU used by other processes meanwhile: {login['other_load'] * 100:.0f}% of all cores."
        )
        for other in login_compared:
            lines.append(
                f"Logins at {other['label']}: {other['cpu_ms']:.2f} ms each "
                f"({other['cpu_ms'] / login['cpu_ms']:.2f}× portcullis; batches of 20 alternated between them)."
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
