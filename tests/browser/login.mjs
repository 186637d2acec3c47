// Headless Chromium login through portcullis and the test provider.
//
//   node tests/browser/login.mjs <protected_url> <username> <password>
//
// Opens the protected URL (which redirects to the provider's login form), signs
// in, waits until the browser is back on the protected URL's origin, then reads
// <origin>/.auth/me as a page and as JSON (fetch from the page).
// Prints one JSON line on stdout: {"finalUrl","landingText","meText","meJson"}; exit 0.
// On failure: the error on stderr, exit 1. Hard timeout 60 s.
//
// Uses Debian's /usr/bin/chromium (override with CHROMIUM_PATH) and playwright-core
// from tests/idp/node_modules (installed by tests/setup.sh).

import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(HERE, '..', 'idp', 'package.json'));
const HARD_TIMEOUT_MS = 60_000;
const STEP_TIMEOUT_MS = 20_000;
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

let userDataDir;
let context;

function cleanup() {
  if (userDataDir) {
    try {
      fs.rmSync(userDataDir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
}

function fail(err) {
  process.stderr.write(`login.mjs: ${err?.stack ?? err}\n`);
  const done = () => {
    cleanup();
    process.exit(1);
  };
  if (context) {
    context.close().then(done, done);
    setTimeout(done, 5000).unref();
  } else {
    done();
  }
}

const hardTimer = setTimeout(() => fail(new Error(`hard timeout of ${HARD_TIMEOUT_MS / 1000}s reached`)), HARD_TIMEOUT_MS);
hardTimer.unref();

async function main() {
  const [protectedUrl, username, password] = process.argv.slice(2);
  if (!protectedUrl || username === undefined || password === undefined) {
    throw new Error('usage: node tests/browser/login.mjs <protected_url> <username> <password>');
  }
  const target = new URL(protectedUrl);
  const { origin } = target;

  const { chromium } = require('playwright-core');
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
    timeout: STEP_TIMEOUT_MS,
  });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  const page = context.pages()[0] ?? await context.newPage();

  await page.goto(protectedUrl, { waitUntil: 'load' });

  // the provider's login form (unless a session already exists)
  if (new URL(page.url()).origin !== origin || await page.locator('input[name="password"]').count() > 0) {
    await page.locator('input[name="username"]').fill(username);
    await page.locator('input[name="password"]').fill(password);
    const backHome = page.waitForURL((u) => u.origin === origin, { waitUntil: 'load' }).then(() => 'ok');
    const loginError = page.locator('#error').waitFor({ state: 'visible' }).then(() => 'error');
    backHome.catch(() => {});
    loginError.catch(() => {});
    await page.locator('form').first().evaluate((f) => f.requestSubmit());
    if (await Promise.race([backHome, loginError]) === 'error') {
      throw new Error(`login refused by the provider: ${await page.locator('#error').innerText()}`);
    }
    // a callback that answers with a page (not a redirect) instead: give it time to move on
    if (/callback/.test(new URL(page.url()).pathname)) {
      await page.waitForURL((u) => u.origin === origin && !/callback/.test(u.pathname), { waitUntil: 'load', timeout: 10_000 })
        .catch(() => {});
    }
  }

  const finalUrl = page.url();
  if (new URL(finalUrl).origin !== origin) {
    throw new Error(`ended on ${finalUrl}, not on ${origin}`);
  }
  const landingText = await page.locator('body').innerText();

  const meUrl = new URL('/.auth/me', origin).href;
  const meResponse = await page.goto(meUrl, { waitUntil: 'load' });
  if (!meResponse || meResponse.status() !== 200) {
    throw new Error(`${meUrl} answered ${meResponse?.status()}`);
  }
  const meText = await page.locator('body').innerText();

  // The dump page's Content-Security-Policy (default-src 'none') forbids fetch() from the
  // page itself, so read the JSON through the browser context: same cookies, no page CSP.
  const meRes = await context.request.get(meUrl, { headers: { Accept: 'application/json' } });
  const me = { status: meRes.status(), type: meRes.headers()['content-type'], text: await meRes.text() };
  if (me.status !== 200) throw new Error(`fetch ${meUrl} (Accept: application/json) answered ${me.status}: ${me.text.slice(0, 500)}`);
  let meJson;
  try {
    meJson = JSON.parse(me.text);
  } catch (err) {
    throw new Error(`fetch ${meUrl} did not return JSON (${me.type}): ${me.text.slice(0, 500)}`);
  }

  process.stdout.write(`${JSON.stringify({ finalUrl, landingText, meText, meJson })}\n`);
  await context.close();
  context = undefined;
  cleanup();
}

main().then(() => process.exit(0), fail);
