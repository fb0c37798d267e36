"""`make bench`'s HTTP/2 phase: h2load against the gateway and nginx, each with HTTP/2 on its
mTLS listener and one worker pinned to the same CPU, h2load on the other.

Three runs, each ROUNDS times, alternating the two: 1 and 100 streams per connection to the
HTTP/1.1 origin (nginx: `proxy_pass`), and 100 streams to an HTTP/2 origin in clear (the
gateway: an upstream with `protocol: h2c`; nginx: `grpc_pass`). Reported: requests/s and
requests per CPU-second of each, and their ratio.

h2load has no client-certificate option: a small LD_PRELOAD shim, built here with the C
compiler, loads the client certificate into every SSL_CTX h2load makes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;
int SSL_CTX_use_certificate_chain_file(SSL_CTX *ctx, const char *file);
int SSL_CTX_use_PrivateKey_file(SSL_CTX *ctx, const char *file, int type);
/* every SSL_CTX h2load makes presents $SHIM_CERT / $SHIM_KEY (PEM) */
SSL_CTX *SSL_CTX_new(const SSL_METHOD *method) {
    static SSL_CTX *(*real)(const SSL_METHOD *);
    if (!real) real = (SSL_CTX *(*)(const SSL_METHOD *))dlsym(RTLD_NEXT, "SSL_CTX_new");
    SSL_CTX *ctx = real(method);
    const char *cert = getenv("SHIM_CERT"), *key = getenv("SHIM_KEY");
    if (ctx && cert && key) {
        SSL_CTX_use_certificate_chain_file(ctx, cert);
        SSL_CTX_use_PrivateKey_file(ctx, key, 1);
    }
    return ctx;
}
"""

NGINX_H2C_ORIGIN = """
worker_processes 1; pid {dir}/h2c-origin.pid; error_log {dir}/h2c-origin.err warn;
events {{ worker_connections 8192; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  http2_max_requests 1000000; http2_max_concurrent_streams 1000;
  server {{ listen 127.0.0.1:{port} http2; location / {{ return 200 "ok\\n"; }} }}
}}
"""

NGINX_H2_PROXY = """
worker_processes 1; pid {dir}/h2-proxy.pid; error_log {dir}/h2-proxy.err warn;
events {{ worker_connections 8192; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  http2_max_requests 1000000; http2_max_concurrent_streams 128;
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 128; }}
  upstream h2c {{ server 127.0.0.1:{h2c}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {pki}/server.pem; ssl_certificate_key {pki}/server.key;
    ssl_client_certificate {pki}/ca.pem; ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    location /h2c/ {{
      grpc_pass grpc://h2c;
      grpc_set_header X-Client-Subject $ssl_client_s_dn;
    }}
    location / {{
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Client-Subject $ssl_client_s_dn;
    }}
  }}
}}
"""

RUNS = (  # (name, path, streams per connection, connections)
    ("h1 origin, 1 stream per connection", "/", 1, 64),
    ("h1 origin, 100 streams per connection", "/", 100, 8),
    ("h2c origin, 100 streams per connection", "/h2c/", 100, 8),
)


def ensure_h2load() -> None:
    missing = [tool for tool in ("h2load", "cc") if shutil.which(tool) is None]
    if missing:
        packages = {"h2load": "nghttp2-client", "cc": "gcc"}
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
            + [packages[tool] for tool in missing],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )


def build_shim(work: Path) -> Path:
    (work / "shim.c").write_text(SHIM_C)
    shim = work / "shim.so"
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(work / "shim.c"), "-ldl"],
        check=True,
    )
    return shim


def h2load(
    port: int,
    path: str,
    streams: int,
    connections: int,
    seconds: float,
    env: dict[str, str],
    cpu: str,
) -> float:
    """Requests/s that h2load got answered with 2xx over `seconds` (after 1 s of warm-up)."""
    cmd = ["taskset", "-c", cpu, "h2load", f"https://localhost:{port}{path}"]
    cmd += ["-c", str(connections), "-m", str(streams), "-D", str(int(seconds))]
    cmd += ["--warm-up-time", "1", "-t", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, env=env)
    text = out.stdout + out.stderr
    done = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", text
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    rate = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", text)
    if not (done and codes and rate) or int(done.group(2)) or int(codes.group(4)):
        raise RuntimeError(f"h2load against port {port}{path} failed:\n{text[-2000:]}")
    return float(rate.group(1))


