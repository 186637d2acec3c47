// Demo / test upstream for portcullis: answers every request with what it received.
//
//   node tests/upstream/echo.mjs        (env ECHO_PORT, default 0 = any free port)
//
// Prints exactly one line on stdout when ready: `ECHO_READY http://127.0.0.1:<port>`.
// No dependencies beyond Node itself.
//
// Every request (after its whole body is read) gets 200 application/json:
//   {"method":..,"url":..,"headers":{lowercase-name: "v1, v2"},"rawHeaders":[[name,value],..],"bodyBytes":N}
// or, when the Accept header prefers text/html (a browser), an HTML page with the
// same information, every value escaped and the Remote-* rows highlighted.
// Special paths: /__status/<code> answers with that status, /__slow?ms=N waits N ms first.

import * as http from 'node:http';

const HOST = '127.0.0.1';
const PORT = Number(process.env.ECHO_PORT || 0);
const QUIET = ['1', 'true'].includes((process.env.ECHO_QUIET ?? '').toLowerCase());
const MAX_SLOW_MS = 120_000;

function escapeHtml(s) {
  return String(s)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

// q-value of the best match for `type` ("text/html") in an Accept header
function quality(accept, type) {
  const [major] = type.split('/');
  let best = -1;
  let bestSpecificity = -1;
  for (const part of accept.split(',')) {
    const [rangeRaw, ...paramsRaw] = part.trim().split(';');
    const range = rangeRaw.trim().toLowerCase();
    let q = 1;
    for (const p of paramsRaw) {
      const [k, v] = p.trim().split('=');
      if (k?.trim().toLowerCase() === 'q') q = Number(v);
    }
    if (Number.isNaN(q)) q = 0;
    let specificity = -1;
    if (range === type) specificity = 2;
    else if (range === `${major}/*`) specificity = 1;
    else if (range === '*/*') specificity = 0;
    if (specificity > bestSpecificity) {
      bestSpecificity = specificity;
      best = q;
    }
  }
  return bestSpecificity < 0 ? 0 : best;
}

// a browser: text/html explicitly accepted and at least as acceptable as JSON
function prefersHtml(accept) {
  if (!accept || !/text\/html/i.test(accept)) return false;
  const html = quality(accept, 'text/html');
  return html > 0 && html >= quality(accept, 'application/json');
}

function collectHeaders(req) {
  const headers = {};
  const rawHeaders = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i];
    const value = req.rawHeaders[i + 1];
    rawHeaders.push([name, value]);
    const key = name.toLowerCase();
    headers[key] = Object.hasOwn(headers, key) ? `${headers[key]}, ${value}` : value;
  }
  return { headers, rawHeaders };
}

function htmlPage(info) {
  const rows = info.rawHeaders.map(([name, value]) => {
    const remote = /^remote[-_]/i.test(name);
    return `<tr${remote ? ' class="remote"' : ''}><th>${escapeHtml(name)}</th><td>${escapeHtml(value)}</td></tr>`;
  }).join('\n');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>portcullis demo upstream</title>
<style>
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; }
th, td { text-align: left; border: 1px solid #ccc; padding: .3em .6em; font-family: monospace; vertical-align: top; word-break: break-all; }
tr.remote { background: #fff3b0; font-weight: bold; }
</style>
</head>
<body>
<h1>portcullis demo upstream</h1>
<p>This page shows the request as the upstream received it. The highlighted <code>Remote-*</code> headers come from portcullis.</p>
<p><code>${escapeHtml(info.method)} ${escapeHtml(info.url)}</code> (${info.bodyBytes} body bytes)</p>
<table id="headers">
<tr><th>header</th><th>value</th></tr>
${rows}
</table>
<p><a href="/.auth/me">/.auth/me</a> &middot; <a href="/.auth/logout">/.auth/logout</a></p>
</body>
</html>
`;
}

const server = http.createServer(async (req, res) => {
  const started = Date.now();
  try {
    let bodyBytes = 0;
    for await (const chunk of req) bodyBytes += chunk.length;

    const url = new URL(req.url, 'http://127.0.0.1');
    let status = 200;
    const m = /^\/__status\/(\d{3})$/.exec(url.pathname);
    if (m && Number(m[1]) >= 200 && Number(m[1]) <= 599) status = Number(m[1]);
    if (url.pathname === '/__slow') {
      const ms = Math.min(Math.max(Number(url.searchParams.get('ms')) || 0, 0), MAX_SLOW_MS);
      await new Promise((resolve) => { setTimeout(resolve, ms); });
    }

    const { headers, rawHeaders } = collectHeaders(req);
    const info = { method: req.method, url: req.url, headers, rawHeaders, bodyBytes };
    const noBody = req.method === 'HEAD' || status === 204 || status === 304;
    let type;
    let body;
    if (prefersHtml(req.headers.accept)) {
      type = 'text/html; charset=utf-8';
      body = Buffer.from(htmlPage(info));
    } else {
      type = 'application/json';
      body = Buffer.from(`${JSON.stringify(info)}\n`);
    }
    res.writeHead(status, noBody
      ? { 'Cache-Control': 'no-store' }
      : { 'Content-Type': type, 'Content-Length': body.length, 'Cache-Control': 'no-store' });
    res.end(noBody ? undefined : body);
  } catch (err) {
    if (!res.headersSent) {
      res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(`${err.message}\n`);
    } else {
      res.destroy();
    }
  } finally {
    if (!QUIET) process.stderr.write(`echo: ${req.method} ${req.url} -> ${res.statusCode} ${Date.now() - started}ms\n`);
  }
});

server.on('error', (err) => {
  process.stderr.write(`echo: listen failed: ${err.message}\n`);
  process.exit(2);
});

server.listen(PORT, HOST, () => {
  process.stdout.write(`ECHO_READY http://${HOST}:${server.address().port}\n`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
