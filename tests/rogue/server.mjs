// A small hand-written, misbehaving OpenID Provider for portcullis's forged-token
// tests (design.md §5 and §6 "Hardening"). Authelia-like metadata, PAR, no login
// form: the authorization endpoint answers at once with a code. Each ROGUE_MODE is
// one deviation from a correct provider; `honest` has none.
//
//   ROGUE_REDIRECT_URI=http://localhost:4180/callback ROGUE_MODE=honest node tests/rogue/server.mjs
//
// Environment: ROGUE_PORT (0 = any free port), ROGUE_MODE (default honest),
// ROGUE_REDIRECT_URI (when set, PAR refuses any other redirect_uri), ROGUE_ACCESS_TTL
// (access-token lifetime in seconds, default 300). With `offline_access` in the scope,
// refresh tokens are issued and rotated at each refresh, as Authelia does; a refreshed
// ID token keeps the login's auth_time and nonce (OIDC Core §12.2) except in the
// `refresh-*` modes.
// Prints one line on stdout when ready: `ROGUE_READY http://127.0.0.1:<port>` (its issuer).
// Test control: GET /__rogue/last → the last code and tokens issued (for "never shown"
// checks); GET /__rogue/stats → request counts per endpoint; POST
// /__rogue/token-outage?kind=reset|unavailable|off → an outage of the token endpoint in any
// mode, until turned off: `reset` drops each connection unanswered, `unavailable` answers
// 503 `temporarily_unavailable`; either before looking at the request, so no code is spent.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

// jose comes with the test provider's node_modules (a dependency of oidc-provider).
const idpRequire = createRequire(new URL('../idp/package.json', import.meta.url));
const jose = await import(pathToFileURL(idpRequire.resolve('jose')).href);

const MODES = [
  'honest', 'alg-none', 'wrong-key', 'hs256-confusion', 'wrong-iss', 'wrong-aud',
  'multi-aud-no-azp', 'expired', 'future-iat', 'wrong-nonce', 'missing-nonce',
  'bad-at-hash', 'callback-wrong-iss', 'callback-no-iss', 'userinfo-sub-mismatch',
  'token-error', 'token-garbage', 'slow-token', 'unknown-kid',
  'refresh-other-auth-time', 'refresh-other-nonce',
];
const MODE = process.env.ROGUE_MODE || 'honest';
if (!MODES.includes(MODE)) die(`unknown ROGUE_MODE ${JSON.stringify(MODE)}; one of ${MODES.join(', ')}`);
const PORT = Number(process.env.ROGUE_PORT || 0);
const REDIRECT_URI = process.env.ROGUE_REDIRECT_URI || '';
const ACCESS_TTL = Number(process.env.ROGUE_ACCESS_TTL || 300);
const CLIENT_ID = 'Express.js';
const CLIENT_SECRET = 'insecure_secret';
const SUBJECT = 'rogue-subject-7f3a';
const KID = 'rogue-key-1';

function die(msg) {
  process.stderr.write(`rogue: ${msg}\n`);
  process.exit(2);
}
const log = (...p) => process.stderr.write(`rogue[${MODE}]: ${p.join(' ')}\n`);
const b64u = (buf) => Buffer.from(buf).toString('base64url');
const random = () => b64u(crypto.randomBytes(32));

// The published key, and another one that is not published (wrong-key).
const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const stranger = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const publicJwk = { ...publicKey.export({ format: 'jwk' }), kid: KID, use: 'sig', alg: 'RS256' };
const publicPem = publicKey.export({ format: 'pem', type: 'spki' });

const pushed = new Map(); // request_uri → PAR params
const codes = new Map(); // code → PAR params
const accessTokens = new Map(); // access token → subject
const refreshTokens = new Map(); // refresh token → { p: PAR params, authTime }
const stats = {
  discovery: 0, jwks: 0, par: 0, authorization: 0, token: 0, refresh: 0, userinfo: 0, revocation: 0,
};
let last = {};
let issuer = '';
const OUTAGES = ['off', 'reset', 'unavailable'];
let tokenOutage = 'off';

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const type = typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json';
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...headers });
  res.end(text);
}
const oauthError = (res, status, error, description) =>
  send(res, status, { error, error_description: description });