def run_phase(
    work: Path,
    pki: Path,
    origin_port: int,
    config: dict[str, Any],
    server: Any,
    ports: Callable[[], int],
    cpus: tuple[str, str],
    rounds: int,
    seconds: float,
) -> dict[str, Any]:
    """The three runs against a fresh gateway (`config`, on new ports) and nginx, both on
    `cpus[0]`, h2load on `cpus[1]`; `server` starts and pins a process (run.Server), `ports`
    gives a free port."""
    server_cpu, load_cpu = cpus
    ensure_h2load()
    shim = build_shim(work)
    env = {**os.environ, "LD_PRELOAD": str(shim)}
    env |= {"SHIM_CERT": str(pki / "client.pem"), "SHIM_KEY": str(pki / "client.key")}
    nginx = shutil.which("nginx") or "nginx"
    h2c_port, nginx_port, gw_port, admin = ports(), ports(), ports(), ports()
    (work / "h2c-origin.conf").write_text(NGINX_H2C_ORIGIN.format(dir=work, port=h2c_port))
    (work / "h2-proxy.conf").write_text(
        NGINX_H2_PROXY.format(dir=work, port=nginx_port, origin=origin_port, h2c=h2c_port, pki=pki)
    )
    doc = json.loads(json.dumps(config))
    doc["listeners"][0]["bind"] = f"127.0.0.1:{gw_port}"
    doc["admin"]["bind"] = f"127.0.0.1:{admin}"
    # 800 requests at once to the HTTP/1.1 origin need 800 connections (nginx opens them too)
    doc["upstreams"][0]["max_connections"] = 1024
    doc["upstreams"].append(
        {"name": "h2c", "url": f"http://127.0.0.1:{h2c_port}", "protocol": "h2c",
         "max_connections": 4}
    )  # fmt: skip
    doc["routes"].insert(
        0, {"name": "h2c", "match": {"path_prefix": "/h2c/"}, "upstream": "h2c",
            "policy": {"allow": "any"}, "forward_identity": ["xfcc"]}
    )  # fmt: skip
    (work / "gateway-h2.yaml").write_text(json.dumps(doc))
    servers = []
    results: dict[str, Any] = {}
    try:
        servers.append(
            server("h2c-origin", [nginx, "-c", str(work / "h2c-origin.conf"), "-g", "daemon off;"],
                   load_cpu, h2c_port, work / "h2c-origin.log")
        )  # fmt: skip
        targets = {
            "gateway": server(
                "gateway-h2",
                [sys.executable, "-m", "gateway", "run", "-c", str(work / "gateway-h2.yaml")],
                server_cpu, gw_port, work / "gateway-h2.log",
            ),
            "nginx": server(
                "nginx-h2", [nginx, "-c", str(work / "h2-proxy.conf"), "-g", "daemon off;"],
                server_cpu, nginx_port, work / "nginx-h2.log",
            ),
        }  # fmt: skip
        servers += targets.values()
        for name, path, streams, conns in RUNS:
            runs: dict[str, dict[str, list[float]]] = {
                t: {"rps": [], "per_cpu_s": []} for t in targets
            }
            for rnd in range(rounds):
                order = list(targets.items()) if rnd % 2 == 0 else list(reversed(targets.items()))
                for target, srv in order:
                    cpu = srv.cpu_seconds()
                    rps = h2load(srv.port, path, streams, conns, seconds, env, load_cpu)
                    busy = (srv.cpu_seconds() - cpu) / (seconds + 1)  # + the warm-up second
                    runs[target]["rps"].append(rps)
                    runs[target]["per_cpu_s"].append(rps / busy if busy else 0.0)
                    print(f"h2 {name}: {target} {rps:.0f} req/s, {busy:.2f} CPU busy",
                          file=sys.stderr, flush=True)  # fmt: skip
            g, n = runs["gateway"], runs["nginx"]
            results[name] = {
                "runs": runs,
                "rps": {"gateway": max(g["rps"]), "nginx": max(n["rps"])},
                "per_cpu_s": {"gateway": max(g["per_cpu_s"]), "nginx": max(n["per_cpu_s"])},
            }
            results[name]["rps"]["ratio"] = max(g["rps"]) / max(n["rps"])
            results[name]["per_cpu_s"]["ratio"] = max(g["per_cpu_s"]) / max(n["per_cpu_s"])
    finally:
        for srv in reversed(servers):
            srv.stop()
    return results


def report(results: dict[str, Any]) -> None:
    print("\nHTTP/2 (h2load, mTLS):")
    print(f"  {'run':42} {'gateway':>9} {'nginx':>9} {'ratio':>6}   per CPU-s: {'ratio':>6}")
    for name, r in results.items():
        print(
            f"  {name:42} {r['rps']['gateway']:9.0f} {r['rps']['nginx']:9.0f} "
            f"{r['rps']['ratio']:6.2f}   {r['per_cpu_s']['gateway']:6.0f} vs "
            f"{r['per_cpu_s']['nginx']:6.0f}: {r['per_cpu_s']['ratio']:6.2f}"
        )
