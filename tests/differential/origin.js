// Node's http server as an origin of the differential harness: it answers every request with
// the path an app routes on (the URL's pathname, percent-decoded as Express's router does),
// the headers it received and the length and SHA-256 of the body it read.
"use strict";
const http = require("http");
const crypto = require("crypto");

const port = Number(process.argv[2]);
http
  .createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      let path = new URL(req.url, "http://origin.invalid").pathname;
      try {
        path = decodeURIComponent(path);
      } catch (e) {
        // a malformed escape: Express answers 400; report the raw path
      }
      const headers = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        headers.push([req.rawHeaders[i].toLowerCase(), req.rawHeaders[i + 1]]);
      }
      const out = JSON.stringify({
        path,
        headers,
        body_len: body.length,
        body_sha256: crypto.createHash("sha256").update(body).digest("hex"),
      });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(out) });
      res.end(out);
    });
  })
  .listen(port, "127.0.0.1", () => console.log("listening"));
