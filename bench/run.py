"""`make bench`: the gateway against nginx (mTLS termination, one worker each, pinned to the
same CPU), driven by the same load generators on the other CPU, alternating targets.

Measures keep-alive proxied requests/s and p50/p99 at 64 connections, p99 at half of the
gateway's own peak, full and resumed mTLS handshakes (`openssl s_time`), CPU per handshake and
peak RSS, and HTTP/2 with h2load (bench/h2phase.py); prints each figure with the ratio gateway/nginx and writes bench/results.json.
Installs nginx (apt) and autocannon (npm) when missing. All traffic stays on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h2phase

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
GATEWAY_CPU, LOAD_CPU = "0", "1"
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
CONNECTIONS = 64


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- setup


def ensure_tools() -> None:
    if shutil.which("nginx") is None:
        log("installing nginx (apt)…")
        policy = Path("/usr/sbin/policy-rc.d")  # do not let the package start a system nginx
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx"],
                check=True,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        finally:
            policy.unlink(missing_ok=True)
    for tool in ("openssl", "node", "npm", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is required")
    if not (BENCH / "node_modules" / "autocannon").is_dir():
        log("installing autocannon (npm)…")
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund"], cwd=BENCH, check=True
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


NGINX_ORIGIN = """
worker_processes 1; pid {dir}/origin.pid; error_log {dir}/origin.err warn;
events {{ worker_connections 8192; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}
}}
"""

NGINX_PROXY = """
worker_processes 1; pid {dir}/proxy.pid; error_log {dir}/proxy.err warn;
events {{ worker_connections 8192; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {pki}/server.pem; ssl_certificate_key {pki}/server.key;
    ssl_client_certificate {pki}/ca.pem; ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
    # like the gateway, refuse a request without Host (openssl s_time sends HTTP/1.0 without
    # one), so that both answer s_time's request without the upstream
    if ($http_host = "") {{ return 400; }}
    location / {{
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Client-Verify $ssl_client_verify;
      proxy_set_header X-Client-Subject $ssl_client_s_dn;
    }}
  }}
}}
"""


class Server:
    """A process we started, pinned to a CPU; stopped by its PID."""

    def __init__(self, name: str, cmd: list[str], cpu: str, port: int, log_path: Path) -> None:
        self.name = name
        self.port = port
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(["taskset", "-c", cpu, *cmd], stdout=out, stderr=out)
        wait_port(port)

    def pids(self) -> list[int]:
        """The process and its children (nginx's worker)."""
        pids = [self.proc.pid]
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            pids += [int(p) for p in children.split()]
        except OSError:
            pass
        return pids

    def cpu_seconds(self) -> float:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def peak_rss_mib(self) -> float:
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------- measurements


def paced(
    port: int, pki: Path, seconds: float, rate: float, cpus: str = LOAD_CPU
) -> dict[str, Any]:
    """Latency under an open-loop schedule of `rate` requests/s (bench/paced.js)."""
    cmd = ["taskset", "-c", cpus, "node", str(BENCH / "paced.js"), f"https://localhost:{port}/"]
    cmd += ["32", str(int(seconds)), str(int(rate))]
    cmd += [str(pki / "client.pem"), str(pki / "client.key"), str(pki / "ca.pem")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, cwd=BENCH)
    if out.returncode != 0:
        raise RuntimeError(f"paced load failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["errors"] or result["non2xx"] or result["lost"]:
        raise RuntimeError(f"paced load errors against port {port}: {result}")
    return result


def worker_cpu_seconds(server: Server) -> list[float]:
    """CPU seconds of each worker process of a gateway: the supervisor's children, or the
    process itself with --workers 1 (no supervisor)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    pids = server.pids()
    for pid in pids[1:] or pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out.append((int(fields[11]) + int(fields[12])) / tick)
    return out


def scaling(work: Path, pki: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Keep-alive requests/s with 1 worker (pinned, load on the other CPU) and with 2 workers
    (both CPUs, shared with the load generator and the origin). Two workers on a 2-core
    machine cannot get both cores while the load generator needs one, so the second figure is
    accounted for two ways:

    - per gateway CPU-second: 2 cores x requests per worker CPU-second. This undercounts: the
      generator drives each of two workers to only about half a core, and a worker at half
      load finds fewer requests per wake-up than one at full load, so each costs more;
    - at equal load per worker: the CPU per request of 2 workers paced at 80% of what the
      generator reached against them, against that of 1 worker paced at half that rate, over
      ROUNDS runs of each in the order 2, 1, 1, 2, ... (both gateways run throughout).
      Linear scaling is 2 x (1 worker's cost / 2 workers' cost) = 2.0; the supervisor, the
      shared metrics files, an uneven SO_REUSEPORT split and sharing cores with the generator
      all lower it."""
    runs: dict[str, Any] = {}
    servers: dict[int, Server] = {}
    # workers -> (the gateway's CPUs, the load generator's CPUs)
    places = {2: ("0,1", "0,1"), 1: (GATEWAY_CPU, LOAD_CPU)}
    try:
        for workers, (cpus, load_cpus) in places.items():
            port, admin = free_port(), free_port()
            doc = json.loads(json.dumps(config))
            doc["listeners"][0]["bind"] = f"127.0.0.1:{port}"
            doc["admin"]["bind"] = f"127.0.0.1:{admin}"
            path = work / f"gateway-{workers}w.yaml"
            path.write_text(json.dumps(doc))
            cmd = [sys.executable, "-m", "gateway", "run", "-c", str(path)]
            cmd += ["--workers", str(workers)]
            log_path = work / f"gateway-{workers}w.log"
            srv = servers[workers] = Server(f"gateway-{workers}w", cmd, cpus, port, log_path)
            conns = CONNECTIONS * workers  # as many per worker as the single one gets
            autocannon(port, pki, 2, cpus=load_cpus, connections=conns)  # warm up
            before = worker_cpu_seconds(srv)
            result = autocannon(port, pki, SECONDS, cpus=load_cpus, connections=conns)
            used = [a - b for a, b in zip(worker_cpu_seconds(srv), before, strict=True)]
            cpu = sum(used) / SECONDS  # gateway CPUs busy on average
            runs[f"{workers}w"] = {
                "rps": result["rps"],
                "worker_cpu": [round(u / SECONDS, 3) for u in used],
                "rps_per_cpu": result["rps"] / cpu if cpu else 0.0,
                "paced_cpu_seconds": 0.0,
                "paced_requests": 0.0,
            }
            log(
                f"{workers} worker(s): {result['rps']:.0f} req/s, "
                f"worker CPUs {runs[f'{workers}w']['worker_cpu']}"
            )
        # equal load per worker: the paced runs alternate 2, 1, 1, 2, ... so that the host
        # speeding up or slowing down during them (it does, by tens of %) cancels out
        rate = 0.8 * runs["2w"]["rps"]
        for rnd in range(ROUNDS):
            for workers in (2, 1) if rnd % 2 == 0 else (1, 2):
                srv, run = servers[workers], runs[f"{workers}w"]
                run["paced_rate"] = per_worker_rate = rate * workers / 2
                load_cpus = places[workers][1]
                before = worker_cpu_seconds(srv)
                equal = paced(srv.port, pki, SECONDS, per_worker_rate, cpus=load_cpus)
                used = [a - b for a, b in zip(worker_cpu_seconds(srv), before, strict=True)]
                # paced.js runs a second of uncounted warm-up before its SECONDS
                served = equal["requests"] * (SECONDS + 1) / SECONDS
                run["paced_cpu_seconds"] += sum(used)
                run["paced_requests"] += served
                log(
                    f"{workers} worker(s) paced at {per_worker_rate:.0f} req/s: "
                    f"{1000 * sum(used) / served if served else 0.0:.4f} CPU ms per request"
                )
    finally:
        for srv in servers.values():
            srv.stop()
    for run in (runs["1w"], runs["2w"]):
        run["cpu_ms_per_request"] = (
            1000 * run["paced_cpu_seconds"] / run["paced_requests"]
            if run["paced_requests"]
            else 0.0
        )
    one, two = runs["1w"], runs["2w"]
    runs["raw_ratio"] = two["rps"] / one["rps"]
    runs["projected_ratio"] = 2 * two["rps_per_cpu"] / one["rps"]
    runs["equal_load_ratio"] = (
        2 * one["cpu_ms_per_request"] / two["cpu_ms_per_request"]
        if two["cpu_ms_per_request"]
        else 0.0
    )
    return runs


def autocannon(
    port: int, pki: Path, seconds: float, cpus: str = LOAD_CPU, connections: int = CONNECTIONS
) -> dict[str, Any]:
    """Closed-loop keep-alive load at `connections` connections (bench/load.js)."""
    cmd = ["taskset", "-c", cpus, "node", str(BENCH / "load.js"), f"https://localhost:{port}/"]
    cmd += [str(connections), str(int(seconds))]
    cmd += [str(pki / "client.pem"), str(pki / "client.key"), str(pki / "ca.pem")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, cwd=BENCH)
    if out.returncode != 0:
        raise RuntimeError(f"autocannon failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["errors"] or result["non2xx"]:
        raise RuntimeError(f"load errors against port {port}: {result}")
    return result


def s_time(server: Server, pki: Path, mode: str, seconds: float) -> dict[str, float]:
    """Connections per second (and per CPU-second of the server) with openssl s_time."""
    cmd = ["taskset", "-c", LOAD_CPU, "openssl", "s_time", "-connect", f"127.0.0.1:{server.port}"]
    cmd += [mode, "-time", str(int(seconds)), "-www", "/"]
    cmd += ["-cert", str(pki / "client.pem"), "-key", str(pki / "client.key")]
    cmd += ["-CAfile", str(pki / "ca.pem")]
    cpu0 = server.cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    cpu = server.cpu_seconds() - cpu0
    text = out.stdout + out.stderr
    m = re.search(
        r"(\d+) connections in ([\d.]+)s; ([\d.]+) connections/user sec, bytes read (\d+)", text
    )
    real = re.search(
        r"(\d+) connections in (\d+) real seconds, (\d+) bytes read per connection", text
    )
    if not m or not real or int(real.group(3)) == 0:
        raise RuntimeError(
            f"s_time {mode} against {server.name}: no answered connections\n{text[-1500:]}"
        )
    conns = int(real.group(1))
    return {
        "per_second": conns / float(real.group(2)),
        "per_cpu_second": conns / cpu if cpu else 0.0,
    }


def gateway_config(
    pki: Path, port: int, admin: int, origin_port: int, access_log: bool = False
) -> dict[str, Any]:
    """The gateway's config for the benchmark: one listener, the origin, one route (access log
    off, unless `access_log`: then on, as by default, one JSON line per request)."""
    return {
        "listeners": [
            {
                "name": "bench",
                "bind": f"127.0.0.1:{port}",
                "tls": {
                    "cert": str(pki / "server.pem"),
                    "key": str(pki / "server.key"),
                    "client_ca": [str(pki / "ca.pem")],
                },
            }
        ],
        "upstreams": [
            {"name": "origin", "url": f"http://127.0.0.1:{origin_port}", "max_connections": 128}
        ],
        "routes": [
            {
                "name": "all",
                "upstream": "origin",
                "policy": {"allow": "any"},
                "forward_identity": ["xfcc"],
            }
        ],
        "admin": {"bind": f"127.0.0.1:{admin}"},
        "logging": {"level": "info" if access_log else "warning", "access_log": access_log},
        "reload": {"watch": False},
    }


def access_log_runs(work: Path, pki: Path, origin_port: int) -> dict[str, Any]:
    """The keep-alive runs again, with the access log on: what logging costs."""
    port, admin = free_port(), free_port()
    (work / "logged.yaml").write_text(
        json.dumps(gateway_config(pki, port, admin, origin_port, access_log=True))
    )
    cmd = [sys.executable, "-m", "gateway", "run", "-c", str(work / "logged.yaml")]
    srv = Server("gateway-logged", cmd, GATEWAY_CPU, port, work / "logged.log")
    out: dict[str, Any] = {"rps": [], "rps_per_cpu_s": []}
    try:
        autocannon(port, pki, 2)
        for rnd in range(ROUNDS):
            log(f"round {rnd + 1}/{ROUNDS}: gateway, access log on")
            cpu_before, started = srv.cpu_seconds(), time.monotonic()
            r = autocannon(port, pki, SECONDS)
            busy = (srv.cpu_seconds() - cpu_before) / (time.monotonic() - started)
            out["rps"].append(r["rps"])
            out["rps_per_cpu_s"].append(r["rps"] / busy if busy else 0.0)
    finally:
        srv.stop()
    return out


def main() -> int:
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="mtls-bench-"))
    sys.path.insert(0, str(ROOT))
    from gateway.pki import devcerts

    pki = devcerts.generate(work / "pki")
    for p in pki.iterdir():
        p.chmod(0o644 if p.suffix != ".key" else 0o600)
    origin_port, nginx_port, gw_port, admin = free_port(), free_port(), free_port(), free_port()
    (work / "origin.conf").write_text(NGINX_ORIGIN.format(dir=work, port=origin_port))
    (work / "proxy.conf").write_text(
        NGINX_PROXY.format(dir=work, port=nginx_port, origin=origin_port, pki=pki)
    )
    (work / "gateway.yaml").write_text(json.dumps(gateway_config(pki, gw_port, admin, origin_port)))
    servers: list[Server] = []
    try:
        nginx = shutil.which("nginx") or "nginx"
        servers.append(
            Server(
                "origin",
                [nginx, "-c", str(work / "origin.conf"), "-g", "daemon off;"],
                LOAD_CPU,
                origin_port,
                work / "origin.log",
            )
        )
        ngx = Server(
            "nginx",
            [nginx, "-c", str(work / "proxy.conf"), "-g", "daemon off;"],
            GATEWAY_CPU,
            nginx_port,
            work / "nginx.log",
        )
        gw = Server(
            "gateway",
            [sys.executable, "-m", "gateway", "run", "-c", str(work / "gateway.yaml")],
            GATEWAY_CPU,
            gw_port,
            work / "gateway.log",
        )
        servers += [ngx, gw]
        targets = {"gateway": gw, "nginx": ngx}
        results: dict[str, dict[str, list[float]]] = {name: {} for name in targets}

        def add(name: str, key: str, value: float) -> None:
            results[name].setdefault(key, []).append(value)

        for srv in targets.values():  # warm up pools, tickets, caches
            autocannon(srv.port, pki, 2)
        for rnd in range(ROUNDS):
            for name, srv in targets.items() if rnd % 2 == 0 else reversed(list(targets.items())):
                log(f"round {rnd + 1}/{ROUNDS}: {name}")
                cpu_before, started = srv.cpu_seconds(), time.monotonic()
                r = autocannon(srv.port, pki, SECONDS)
                busy = (srv.cpu_seconds() - cpu_before) / (time.monotonic() - started)
                add(name, "rps", r["rps"])
                add(name, "rps_per_cpu_s", r["rps"] / busy if busy else 0.0)
                add(name, "rps_cpu_busy", busy)
                add(name, "p50_ms", r["p50"])
                add(name, "p99_ms", r["p99"])
                new = s_time(srv, pki, "-new", SECONDS / 2)
                add(name, "new_per_s", new["per_second"])
                add(name, "new_per_cpu_s", new["per_cpu_second"])
                add(name, "reuse_per_s", s_time(srv, pki, "-reuse", SECONDS / 2)["per_second"])
        half = max(results["gateway"]["rps"]) / 2
        paced_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        # like every other figure, the best of ROUNDS alternating runs: one stall of the host
        # in a 10 s run moves a p99 by milliseconds (each run is logged)
        for rnd in range(ROUNDS):
            for name, srv in targets.items() if rnd % 2 == 0 else reversed(list(targets.items())):
                cpu_before = srv.cpu_seconds()
                at_half = paced(srv.port, pki, SECONDS, half)
                busy = (srv.cpu_seconds() - cpu_before) / (SECONDS + 1)  # + paced.js's warm-up
                log(
                    f"{name} at {half:.0f} req/s (half of the gateway's peak): "
                    f"p50 {at_half['p50']:.2f} ms, p99 {at_half['p99']:.2f} ms; {busy:.2f} CPU busy; "
                    f"due->sent p50/p99 {at_half['late_p50']:.2f}/{at_half['late_p99']:.2f} ms, "
                    f"sent->answered {at_half['sent_p50']:.2f}/{at_half['sent_p99']:.2f} ms"
                )
                add(name, "p50_at_half_ms", at_half["p50"])
                add(name, "p99_at_half_ms", at_half["p99"])
                paced_runs[name].append({**at_half, "cpu_busy": busy})
        for name, srv in targets.items():
            add(name, "peak_rss_mib", srv.peak_rss_mib())
        for srv in (ngx, gw):  # the scaling runs need both CPUs
            srv.stop()
        logged = access_log_runs(work, pki, origin_port)
        h2 = h2phase.run_phase(
            work,
            pki,
            origin_port,
            json.loads((work / "gateway.yaml").read_text()),
            Server,
            free_port,
            (GATEWAY_CPU, LOAD_CPU),
            ROUNDS,
            SECONDS,
        )
        workers = scaling(work, pki, json.loads((work / "gateway.yaml").read_text()))
    finally:
        for srv in reversed(servers):
            srv.stop()

    def best(name: str, key: str) -> float:
        values = results[name][key]
        if key == "rps_cpu_busy":  # of the run with the most requests/s
            rps = results[name]["rps"]
            return values[rps.index(max(rps))]
        return min(values) if key.endswith("_ms") or key == "peak_rss_mib" else max(values)

    rows = [
        ("keep-alive requests/s (64 conns)", "rps", "higher"),
        ("  CPU busy meanwhile", "rps_cpu_busy", "higher"),
        ("  keep-alive requests per CPU-second", "rps_per_cpu_s", "higher"),
        ("p50 latency ms", "p50_ms", "lower"),
        ("p99 latency ms", "p99_ms", "lower"),
        ("p50 ms at 50% of the gateway's peak (paced)", "p50_at_half_ms", "lower"),
        ("p99 ms at 50% of the gateway's peak (paced)", "p99_at_half_ms", "lower"),
        ("new mTLS handshakes/s", "new_per_s", "higher"),
        ("new handshakes per CPU-second", "new_per_cpu_s", "higher"),
        ("resumed handshakes/s", "reuse_per_s", "higher"),
        ("peak RSS MiB", "peak_rss_mib", "lower"),
    ]
    summary = {}
    print(f"\n{'measure':42} {'gateway':>10} {'nginx':>10} {'gateway/nginx':>14}")
    for label, key, _ in rows:
        g, n = best("gateway", key), best("nginx", key)
        ratio = g / n if n else float("nan")
        summary[key] = {"gateway": g, "nginx": n, "ratio": ratio}
        print(f"{label:42} {g:10.1f} {n:10.1f} {ratio:14.2f}")
    print("\nat half load, the best run of each split (p50/p99; the parts' p99s need not add up):")
    for name, runs in paced_runs.items():
        r = min(runs, key=lambda run: run["p99"])
        print(
            f"  {name:8} due->sent (the generator) {r['late_p50']:.2f}/{r['late_p99']:.2f} ms, "
            f"sent->answered {r['sent_p50']:.2f}/{r['sent_p99']:.2f} ms, "
            f"total {r['p50']:.2f}/{r['p99']:.2f} ms, {r['cpu_busy']:.2f} CPU busy"
        )
    off_rps, off_cpu = best("gateway", "rps"), best("gateway", "rps_per_cpu_s")
    on_rps, on_cpu = max(logged["rps"]), max(logged["rps_per_cpu_s"])
    logged["on_off_rps"], logged["on_off_per_cpu_s"] = on_rps / off_rps, on_cpu / off_cpu
    print(
        f"\naccess log on (the default; one JSON line a request, to a file): {on_rps:.0f} "
        f"req/s, {on_cpu:.0f} per CPU-second; on/off: {logged['on_off_rps']:.2f} requests/s, "
        f"{logged['on_off_per_cpu_s']:.2f} per CPU-second"
    )
    h2phase.report(h2)
    one, two = workers["1w"], workers["2w"]
    print(
        f"\nworkers: 1 worker {one['rps']:.0f} req/s ({one['rps_per_cpu']:.0f} per CPU-second); "
        f"2 workers {two['rps']:.0f} req/s sharing the CPUs with the load "
        f"(worker CPUs {two['worker_cpu']}, {two['rps_per_cpu']:.0f} per CPU-second)"
    )
    print(
        f"2 workers / 1 worker: {workers['raw_ratio']:.2f} as measured; with a core each (load "
        f"generator accounted for): {workers['projected_ratio']:.2f} per CPU-second, "
        f"{workers['equal_load_ratio']:.2f} at equal load per worker "
        f"({two['cpu_ms_per_request']:.4f} vs {one['cpu_ms_per_request']:.4f} CPU ms per request)"
    )
    (BENCH / "results.json").write_text(
        json.dumps(
            {
                "seconds": SECONDS,
                "rounds": ROUNDS,
                "summary": summary,
                "runs": results,
                "paced_at_half": paced_runs,
                "workers": workers,
                "access_log_on": logged,
                "http2": h2,
            },
            indent=2,
        )
        + "\n"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
