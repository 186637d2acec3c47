// Test OpenID Provider for portcullis, configured like an Authelia 4.39 client
// (see /work/shared/design.md §3 and the Authelia notes).
//
//   IDP_REDIRECT_URIS=http://127.0.0.1:4180/callback node tests/idp/server.mjs
//
// Prints exactly one line on stdout when ready: `IDP_READY http://127.0.0.1:<port>`
// (`https://…` when serving TLS, see IDP_TLS_CERT).
// Everything else (request log, provider errors) goes to stderr.
//
// Environment:
//   IDP_PORT                 listen port on 127.0.0.1 (default 0 = any free port)
//   IDP_REDIRECT_URIS        comma-separated, exact-match redirect URIs (required)
//   IDP_CLIENT_ID            default "Express.js"
//   IDP_CLIENT_SECRET        default "insecure_secret"
//   IDP_ACCESS_TOKEN_TTL     seconds, default 3600
//   IDP_ID_TOKEN_TTL         seconds, default 3600
//   IDP_REFRESH_TOKEN_TTL    seconds, default 5400
//   IDP_CLAIMS_IN_ID_TOKEN   0 (default, Authelia 4.39: profile/email/groups only in userinfo)
//                            1 (Authelia 4.38: those claims also in the ID token)
//   IDP_REQUIRE_PAR          1 (default: the client must use PAR) or 0 (PAR optional)
//   IDP_ROTATE_REFRESH_TOKEN 1 (default, as Authelia: each refresh issues a new refresh token)
//                            or 0 (the same one is used again, as many other providers do)
//   IDP_REFRESH_DELAY_MS     answer each refresh grant this many ms late (default 0)
//   IDP_REFRESH_DELAY_WHEN   after (default: the grant is carried out at once, the old refresh
//                            token is already spent when the answer leaves, as when the answer
//                            is slow on its way back) or before (the provider is stuck before
//                            it looks at the grant)
//   IDP_QUIET                1 = no request log on stderr
//   IDP_TLS_CERT, IDP_TLS_KEY  PEM files: serve https with this certificate (and its chain)
//                            and key, and make the issuer https://127.0.0.1:<port> (both or
//                            neither; default plain http)
//
// Test control endpoints (not part of the provider):
//   GET  /__test/stats                  {"par":N,"authorization_code":N,"refresh_token":N,"userinfo":N,"revocation":N}
//   POST /__test/reset-stats
//   POST /__test/revoke-refresh-tokens  every refresh token issued so far becomes invalid
//   POST /__test/set-groups?user=U&groups=a,b   the user's groups from now on (as when an
//                                       administrator changes them in Authelia's user database)

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

import Provider from 'oidc-provider';

// ---------------------------------------------------------------------------
// configuration from the environment

function envInt(name, dflt) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    die(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  }
  return n;
}

function envBool(name, dflt) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  if (['1', 'true', 'yes', 'on'].includes(raw.toLowerCase())) return true;
  if (['0', 'false', 'no', 'off'].includes(raw.toLowerCase())) return false;
  return die(`${name} must be 0 or 1, got ${JSON.stringify(raw)}`);
}

function die(msg) {
  process.stderr.write(`idp: ${msg}\n`);
  process.exit(2);
}

const PORT = envInt('IDP_PORT', 0);
const HOST = '127.0.0.1';
const REDIRECT_URIS = (process.env.IDP_REDIRECT_URIS ?? '')
  .split(',').map((s) => s.trim()).filter(Boolean);