function readForm(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

// client_secret_basic: id and secret form-urlencoded, then base64 (RFC 6749 §2.3.1).
function clientAuthenticated(req) {
  const m = /^Basic (.+)$/i.exec(req.headers.authorization || '');
  if (!m) return false;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const at = decoded.indexOf(':');
  if (at < 0) return false;
  const dec = (s) => decodeURIComponent(s.replaceAll('+', ' '));
  return dec(decoded.slice(0, at)) === CLIENT_ID && dec(decoded.slice(at + 1)) === CLIENT_SECRET;
}

const sha256 = (s) => crypto.createHash('sha256').update(s).digest();
const atHash = (token) => b64u(sha256(token).subarray(0, 16));

// The ID token of this mode for a login whose PAR params are `p`, authenticated at
// `authTime`; `refreshed` for one answering a refresh grant.
async function idToken(p, accessToken, authTime, refreshed = false) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer, sub: SUBJECT, aud: CLIENT_ID, iat: now, exp: now + 300, auth_time: authTime,
    nonce: p.get('nonce'), at_hash: atHash(accessToken), amr: ['pwd'],
  };
  if (refreshed) {
    // Another authentication's token: what §12.2 has the client refuse.
    if (MODE === 'refresh-other-auth-time') claims.auth_time = authTime - 600;
    if (MODE === 'refresh-other-nonce') claims.nonce = random();
    return new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: KID }).sign(privateKey);
  }
  switch (MODE) {
    case 'wrong-iss': claims.iss = 'http://127.0.0.1:1/not-the-issuer'; break;
    case 'wrong-aud': claims.aud = 'another-client'; break;
    case 'multi-aud-no-azp': claims.aud = [CLIENT_ID, 'other']; break;
    case 'expired': claims.iat = now - 3700; claims.auth_time = now - 3700; claims.exp = now - 3600; break;
    case 'future-iat': claims.iat = now + 3600; claims.exp = now + 3900; break;
    case 'wrong-nonce': claims.nonce = random(); break;
    case 'missing-nonce': delete claims.nonce; break;
    case 'bad-at-hash': claims.at_hash = atHash(`${accessToken}-not`); break;
    default: break;
  }
  if (MODE === 'alg-none') {
    return `${b64u(JSON.stringify({ alg: 'none', typ: 'JWT', kid: KID }))}.${b64u(JSON.stringify(claims))}.`;
  }
  if (MODE === 'hs256-confusion') {
    // The classic key-confusion forgery: HMAC keyed with the public key's PEM text.
    return new jose.SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid: KID })
      .sign(new TextEncoder().encode(publicPem));
  }
  // wrong-key: an unpublished key under the published kid; unknown-kid: under a kid
  // the JWKS never has (portcullis re-fetches the JWKS once, then must refuse).
  const key = ['wrong-key', 'unknown-kid'].includes(MODE) ? stranger.privateKey : privateKey;
  const kid = MODE === 'unknown-kid' ? 'rogue-key-2' : KID;
  return new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid }).sign(key);
}

async function par(req, res) {
  stats.par += 1;
  if (!clientAuthenticated(req)) return oauthError(res, 401, 'invalid_client', 'client authentication failed');
  const p = await readForm(req);
  const problem =
    (p.get('client_id') && p.get('client_id') !== CLIENT_ID && 'client_id') ||
    (p.get('response_type') !== 'code' && 'response_type') ||
    (REDIRECT_URI && p.get('redirect_uri') !== REDIRECT_URI && 'redirect_uri') ||
    (!(p.get('scope') || '').split(' ').includes('openid') && 'scope') ||
    (p.get('code_challenge_method') !== 'S256' && 'code_challenge_method') ||
    (!/^[A-Za-z0-9_-]{43}$/.test(p.get('code_challenge') || '') && 'code_challenge') ||
    ((p.get('state') || '').length < 8 && 'state') ||
    ((p.get('nonce') || '').length < 8 && 'nonce');
  if (problem) return oauthError(res, 400, 'invalid_request', `bad or missing ${problem}`);
  const requestUri = `urn:ietf:params:oauth:request_uri:${random()}`;
  pushed.set(requestUri, p);
  return send(res, 201, { request_uri: requestUri, expires_in: 60 });
}

function authorize(url, res) {
  stats.authorization += 1;
  const p = pushed.get(url.searchParams.get('request_uri') || '');
  if (!p || url.searchParams.get('client_id') !== CLIENT_ID) {
    return send(res, 400, 'unknown request_uri or client_id');
  }
  pushed.delete(url.searchParams.get('request_uri'));
  const code = random();
  codes.set(code, p);
  last = { code };
  const target = new URL(p.get('redirect_uri'));
  target.searchParams.set('code', code);
  target.searchParams.set('state', p.get('state'));
  if (MODE === 'callback-wrong-iss') target.searchParams.set('iss', 'https://evil.example');
  else if (MODE !== 'callback-no-iss') target.searchParams.set('iss', issuer);
  res.writeHead(302, { location: target.href, 'cache-control': 'no-store' });
  return res.end();
}

async function token(req, res) {
  stats.token += 1;
  if (tokenOutage === 'reset') {
    log('token request dropped unanswered (outage)');
    return req.socket.destroy();
  }
  if (tokenOutage === 'unavailable') return oauthError(res, 503, 'temporarily_unavailable', 'down for maintenance');
  if (!clientAuthenticated(req)) return oauthError(res, 401, 'invalid_client', 'client authentication failed');
  const f = await readForm(req);
  if (f.get('grant_type') === 'refresh_token') return refresh(f, res);
  if (f.get('grant_type') !== 'authorization_code') return oauthError(res, 400, 'unsupported_grant_type', 'grant_type');
  const p = codes.get(f.get('code') || '');
  codes.delete(f.get('code') || ''); // one use, even when the rest is wrong
  if (!p) return oauthError(res, 400, 'invalid_grant', 'unknown or used code');
  if (f.get('redirect_uri') !== p.get('redirect_uri')) return oauthError(res, 400, 'invalid_grant', 'redirect_uri');
  if (b64u(sha256(f.get('code_verifier') || '')) !== p.get('code_challenge')) {
    return oauthError(res, 400, 'invalid_grant', 'PKCE verification failed');
  }
  switch (MODE) {
    case 'token-error': return oauthError(res, 400, 'invalid_grant', 'the rogue refuses this code');
    case 'token-garbage':
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end('<html><body>Bad Gateway? {"access_token": oops</body></html>');
    case 'slow-token':
      log('token request held for 35 s');
      return setTimeout(() => oauthError(res, 503, 'temporarily_unavailable', 'too late'), 35_000).unref();
    default: break;
  }
  return issue(res, p, Math.floor(Date.now() / 1000), false);
}

