// Self-test of the test peers (provider + echo upstream), no browser, no proxy:
//   node --test tests/idp/selftest.mjs
// Drives the provider as a confidential client would (PAR, login form, code
// exchange, userinfo, refresh rotation, revocation) and checks the echo server.

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REDIRECT_URI = 'http://127.0.0.1:4180/callback';
const BASIC = `Basic ${Buffer.from(`${encodeURIComponent('Express.js')}:${encodeURIComponent('insecure_secret')}`).toString('base64')}`;

const children = [];
after(() => { for (const c of children) c.kill('SIGTERM'); });

function start(script, env, readyWord) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let out = '';
    let err = '';
    // As the Rust harness's READY_TIMEOUT: on 2 cores busy with builds and other tests a
    // start has taken 10 s; only a failure waits this long.
    const timer = setTimeout(() => reject(new Error(`${script} not ready: ${err}`)), 90_000);
    child.stderr.on('data', (d) => { err += d; });
    child.stdout.on('data', (d) => {
      out += d;
      const m = new RegExp(`^${readyWord} (http://127\\.0\\.0\\.1:\\d+)\\n`).exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], child, stderr: () => err });
      }
    });
    child.on('exit', (code) => reject(new Error(`${script} exited ${code}: ${err}`)));
  });
}

function startIdp(env = {}) {
  return start(path.join(HERE, 'server.mjs'), {
    IDP_REDIRECT_URIS: REDIRECT_URI, IDP_QUIET: '1', ...env,
  }, 'IDP_READY');
}

function b64url(buf) { return Buffer.from(buf).toString('base64url'); }
function rand() { return b64url(crypto.randomBytes(32)); }
function jwtPayload(jwt) { return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url')); }
function jwtHeader(jwt) { return JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url')); }

class Jar {
  cookies = new Map();

  store(res) {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i);
      const value = pair.slice(i + 1);
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(c)) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  header() { return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '); }
}

async function form(url, params, headers = {}) {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(params),
    redirect: 'manual',
  });
}

// a full login; returns { tokens, idClaims, meta, state, nonce }
async function login(issuer, { user = 'john', password = 'password', scope = 'openid profile email groups offline_access', par = true, jar = new Jar() } = {}) {
  const meta = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  const verifier = rand();
  const state = rand();
  const nonce = rand();
  const params = {
    response_type: 'code',
    client_id: 'Express.js',
    redirect_uri: REDIRECT_URI,
    scope,
    state,
    nonce,
    code_challenge: b64url(crypto.createHash('sha256').update(verifier).digest()),
    code_challenge_method: 'S256',
  };
  let next;
  if (par) {
    const res = await form(meta.pushed_authorization_request_endpoint, params, { authorization: BASIC });
    assert.equal(res.status, 201, await res.clone().text());
    const body = await res.json();
    assert.match(body.request_uri, /^urn:ietf:params:oauth:request_uri:/);
    assert.equal(typeof body.expires_in, 'number');
    next = `${meta.authorization_endpoint}?${new URLSearchParams({ client_id: 'Express.js', request_uri: body.request_uri })}`;
  } else {
    next = `${meta.authorization_endpoint}?${new URLSearchParams(params)}`;
  }
  // follow redirects by hand until we hit the login form or the redirect_uri
  let callback;
  for (let hop = 0; hop < 10 && !callback; hop += 1) {
    let res;
    if (/\/interaction\/[^/]+$/.test(new URL(next).pathname)) {
      res = await fetch(next, { headers: { cookie: jar.header() }, redirect: 'manual' });
      jar.store(res);
      if (res.status === 200) {
        const html = await res.text();
        const forms = html.match(/<form /g) ?? [];
        assert.equal(forms.length, 1);
        const action = /<form method="post" action="([^"]+)"/.exec(html)[1];
        assert.match(html, /<input [^>]*name="username"/);
        assert.match(html, /<input [^>]*name="password" type="password"/);
        res = await form(new URL(action, issuer).href, { username: user, password }, { cookie: jar.header() });
        jar.store(res);
        if (res.status === 200) return { failedLoginHtml: await res.text() };
        assert.equal(res.status, 303);
      }
    } else {
      res = await fetch(next, { headers: { cookie: jar.header() }, redirect: 'manual' });
      jar.store(res);
    }
    if (res.status >= 400 || !res.headers.get('location')) {
      return { error: { status: res.status, body: await res.text() } };
    }
    next = new URL(res.headers.get('location'), next).href;
    if (next.startsWith(REDIRECT_URI)) callback = new URL(next);
  }
  assert.ok(callback, 'never reached the redirect_uri');
  const q = callback.searchParams;
  if (q.get('error')) return { callbackError: Object.fromEntries(q) };
  assert.equal(q.get('state'), state);
  assert.equal(q.get('iss'), issuer);
  const res = await form(meta.token_endpoint, {
    grant_type: 'authorization_code', code: q.get('code'), redirect_uri: REDIRECT_URI, code_verifier: verifier,
  }, { authorization: BASIC });
  assert.equal(res.status, 200, await res.clone().text());
  const tokens = await res.json();
  if (scope.split(' ').includes('offline_access')) {
    assert.ok(tokens.refresh_token, 'offline_access yields a refresh token without prompt=consent from the RP');
    assert.ok(tokens.scope.split(' ').includes('offline_access'), tokens.scope);
  }
  const idClaims = jwtPayload(tokens.id_token);
  assert.equal(idClaims.nonce, nonce);
  assert.equal(idClaims.iss, issuer);
  assert.equal(idClaims.aud, 'Express.js');
  return { tokens, idClaims, meta, jar, code: q.get('code'), verifier };
}