if (REDIRECT_URIS.length === 0) die('IDP_REDIRECT_URIS is required (comma-separated list)');
const CLIENT_ID = process.env.IDP_CLIENT_ID || 'Express.js';
const CLIENT_SECRET = process.env.IDP_CLIENT_SECRET || 'insecure_secret';
const ACCESS_TOKEN_TTL = envInt('IDP_ACCESS_TOKEN_TTL', 3600);
const ID_TOKEN_TTL = envInt('IDP_ID_TOKEN_TTL', 3600);
const REFRESH_TOKEN_TTL = envInt('IDP_REFRESH_TOKEN_TTL', 5400);
const CLAIMS_IN_ID_TOKEN = envBool('IDP_CLAIMS_IN_ID_TOKEN', false);
const REQUIRE_PAR = envBool('IDP_REQUIRE_PAR', true);
const ROTATE_REFRESH_TOKEN = envBool('IDP_ROTATE_REFRESH_TOKEN', true);
const REFRESH_DELAY_MS = envInt('IDP_REFRESH_DELAY_MS', 0);
const TLS_CERT = process.env.IDP_TLS_CERT || '';
const TLS_KEY = process.env.IDP_TLS_KEY || '';
if (Boolean(TLS_CERT) !== Boolean(TLS_KEY)) die('IDP_TLS_CERT and IDP_TLS_KEY go together');
const REFRESH_DELAY_WHEN = process.env.IDP_REFRESH_DELAY_WHEN || 'after';
if (!['after', 'before'].includes(REFRESH_DELAY_WHEN)) die('IDP_REFRESH_DELAY_WHEN is after or before');
const QUIET = envBool('IDP_QUIET', false);
const SCOPES = ['openid', 'profile', 'email', 'groups', 'offline_access'];

// IDP_REFRESH_DELAY_MS: hold a refresh grant before it is looked at, or hold its answer
// (oidc-provider answers with one `res.end`) after the grant is carried out.
async function delayRefresh(res) {
  if (REFRESH_DELAY_WHEN === 'before') {
    await new Promise((resolve) => { setTimeout(resolve, REFRESH_DELAY_MS); });
    return;
  }
  const end = res.end.bind(res);
  res.end = (...args) => {
    setTimeout(() => end(...args), REFRESH_DELAY_MS);
    return res;
  };
}

function log(...parts) {
  if (!QUIET) process.stderr.write(`idp: ${parts.join(' ')}\n`);
}

// ---------------------------------------------------------------------------
// users

const USERS = {
  john: {
    sub: '5b0e7b0c-3c9f-4d57-9a44-1f1f8e1c0a01',
    password: 'password',
    claims: {
      preferred_username: 'john',
      name: 'John Doe',
      email: 'john@example.com',
      email_verified: true,
      groups: ['admins', 'dev'],
    },
  },
  harry: {
    sub: '9d2c4a6e-8b1f-4c3a-b5e7-2a2b3c4d5e02',
    password: 'password',
    claims: {
      preferred_username: 'harry',
      name: 'Harry Potter',
      email: 'harry@example.com',
      email_verified: true,
      groups: ['dev'],
    },
  },
  mallory: {
    sub: 'e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a03',
    password: 'password',
    claims: {
      preferred_username: 'mallory',
      name: '<script>alert("pwned")</script>',
      email: 'mallory@example.com',
      email_verified: true,
      groups: ['<b>bold</b>', 'dev'],
    },
  },
  // another domain, and an address the provider has not verified (access-policy tests)
  carol: {
    sub: '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e04',
    password: 'password',
    claims: {
      preferred_username: 'carol',
      name: 'Carol Contractor',
      email: 'carol@example.org',
      email_verified: false,
      groups: ['guests'],
    },
  },
};
const USERS_BY_SUB = new Map(Object.values(USERS).map((u) => [u.sub, u]));

async function findAccount(_ctx, sub) {
  const user = USERS_BY_SUB.get(sub);
  if (!user) return undefined;
  return {
    accountId: sub,
    // the provider filters these by granted scopes / claims and by where they go
    async claims() {
      return { sub, ...user.claims };
    },
  };
}

// ---------------------------------------------------------------------------
// storage: a small in-memory adapter (unbounded-by-count, expiring) that also
// lets the test endpoint drop every refresh token.

const store = new Map(); // key -> { value, exp (ms epoch) | undefined }
const GRANTABLE = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode',
]);

function storeGet(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.exp !== undefined && entry.exp <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.value;
}

function storeSet(key, value, expiresIn) {
  const exp = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
  store.set(key, { value, exp });
}

class TestAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    storeSet(key, payload, expiresIn);
    if (this.model === 'Session' && payload.uid) {
      storeSet(`sessionUid:${payload.uid}`, id, expiresIn);
    }
    if (payload.userCode) {
      storeSet(`userCode:${payload.userCode}`, id, expiresIn);
    }
    if (GRANTABLE.has(this.model) && payload.grantId) {
      const gkey = `grant:${payload.grantId}`;
      const members = storeGet(gkey) ?? new Set();
      members.add(key);
      storeSet(gkey, members, undefined);
    }
  }

  async find(id) {
    return storeGet(this.key(id));
  }

  async findByUid(uid) {
    const id = storeGet(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = storeGet(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const value = storeGet(this.key(id));
    if (value) value.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const gkey = `grant:${grantId}`;
    const members = storeGet(gkey);
    if (members) for (const key of members) store.delete(key);
    store.delete(gkey);
  }
}

function revokeAllRefreshTokens() {
  let n = 0;
  for (const key of [...store.keys()]) {
    if (key.startsWith('RefreshToken:')) {
      store.delete(key);
      n += 1;
    }
  }
  return n;
}

// sweep expired entries once a minute so long-running demos stay small
setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) {
    if (entry.exp !== undefined && entry.exp <= now) store.delete(key);
  }
  for (const [key, entry] of store) {
    if (key.startsWith('grant:')) {
      for (const member of entry.value) if (!store.has(member)) entry.value.delete(member);
      if (entry.value.size === 0) store.delete(key);
    }
  }
}, 60_000).unref();

// ---------------------------------------------------------------------------
// statistics for the tests

function zeroStats() {
  return { par: 0, authorization_code: 0, refresh_token: 0, userinfo: 0, revocation: 0 };
}
let stats = zeroStats();

// ---------------------------------------------------------------------------
// small HTTP helpers

function escapeHtml(s) {
  return String(s)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function send(res, status, type, body, extraHeaders = {}) {
  const buf = Buffer.from(body);
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': buf.length,
    'Cache-Control': 'no-store',
    ...extraHeaders,
  });
  res.end(buf);
}

function sendJson(res, status, obj) {
  send(res, status, 'application/json', `${JSON.stringify(obj)}\n`);
}

const BODY_LIMIT = 56 * 1024;

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > BODY_LIMIT) throw Object.assign(new Error('request body too large'), { status: 413 });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function isFormPost(req) {
  return req.method === 'POST'
    && (req.headers['content-type'] ?? '').toLowerCase().startsWith('application/x-www-form-urlencoded');
}

// ---------------------------------------------------------------------------
// login page

