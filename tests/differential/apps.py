"""The origin apps of the differential harness: each answers every request with what it saw,
as JSON: the path it routes on (decoded, the way an app on that server matches routes), every
header it received, and the length and SHA-256 of the body it read.

`wsgi` runs under gunicorn and waitress, `asgi` under uvicorn (h11 and httptools), and
`python -m tests.differential.apps aiohttp PORT` serves the same with aiohttp. Node's and
nginx's apps live in origin.js and in the harness's nginx.conf."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any


def _report(path: str, headers: list[list[str]], body: bytes) -> bytes:
    return json.dumps(
        {
            "path": path,
            "headers": headers,
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
    ).encode()


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """PEP 3333: PATH_INFO is the decoded path as latin-1 text; headers are HTTP_* variables
    (the CGI mapping that reads `X_A` and `X-A` as one name)."""
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    path = path.encode("latin-1").decode("utf-8", "replace")
    headers = [
        [key[5:].lower().replace("_", "-"), value]
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers.append([key.lower().replace("_", "-"), environ[key]])
    body = environ["wsgi.input"].read()
    out = _report(path, headers, body)
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
    )
    return [out]


async def asgi(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """ASGI: scope["path"] is the decoded path apps route on."""
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]
            if kind == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    out = _report(scope["root_path"] + scope["path"], headers, body)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(out)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": out})


def _serve_aiohttp(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        headers = [[k, v] for k, v in request.headers.items()]
        return web.Response(
            body=_report(request.path, headers, body), content_type="application/json"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    if sys.argv[1] == "aiohttp":
        _serve_aiohttp(int(sys.argv[2]))