async function userinfo(meta, accessToken) {
  const res = await fetch(meta.userinfo_endpoint, { headers: { authorization: `Bearer ${accessToken}` } });
  return { status: res.status, body: await res.json() };
}

async function refresh(meta, refreshToken) {
  const res = await form(meta.token_endpoint, { grant_type: 'refresh_token', refresh_token: refreshToken }, { authorization: BASIC });
  return { status: res.status, body: await res.json() };
}

describe('test provider, defaults (Authelia 4.39, PAR required)', async () => {
  const idp = await startIdp();
  const issuer = idp.url;

  test('discovery', async () => {
    const meta = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    assert.equal(meta.issuer, issuer);
    assert.equal(meta.authorization_response_iss_parameter_supported, true);
    assert.deepEqual(meta.code_challenge_methods_supported, ['S256']);
    assert.ok(meta.pushed_authorization_request_endpoint);
    assert.ok(meta.revocation_endpoint);
    assert.ok(meta.id_token_signing_alg_values_supported.includes('RS256'));
    assert.equal(meta.end_session_endpoint, undefined);
  });

  test('login, claims only in userinfo, refresh rotation, stats', async () => {
    await fetch(`${issuer}/__test/reset-stats`, { method: 'POST' });
    const { tokens, idClaims, meta } = await login(issuer);
    assert.equal(jwtHeader(tokens.id_token).alg, 'RS256');
    assert.ok(tokens.refresh_token, 'refresh token with offline_access, no prompt=consent');
    assert.ok(!tokens.access_token.includes('.'), 'opaque access token');
    for (const c of ['name', 'preferred_username', 'email', 'email_verified', 'groups']) {
      assert.equal(idClaims[c], undefined, `${c} must not be in the ID token`);
    }
    const ui = await userinfo(meta, tokens.access_token);
    assert.equal(ui.status, 200);
    assert.deepEqual(ui.body, {
      sub: idClaims.sub, name: 'John Doe', preferred_username: 'john',
      email: 'john@example.com', email_verified: true, groups: ['admins', 'dev'],
    });
    const r1 = await refresh(meta, tokens.refresh_token);
    assert.equal(r1.status, 200, JSON.stringify(r1.body));
    assert.notEqual(r1.body.refresh_token, tokens.refresh_token, 'rotated');
    assert.ok(r1.body.id_token);
    const reuse = await refresh(meta, tokens.refresh_token);
    assert.equal(reuse.status, 400);
    assert.equal(reuse.body.error, 'invalid_grant');
    // reuse revoked the whole grant, as Authelia does
    const after = await refresh(meta, r1.body.refresh_token);
    assert.equal(after.body.error, 'invalid_grant');
    const stats = await (await fetch(`${issuer}/__test/stats`)).json();
    assert.deepEqual(stats, { par: 1, authorization_code: 1, refresh_token: 3, userinfo: 1, revocation: 0 });
  });

  test('no refresh token without offline_access', async () => {
    const { tokens } = await login(issuer, { scope: 'openid profile email groups' });
    assert.equal(tokens.refresh_token, undefined);
  });

  test('revoke-refresh-tokens endpoint', async () => {
    const { tokens, meta } = await login(issuer, { user: 'harry' });
    const res = await fetch(`${issuer}/__test/revoke-refresh-tokens`, { method: 'POST' });
    assert.equal(res.status, 200);
    const r = await refresh(meta, tokens.refresh_token);
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_grant');
    // the access token still works until it expires
    assert.equal((await userinfo(meta, tokens.access_token)).status, 200);
  });

  test('revocation endpoint counts and revokes', async () => {
    await fetch(`${issuer}/__test/reset-stats`, { method: 'POST' });
    const { tokens, meta } = await login(issuer);
    const res = await form(meta.revocation_endpoint, { token: tokens.refresh_token, token_type_hint: 'refresh_token' }, { authorization: BASIC });
    assert.equal(res.status, 200);
    const r = await refresh(meta, tokens.refresh_token);
    assert.equal(r.body.error, 'invalid_grant');
    const stats = await (await fetch(`${issuer}/__test/stats`)).json();
    assert.equal(stats.revocation, 1);
  });

  test('wrong password shows the form again with an error', async () => {
    const r = await login(issuer, { password: 'nope' });
    assert.match(r.failedLoginHtml, /Incorrect username or password/);
    assert.match(r.failedLoginHtml, /<form method="post" action="\/interaction\/[^"]+\/login"/);
  });

  test('authorize without PAR is refused', async () => {
    const r = await login(issuer, { par: false });
    assert.ok(r.callbackError, JSON.stringify(r));
    assert.equal(r.callbackError.error, 'invalid_request');
    assert.equal(r.callbackError.iss, issuer);
  });

  test('mallory has hostile claims', async () => {
    const { tokens, meta } = await login(issuer, { user: 'mallory' });
    const ui = await userinfo(meta, tokens.access_token);
    assert.equal(ui.body.name, '<script>alert("pwned")</script>');
    assert.deepEqual(ui.body.groups, ['<b>bold</b>', 'dev']);
  });

  test('short state is refused at PAR like Authelia', async () => {
    const meta = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    const res = await form(meta.pushed_authorization_request_endpoint, {
      response_type: 'code', client_id: 'Express.js', redirect_uri: REDIRECT_URI, scope: 'openid',
      state: 'short', code_challenge: b64url(crypto.randomBytes(32)), code_challenge_method: 'S256',
    }, { authorization: BASIC });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error, 'invalid_state');
  });

  test('PKCE is required', async () => {
    const meta = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    const res = await form(meta.pushed_authorization_request_endpoint, {
      response_type: 'code', client_id: 'Express.js', redirect_uri: REDIRECT_URI, scope: 'openid', state: rand(),
    }, { authorization: BASIC });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error, 'invalid_request');
  });

  test('second login in the same browser session skips the form (SSO)', async () => {
    const jar = new Jar();
    await login(issuer, { jar });
    const again = await login(issuer, { jar, password: 'unused' });
    assert.ok(again.tokens, JSON.stringify(again));
  });
});

