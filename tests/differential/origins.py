"""Real origin servers on loopback for the differential harness, each started by the test and
stopped by its PID: gunicorn and waitress (WSGI), uvicorn with h11 and with httptools (ASGI),
aiohttp, Node's http module, nginx and Tomcat (a servlet container: it strips `;parameters`
from every path segment). Each runs an app that reports what it saw (apps.py, origin.js,
ReportServlet.java, and the nginx config below)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# the identity names nginx's app reports ($http_* variables cannot be listed)
NGINX_NAMES = [
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id", "client-cert",
    "client-cert-chain", "x-forwarded-client-cert", "x-ssl-client-s-dn", "x-ssl-client-cert",
    "ssl-client-cert", "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups",
    "x-forwarded-prefix", "x-forwarded-uri", "forwarded", "x-real-ip", "remote-user",
    "x-remote-user", "x-auth-request-user", "x-client-verify", "x-original-url", "x-tenant",
]  # fmt: skip

ORIGINS = [
    "gunicorn", "waitress", "uvicorn-h11", "uvicorn-httptools", "aiohttp", "node", "nginx",
    "tomcat",
]  # fmt: skip
TOMCAT_HOME = Path("/usr/share/tomcat10")


def _command(name: str, port: int, tmp: Path) -> list[str] | None:
    """How to start `name` on `port`; None when it is not installed here."""
    py = [sys.executable, "-m"]
    app = "tests.differential.apps"
    if name == "gunicorn":
        return [*py, "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", f"{app}:wsgi"]
    if name == "waitress":
        # waitress removes X-Forwarded-* from untrusted peers by default: the app is to see what
        # the gateway sent
        return [*py, "waitress", "--listen", f"127.0.0.1:{port}", "--threads", "4",
                "--no-clear-untrusted-proxy-headers", f"{app}:wsgi"]  # fmt: skip
    if name.startswith("uvicorn-"):
        impl = name.split("-", 1)[1]
        return [*py, "uvicorn", "--http", impl, "--host", "127.0.0.1", "--port", str(port),
                "--no-access-log", "--log-level", "warning", f"{app}:asgi"]  # fmt: skip
    if name == "aiohttp":
        return [*py, app, "aiohttp", str(port)]
    if name == "node":
        node = shutil.which("node")
        return [node, str(HERE / "origin.js"), str(port)] if node else None
    if name == "nginx":
        nginx = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if nginx is None:
            return None
        conf = tmp / "nginx.conf"
        conf.write_text(_nginx_conf(port, tmp))
        return [nginx, "-e", str(tmp / "error.log"), "-p", str(tmp), "-c", str(conf)]
    if name == "tomcat":
        return _tomcat(port, tmp)
    raise ValueError(name)


def _tomcat(port: int, tmp: Path) -> list[str] | None:
    """Debian's tomcat10 on its own CATALINA_BASE in `tmp`, with ReportServlet mapped to /*."""
    javac = shutil.which("javac")
    if javac is None or not (TOMCAT_HOME / "bin" / "catalina.sh").exists():
        return None
    base = tmp / "tomcat"
    classes = base / "webapps" / "ROOT" / "WEB-INF" / "classes"
    for folder in ("conf", "logs", "temp", "work"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    classes.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [javac, "-cp", str(TOMCAT_HOME / "lib" / "servlet-api.jar"), "-d", str(classes),
         str(HERE / "ReportServlet.java")],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    shutil.copy(TOMCAT_HOME / "etc" / "web.xml", base / "conf" / "web.xml")
    (base / "conf" / "server.xml").write_text(
        f"""<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector port="{port}" address="127.0.0.1" protocol="HTTP/1.1" connectionTimeout="20000"/>
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false"/>
    </Engine>
  </Service>
</Server>
"""
    )
    (base / "webapps" / "ROOT" / "WEB-INF" / "web.xml").write_text(
        """<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0">
  <servlet><servlet-name>report</servlet-name><servlet-class>ReportServlet</servlet-class></servlet>
  <servlet-mapping><servlet-name>report</servlet-name><url-pattern>/*</url-pattern></servlet-mapping>
</web-app>
"""
    )
    return [str(TOMCAT_HOME / "bin" / "catalina.sh"), "run"]


def _nginx_conf(port: int, tmp: Path) -> str:
    lines = "\\n".join(f"{n}: $http_{n.replace('-', '_')}" for n in NGINX_NAMES)
    return f"""daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/client_body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type text/plain;
      return 200 "path: $uri\\ncontent-length: $http_content_length\\ntransfer-encoding: $http_transfer_encoding\\n{lines}\\n";
    }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def origin(name: str, tmp: Path) -> Iterator[int | None]:
    """The origin `name` serving on a loopback port (yielded), or None when not installed."""
    port = free_port()
    command = _command(name, port, tmp)
    if command is None:
        yield None
        return
    log = (tmp / f"{name}.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if name == "tomcat":
        env.update(CATALINA_HOME=str(TOMCAT_HOME), CATALINA_BASE=str(tmp / "tomcat"),
                   CATALINA_TMPDIR=str(tmp / "tomcat" / "temp"), JAVA_OPTS="-Xmx256m")  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60  # a JVM takes its time
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {(tmp / f'{name}.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} did not listen on {port}") from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
