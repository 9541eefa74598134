// Loads the web example (examples/web, the tether client compiled to
// wasm32) in headless Chromium: live ticks arrive; when the feed's server
// stops, the page shows the reconnect attempts; when it is back, ticks
// flow again. Any uncaught page error, and any console error other than
// Chromium's own note about a refused WebSocket while the feed is down,
// fails the run. Screenshot: target/ui-screenshots/web-example.png.
//
//   node scripts/web-example-check.mjs PYTHON PORT   (scripts/web-example.sh --check runs it)
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(root, 'target/peers/node_modules/'));
const { chromium } = require('playwright-core');
const [python, port] = process.argv.slice(2);
const shots = path.join(root, 'target/ui-screenshots');
mkdirSync(shots, { recursive: true });

let server;
function startServer() {
  return new Promise((resolve, reject) => {
    const child = spawn(python, [path.join(root, 'scripts/peers/ticker_server.py'), path.join(root, 'examples/web'), port], { stdio: ['ignore', 'pipe', 'pipe'] });
    let seen = '';
    const onData = (d) => { seen += d; if (seen.includes('ready')) resolve(child); };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => reject(new Error(`ticker server exited with ${code}: ${seen}`)));
    setTimeout(() => reject(new Error(`ticker server did not start: ${seen}`)), 20000);
  });
}

const errors = [];
let feedDown = false;
let browser;
let failed = false;
try {
  server = await startServer();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
  const page = await browser.newPage();
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // Chromium's own line for a refused WebSocket, expected while the feed is down.
    if (feedDown && /WebSocket connection to .* failed/.test(m.text())) return;
    errors.push(`console error: ${m.text()}`);
  });
  await page.goto(`http://127.0.0.1:${port}/`);
  const ticks = async () => Number(((await page.textContent('#count')) || '0').split(' ')[0]) || 0;
  const until = async (what, check, ms = 15000) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (errors.length) throw new Error(errors.join('; '));
      if (await check()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out waiting for ${what}; status: ${await page.textContent('#status')}`);
  };
  const state = () => page.getAttribute('#status', 'data-state');

  await until('the feed to open', async () => (await state()) === 'open');
  await until('10 live ticks', async () => (await ticks()) >= 10);
  const rows = await page.locator('#ticks tr').count();
  if (rows !== 3) throw new Error(`expected a row for each of 3 symbols, saw ${rows}`);
  console.log(`ok   live: ${await page.textContent('#count')}, ${rows} symbols`);

  feedDown = true;
  const exited = new Promise((r) => server.once('exit', r));
  server.kill('SIGTERM');
  await exited;
  await until('the reconnect indicator', async () => (await state()) === 'reconnecting' && /attempt [0-9]+/.test(await page.textContent('#status')));
  const before = await ticks();
  console.log(`ok   feed stopped: "${await page.textContent('#status')}" at ${before} ticks`);
  await new Promise((r) => setTimeout(r, 1500));
  if ((await ticks()) !== before) throw new Error('ticks counted while the feed was down');

  server = await startServer();
  await until('the feed to reopen', async () => (await state()) === 'open', 20000);
  feedDown = false;
  await until('ticks after the reconnect', async () => (await ticks()) >= before + 5);
  console.log(`ok   reconnected: ${await page.textContent('#count')}`);
  await page.screenshot({ path: path.join(shots, 'web-example.png') });
  if (errors.length) throw new Error(errors.join('; '));
} catch (e) {
  failed = true;
  console.log(`FAIL web example: ${e.message}`);
} finally {
  if (browser) await browser.close();
  if (server && server.exitCode === null) server.kill('SIGTERM');
}
process.exit(failed ? 1 : 0);