describe('test provider, IDP_CLAIMS_IN_ID_TOKEN=1, IDP_REQUIRE_PAR=0, short TTLs', async () => {
  const idp = await startIdp({ IDP_CLAIMS_IN_ID_TOKEN: '1', IDP_REQUIRE_PAR: '0', IDP_ACCESS_TOKEN_TTL: '2', IDP_ID_TOKEN_TTL: '30', IDP_REFRESH_TOKEN_TTL: '40' });
  const issuer = idp.url;

  test('claims in the ID token, TTLs applied', async () => {
    const { tokens, idClaims } = await login(issuer);
    assert.equal(idClaims.name, 'John Doe');
    assert.equal(idClaims.preferred_username, 'john');
    assert.equal(idClaims.email, 'john@example.com');
    assert.deepEqual(idClaims.groups, ['admins', 'dev']);
    assert.equal(tokens.expires_in, 2);
    assert.equal(idClaims.exp - idClaims.iat, 30);
  });

  test('authorize without PAR works when not required', async () => {
    const { tokens } = await login(issuer, { par: false });
    assert.ok(tokens.access_token);
  });

  test('/__test/set-groups changes what userinfo says from then on', async () => {
    const { tokens, meta } = await login(issuer);
    assert.deepEqual((await userinfo(meta, tokens.access_token)).body.groups, ['admins', 'dev']);
    const set = await fetch(`${issuer}/__test/set-groups?user=john&groups=dev,ops`, { method: 'POST' });
    assert.equal(set.status, 200);
    assert.deepEqual((await userinfo(meta, tokens.access_token)).body.groups, ['dev', 'ops']);
    await fetch(`${issuer}/__test/set-groups?user=john&groups=admins,dev`, { method: 'POST' });
    assert.equal((await fetch(`${issuer}/__test/set-groups?user=nobody`, { method: 'POST' })).status, 404);
  });

  test('access token expires after IDP_ACCESS_TOKEN_TTL, refresh still works', async () => {
    const { tokens, meta } = await login(issuer);
    await new Promise((r) => { setTimeout(r, 2500); });
    assert.equal((await userinfo(meta, tokens.access_token)).status, 401);
    const r = await refresh(meta, tokens.refresh_token);
    assert.equal(r.status, 200);
    assert.equal((await userinfo(meta, r.body.access_token)).status, 200);
  });
});