// Tokens for a login (`refreshed` false) or a refresh grant; a refresh token when the
// login asked for offline_access.
async function issue(res, p, authTime, refreshed) {
  const accessToken = `rogue-at-${random()}`;
  accessTokens.set(accessToken, SUBJECT);
  const id = await idToken(p, accessToken, authTime, refreshed);
  const body = {
    access_token: accessToken, token_type: 'Bearer', expires_in: ACCESS_TTL, id_token: id, scope: p.get('scope'),
  };
  if ((p.get('scope') || '').split(' ').includes('offline_access')) {
    body.refresh_token = `rogue-rt-${random()}`;
    refreshTokens.set(body.refresh_token, { p, authTime });
  }
  last = { ...last, access_token: accessToken, id_token: id, refresh_token: body.refresh_token };
  return send(res, 200, body);
}

// Refresh grant: single use, rotated (Authelia's behaviour).
function refresh(f, res) {
  stats.refresh += 1;
  const grant = refreshTokens.get(f.get('refresh_token') || '');
  refreshTokens.delete(f.get('refresh_token') || '');
  if (!grant) return oauthError(res, 400, 'invalid_grant', 'unknown or used refresh token');
  return issue(res, grant.p, grant.authTime, true);
}

function userinfo(req, res) {
  stats.userinfo += 1;
  const m = /^Bearer (.+)$/i.exec(req.headers.authorization || '');
  const sub = m && accessTokens.get(m[1]);
  if (!sub) {
    return send(res, 401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
  }
  return send(res, 200, {
    sub: MODE === 'userinfo-sub-mismatch' ? 'somebody-else' : sub,
    name: 'Rogue User', preferred_username: 'rogue', email: 'rogue@example.com', email_verified: true,
    groups: ['rogues', 'testers'],
  });
}

function discovery() {
  return {
    issuer,
    authorization_endpoint: `${issuer}/api/oidc/authorization`,
    token_endpoint: `${issuer}/api/oidc/token`,
    userinfo_endpoint: `${issuer}/api/oidc/userinfo`,
    jwks_uri: `${issuer}/jwks.json`,
    revocation_endpoint: `${issuer}/api/oidc/revocation`,
    pushed_authorization_request_endpoint: `${issuer}/api/oidc/pushed-authorization-request`,
    require_pushed_authorization_requests: false,
    authorization_response_iss_parameter_supported: true,
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
    userinfo_signing_alg_values_supported: ['none', 'RS256'],
    token_endpoint_auth_methods_supported: ['client_secret_basic'],
    code_challenge_methods_supported: ['S256'],
    scopes_supported: ['openid', 'profile', 'email', 'groups', 'offline_access'],
    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'nonce', 'at_hash', 'name', 'email', 'groups'],
  };
}

async function handle(req, res) {
  const url = new URL(req.url, issuer);
  const route = `${req.method} ${url.pathname}`;
  log(route);
  switch (route) {
    case 'GET /.well-known/openid-configuration': stats.discovery += 1; return send(res, 200, discovery());
    case 'GET /jwks.json': stats.jwks += 1; return send(res, 200, { keys: [publicJwk] });
    case 'POST /api/oidc/pushed-authorization-request': return par(req, res);
    case 'GET /api/oidc/authorization': return authorize(url, res);
    case 'POST /api/oidc/token': return token(req, res);
    case 'GET /api/oidc/userinfo': return userinfo(req, res);
    case 'POST /api/oidc/revocation': stats.revocation += 1; await readForm(req); return send(res, 200, '');
    case 'GET /__rogue/last': return send(res, 200, last);
    case 'GET /__rogue/stats': return send(res, 200, stats);
    case 'POST /__rogue/token-outage': {
      const kind = url.searchParams.get('kind') || '';
      if (!OUTAGES.includes(kind)) return send(res, 400, `kind is one of ${OUTAGES.join(', ')}`);
      tokenOutage = kind;
      return send(res, 200, { token_outage: kind });
    }
    default: return send(res, 404, 'not found');
  }
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    log(`error: ${e.stack || e}`);
    if (!res.headersSent) send(res, 500, 'rogue provider bug');
  });
});
server.listen(PORT, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  process.stdout.write(`ROGUE_READY ${issuer}\n`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