function loginPage({ uid, clientId, scope, username = '', error }) {
  const errorHtml = error
    ? `<p class="error" role="alert" id="error">${escapeHtml(error)}</p>`
    : '';
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sign in - portcullis test provider</title>
<style>
body { font-family: sans-serif; max-width: 26em; margin: 4em auto; }
label { display: block; margin-top: 1em; }
input { width: 100%; padding: .4em; box-sizing: border-box; }
button { margin-top: 1.5em; padding: .5em 2em; }
.error { color: #b00; font-weight: bold; }
.hint { color: #666; font-size: .9em; }
</style>
</head>
<body>
<h1>Sign in</h1>
<p class="hint">Test provider (configured like Authelia). Client <code>${escapeHtml(clientId)}</code> asks for <code>${escapeHtml(scope ?? '')}</code>.</p>
${errorHtml}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<label for="username">Username</label>
<input id="username" name="username" type="text" value="${escapeHtml(username)}" autofocus required>
<label for="password">Password</label>
<input id="password" name="password" type="password" required>
<button type="submit" id="sign-in">Sign in</button>
</form>
<p class="hint">Users: john / password, harry / password, mallory / password, carol / password</p>
</body>
</html>
`;
}

function errorPage(title, detail) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body><h1>${escapeHtml(title)}</h1><p>${escapeHtml(detail)}</p></body></html>
`;
}

// ---------------------------------------------------------------------------
// automatic consent: grant every requested scope and claim (Authelia with
// pre-configured consent; also gives offline_access without prompt=consent)

async function autoConsentGrant(provider, details, accountId) {
  const { params, prompt } = details;
  let grant;
  if (details.grantId) grant = await provider.Grant.find(details.grantId);
  if (!grant || grant.accountId !== accountId) {
    grant = new provider.Grant({ accountId, clientId: params.client_id });
  }
  if (params.scope) grant.addOIDCScope(params.scope);
  const missing = prompt?.details ?? {};
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  if (params.claims) {
    try {
      const claims = typeof params.claims === 'string' ? JSON.parse(params.claims) : params.claims;
      const names = new Set([
        ...Object.keys(claims?.id_token ?? {}),
        ...Object.keys(claims?.userinfo ?? {}),
      ]);
      if (names.size) grant.addOIDCClaims([...names]);
    } catch {
      // the provider already validated the claims parameter
    }
  }
  return grant.save();
}

async function handleInteraction(provider, req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    log('interaction lookup failed:', err.name, err.message);
    return send(res, 400, 'text/html; charset=utf-8',
      errorPage('Login session not found', 'The login attempt expired or its cookie is missing. Go back to the application and sign in again.'));
  }
  if (details.uid !== uid) {
    return send(res, 400, 'text/html; charset=utf-8',
      errorPage('Login session mismatch', 'This login form does not belong to the current login attempt.'));
  }
  const { prompt, params } = details;

  if (action === undefined && req.method === 'GET') {
    if (prompt.name === 'login') {
      return send(res, 200, 'text/html; charset=utf-8',
        loginPage({ uid, clientId: params.client_id, scope: params.scope }));
    }
    if (prompt.name === 'consent') {
      const grantId = await autoConsentGrant(provider, details, details.session.accountId);
      log('auto-consent for', details.session.accountId, 'scopes', params.scope);
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    return send(res, 400, 'text/html; charset=utf-8', errorPage('Unsupported prompt', prompt.name));
  }

  if (action === 'login' && req.method === 'POST') {
    if (!isFormPost(req)) {
      return send(res, 415, 'text/plain; charset=utf-8', 'expected application/x-www-form-urlencoded\n');
    }
    const form = new URLSearchParams(await readBody(req));
    const username = form.get('username') ?? '';
    const password = form.get('password') ?? '';
    const user = Object.hasOwn(USERS, username) ? USERS[username] : undefined;
    const ok = user !== undefined
      && crypto.timingSafeEqual(
        crypto.createHash('sha256').update(password).digest(),
        crypto.createHash('sha256').update(user.password).digest(),
      );
    if (!ok) {
      log('login failed for', JSON.stringify(username));
      return send(res, 200, 'text/html; charset=utf-8', loginPage({
        uid, clientId: params.client_id, scope: params.scope, username,
        error: 'Incorrect username or password.',
      }));
    }
    const grantId = await autoConsentGrant(provider, { ...details, grantId: undefined }, user.sub);
    log('login ok for', username, 'scopes', params.scope);
    return provider.interactionFinished(req, res, {
      login: { accountId: user.sub, amr: ['pwd'], remember: true },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  }

  return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
}

// ---------------------------------------------------------------------------
// Authelia checks that oidc-provider does not do: state / nonce entropy

const MIN_ENTROPY = 8;

function entropyError(params) {
  const state = params.get('state');
  if (state === null || state.length < MIN_ENTROPY) {
    // Authelia (fosite) requires a state of at least 8 characters
    return {
      error: 'invalid_state',
      error_description: "The state is missing or does not have enough characters and is therefore considered too weak. Request parameter 'state' must be at least '8' characters long.",
    };
  }
  const nonce = params.get('nonce');
  if (nonce !== null && nonce.length < MIN_ENTROPY) {
    return {
      error: 'insufficient_entropy',
      error_description: "The request used a security parameter (e.g., anti-replay, anti-csrf) with insufficient entropy. Parameter 'nonce' is set but does not have enough characters: it must be at least '8' characters long.",
    };
  }
  return undefined;
}

// oidc-provider drops offline_access from any authorization request without
// prompt=consent. Authelia, too, forces a consent step for offline_access (even
// with pre-configured consent); here that step is auto-approved by the
// interaction handler. So: add `consent` to the prompt when offline_access is
// requested (unless prompt=none). Returns true when it changed the parameters.
function consentForOfflineAccess(params) {
  const scopes = (params.get('scope') ?? '').split(' ');
  if (!scopes.includes('offline_access')) return false;
  const prompts = (params.get('prompt') ?? '').split(' ').filter(Boolean);
  if (prompts.includes('consent') || prompts.includes('none')) return false;
  params.set('prompt', [...prompts, 'consent'].join(' '));
  return true;
}

// ---------------------------------------------------------------------------
// routes (Authelia's paths, relative to the issuer)

const ROUTES = {
  authorization: '/api/oidc/authorization',
  pushed_authorization_request: '/api/oidc/pushed-authorization-request',
  token: '/api/oidc/token',
  userinfo: '/api/oidc/userinfo',
  introspection: '/api/oidc/introspection',
  revocation: '/api/oidc/revocation',
  jwks: '/jwks.json',
};

// ---------------------------------------------------------------------------
// server

let provider; // set once the port is known (the issuer contains it)
let callback;

const handler = async (req, res) => {
  const started = Date.now();
  res.on('finish', () => {
    log(req.method, req.url.length > 200 ? `${req.url.slice(0, 200)}...` : req.url, '->', res.statusCode, `${Date.now() - started}ms`);
  });
  try {
    if (!provider) return send(res, 503, 'text/plain', 'starting\n');
    const url = new URL(req.url, 'http://127.0.0.1');
    const path = url.pathname;

    // test control endpoints
    if (path === '/__test/stats' && req.method === 'GET') return sendJson(res, 200, stats);
    if (path === '/__test/reset-stats' && req.method === 'POST') {
      stats = zeroStats();
      return sendJson(res, 200, stats);
    }
    if (path === '/__test/revoke-refresh-tokens' && req.method === 'POST') {
      const revoked = revokeAllRefreshTokens();
      log('revoked', revoked, 'refresh tokens');
      return sendJson(res, 200, { revoked });
    }
    if (path === '/__test/set-groups' && req.method === 'POST') {
      const name = url.searchParams.get('user');
      if (!Object.hasOwn(USERS, name)) return sendJson(res, 404, { error: 'no such user' });
      USERS[name].claims.groups = (url.searchParams.get('groups') ?? '').split(',').filter(Boolean);
      return sendJson(res, 200, { groups: USERS[name].claims.groups });
    }
    if (path.startsWith('/__test/')) return sendJson(res, 404, { error: 'not_found' });

    // login UI
    const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?\/?$/.exec(path);
    if (m) return await handleInteraction(provider, req, res, m[1], m[2]);

    if (path === '/' && req.method === 'GET') {
      return send(res, 200, 'text/plain; charset=utf-8',
        `portcullis test OpenID Provider\nissuer: ${provider.issuer}\ndiscovery: ${provider.issuer}/.well-known/openid-configuration\nusers: john, harry, mallory, carol (password: password)\n`);
    }

    // provider endpoints; count them and pre-read the body where we need it
    if (path === ROUTES.pushed_authorization_request) {
      stats.par += 1;
      if (isFormPost(req)) {
        const params = new URLSearchParams(await readBody(req));
        const err = entropyError(params);
        if (err) {
          log('PAR refused:', err.error);
          return sendJson(res, 400, err);
        }
        consentForOfflineAccess(params);
        req.body = params.toString(); // oidc-provider uses an already-read body (warns once)
      }
    } else if (path === ROUTES.token) {
      if (isFormPost(req)) {
        const body = await readBody(req);
        req.body = body;
        const grantType = new URLSearchParams(body).get('grant_type');
        if (grantType === 'authorization_code') stats.authorization_code += 1;
        else if (grantType === 'refresh_token') {
          stats.refresh_token += 1;
          if (REFRESH_DELAY_MS > 0) await delayRefresh(res);
        }
      }
    } else if (path === ROUTES.userinfo) {
      stats.userinfo += 1;
    } else if (path === ROUTES.revocation) {
      stats.revocation += 1;
    } else if (path === ROUTES.authorization && !url.searchParams.has('request_uri') && req.method === 'GET') {
      const err = entropyError(url.searchParams);
      if (err && url.searchParams.has('client_id')) {
        log('authorization refused:', err.error);
        return send(res, 400, 'text/html; charset=utf-8', errorPage(err.error, err.error_description));
      }
      if (consentForOfflineAccess(url.searchParams)) req.url = `${url.pathname}?${url.searchParams}`;
    }
    return callback(req, res);
  } catch (err) {
    process.stderr.write(`idp: internal error: ${err.stack ?? err}\n`);
    if (!res.headersSent) {
      return send(res, err.status ?? 500, 'text/plain', `${err.message}\n`);
    }
    return res.destroy();
  }
};

const server = TLS_CERT
  ? https.createServer({ cert: fs.readFileSync(TLS_CERT), key: fs.readFileSync(TLS_KEY) }, handler)
  : http.createServer(handler);

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  const issuer = `${TLS_CERT ? 'https' : 'http'}://${HOST}:${port}`;

  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };

  const configuration = {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      client_name: 'portcullis (test)',
      redirect_uris: REDIRECT_URIS,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      scope: SCOPES.join(' '),
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
      require_pushed_authorization_requests: REQUIRE_PAR,
    }],
    adapter: TestAdapter,
    findAccount,
    jwks: { keys: [jwk] },
    cookies: {
      // plain http: no Secure flag (oidc-provider only sets it when the request is https)
      names: { session: 'idp_session', interaction: 'idp_interaction', resume: 'idp_interaction_resume' },
      long: { httpOnly: true, sameSite: 'lax' },
      short: { httpOnly: true, sameSite: 'lax' },
      keys: [crypto.randomBytes(32).toString('base64url')],
    },
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: SCOPES,
    // Authelia 4.39: the ID token only has sub + protocol claims; 4.38: scope claims too
    conformIdTokenClaims: !CLAIMS_IN_ID_TOKEN,
    // Authelia always publishes the global flag (false by default); a client-level
    // requirement (IDP_REQUIRE_PAR=1) does not show up here, exactly as in Authelia
    discovery: { require_pushed_authorization_requests: false },
    responseTypes: ['code'],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: false },
      revocation: { enabled: true, allowedPolicy: async () => true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
      claimsParameter: { enabled: true },
      rpInitiatedLogout: { enabled: false }, // Authelia has no end_session_endpoint
      resourceIndicators: { enabled: false }, // opaque access tokens for userinfo
    },
    routes: ROUTES,
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    // refresh tokens whenever offline_access was granted (no prompt=consent needed)
    issueRefreshToken: async (_ctx, client, code) => client.grantTypeAllowed('refresh_token')
      && code.scopes.has('offline_access'),
    rotateRefreshToken: ROTATE_REFRESH_TOKEN,
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      AuthorizationCode: 60,
      IdToken: ID_TOKEN_TTL,
      RefreshToken: REFRESH_TOKEN_TTL,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>oops! something went wrong</title></head>
<body><h1>oops! something went wrong</h1>
${Object.entries(out).map(([k, v]) => `<pre><strong>${escapeHtml(k)}</strong>: ${escapeHtml(v)}</pre>`).join('\n')}
</body></html>
`;
    },
  };

  provider = new Provider(issuer, configuration);
  provider.proxy = false;

  for (const event of [
    'server_error', 'authorization.error', 'grant.error', 'pushed_authorization_request.error',
    'userinfo.error', 'revocation.error', 'introspection.error', 'jwks.error', 'discovery.error',
    'check_session_origin.error', 'end_session.error', 'backchannel.error',
  ]) {
    provider.on(event, (ctx, err) => {
      const e = err ?? ctx;
      log(`${event}:`, e?.name ?? '', e?.message ?? '', e?.error_description ?? '', e?.error_detail ? `(${e.error_detail})` : '');
    });
  }
  provider.on('grant.success', (ctx) => {
    log('grant.success', ctx.oidc?.params?.grant_type ?? '');
  });

  callback = provider.callback();
  process.stdout.write(`IDP_READY ${issuer}\n`);
  log('client', CLIENT_ID, 'redirect_uris', REDIRECT_URIS.join(' '),
    'require_par', REQUIRE_PAR, 'claims_in_id_token', CLAIMS_IN_ID_TOKEN,
    'ttl at/id/rt', ACCESS_TOKEN_TTL, ID_TOKEN_TTL, REFRESH_TOKEN_TTL);
});

server.on('error', (err) => die(`listen failed: ${err.message}`));

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