describe('test provider, IDP_ROTATE_REFRESH_TOKEN=0', async () => {
  const idp = await startIdp({ IDP_ROTATE_REFRESH_TOKEN: '0' });

  test('a refresh keeps the refresh token, which works again', async () => {
    const { tokens, meta } = await login(idp.url);
    const r1 = await refresh(meta, tokens.refresh_token);
    assert.equal(r1.status, 200, JSON.stringify(r1.body));
    assert.notEqual(r1.body.access_token, tokens.access_token);
    assert.ok([undefined, tokens.refresh_token].includes(r1.body.refresh_token), 'not rotated');
    const r2 = await refresh(meta, tokens.refresh_token);
    assert.equal(r2.status, 200, JSON.stringify(r2.body));
  });
});

describe('test provider, IDP_REFRESH_DELAY_MS', async () => {
  const after = await startIdp({ IDP_REFRESH_DELAY_MS: '800' });
  const before = await startIdp({ IDP_REFRESH_DELAY_MS: '800', IDP_REFRESH_DELAY_WHEN: 'before' });

  test('after: the answer comes late, but the old refresh token is spent at once', async () => {
    const { tokens, meta } = await login(after.url);
    const started = Date.now();
    const slow = refresh(meta, tokens.refresh_token);
    await new Promise((r) => { setTimeout(r, 300); });
    const again = await refresh(meta, tokens.refresh_token);
    assert.equal(again.status, 400, 'already rotated while the first answer is held');
    const r1 = await slow;
    assert.ok(Date.now() - started >= 800, 'held back');
    assert.equal(r1.status, 200, JSON.stringify(r1.body));
  });

  test('before: the grant is looked at only after the delay', async () => {
    const { tokens, meta } = await login(before.url);
    const started = Date.now();
    const r1 = await refresh(meta, tokens.refresh_token);
    assert.ok(Date.now() - started >= 800, 'held back');
    assert.equal(r1.status, 200, JSON.stringify(r1.body));
  });
});

describe('echo upstream', async () => {
  const echo = await start(path.join(HERE, '..', 'upstream', 'echo.mjs'), {}, 'ECHO_READY');

  test('echoes method, url, headers, body size', async () => {
    const res = await fetch(`${echo.url}/some/path?a=1&b=2`, {
      method: 'POST', headers: { 'Remote-User': 'x', 'x-multi': 'a' }, body: 'hello world',
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    const body = await res.json();
    assert.equal(body.method, 'POST');
    assert.equal(body.url, '/some/path?a=1&b=2');
    assert.equal(body.headers['remote-user'], 'x');
    assert.equal(body.bodyBytes, 11);
    assert.ok(body.rawHeaders.some(([k, v]) => k === 'Remote-User' && v === 'x'));
  });

  test('html for browsers, escaped', async () => {
    const res = await fetch(`${echo.url}/`, { headers: { accept: 'text/html,*/*;q=0.8', 'remote-name': '<script>alert(1)</script>' } });
    const html = await res.text();
    assert.match(res.headers.get('content-type'), /^text\/html/);
    assert.match(html, /portcullis demo upstream/);
    assert.ok(!html.includes('<script>alert(1)'));
    assert.ok(html.includes('&lt;script&gt;alert(1)&lt;/script&gt;'));
  });

  test('status and slow paths', async () => {
    assert.equal((await fetch(`${echo.url}/__status/418`)).status, 418);
    const t0 = Date.now();
    assert.equal((await fetch(`${echo.url}/__slow?ms=300`)).status, 200);
    assert.ok(Date.now() - t0 >= 290);
  });
});

// A minimal relying party (PAR + code + userinfo, one cookie) so that the
// headless browser script can be checked without portcullis.
// Listens first (port 0), learns the issuer later: the redirect URI must be
// known before the provider starts.
async function startMiniRp() {
  const http = await import('node:http');
  let base;
  let redirectUri;
  let issuer;
  let meta;
  const pending = new Map();
  const sessions = new Map();
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, base);
    const sid = /rp_sid=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
    const session = sid && sessions.get(sid);
    if (url.pathname === '/callback') {
      const p = pending.get(url.searchParams.get('state'));
      if (!p || url.searchParams.get('iss') !== issuer) {
        res.writeHead(400);
        return res.end('bad callback');
      }
      const tokens = await (await form(meta.token_endpoint, {
        grant_type: 'authorization_code', code: url.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: p.verifier,
      }, { authorization: BASIC })).json();
      const claims = (await userinfo(meta, tokens.access_token)).body;
      const id = rand();
      sessions.set(id, { claims, refreshToken: Boolean(tokens.refresh_token) });
      res.writeHead(303, { location: p.rd, 'set-cookie': `rp_sid=${id}; Path=/; HttpOnly; SameSite=Lax` });
      return res.end();
    }
    if (!session) {
      const verifier = rand();
      const state = rand();
      pending.set(state, { verifier, rd: url.pathname + url.search });
      const { request_uri: requestUri } = await (await form(meta.pushed_authorization_request_endpoint, {
        response_type: 'code', client_id: 'Express.js', redirect_uri: redirectUri,
        scope: 'openid profile email groups offline_access', state, nonce: rand(),
        code_challenge: b64url(crypto.createHash('sha256').update(verifier).digest()), code_challenge_method: 'S256',
      }, { authorization: BASIC })).json();
      res.writeHead(302, { location: `${meta.authorization_endpoint}?${new URLSearchParams({ client_id: 'Express.js', request_uri: requestUri })}` });
      return res.end();
    }
    const esc = (s) => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;');
    if (url.pathname === '/.auth/me') {
      if ((req.headers.accept ?? '').includes('application/json')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(JSON.stringify(session));
      }
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end(`<pre>${esc(JSON.stringify(session))}</pre>`);
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    return res.end(`<h1>hello ${esc(session.claims.name)}</h1><p>${esc(url.pathname)}</p>`);
  });
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  base = `http://127.0.0.1:${server.address().port}`;
  redirectUri = `${base}/callback`;
  return {
    url: base,
    redirectUri,
    async setIssuer(iss) {
      issuer = iss;
      meta = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    },
    close: () => { server.close(); server.closeAllConnections(); },
  };
}

function runLoginScript(args) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(HERE, '..', 'browser', 'login.mjs'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

const haveChromium = await import('node:fs').then((fs) => fs.existsSync(process.env.CHROMIUM_PATH || '/usr/bin/chromium'));

describe('headless browser login (tests/browser/login.mjs) against a mini RP', { skip: !haveChromium && 'no /usr/bin/chromium' }, async () => {
  const rp = await startMiniRp();
  // Before anything else can fail: an open server keeps the test process alive for good.
  after(() => rp.close());
  const idp = await startIdp({ IDP_REDIRECT_URIS: rp.redirectUri });
  await rp.setIssuer(idp.url);

  test('john signs in through the form and lands back on the protected page', async () => {
    const r = await runLoginScript([`${rp.url}/some/page?x=1`, 'john', 'password']);
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trim().split('\n');
    assert.equal(lines.length, 1);
    const result = JSON.parse(lines[0]);
    assert.equal(result.finalUrl, `${rp.url}/some/page?x=1`);
    assert.match(result.landingText, /hello John Doe/);
    assert.match(result.meText, /john@example\.com/);
    assert.deepEqual(result.meJson.claims.groups, ['admins', 'dev']);
    assert.equal(result.meJson.refreshToken, true);
  });

  test('a wrong password fails with exit 1 and a message', async () => {
    const r = await runLoginScript([`${rp.url}/`, 'john', 'wrong']);
    assert.equal(r.code, 1);
    assert.equal(r.out, '');
    assert.match(r.err, /Incorrect username or password/);
  });
});
