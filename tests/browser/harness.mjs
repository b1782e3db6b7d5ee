// What the browser scripts share: Debian's Chromium (never a downloaded one), a context that
// refuses and reports any request leaving this Switchboard, a page that reports console errors,
// page errors and error answers, and a check of each state photographed (no text a person should
// not see; axe-core's serious and critical violations).

import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const axe = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export function env(...names) {
  for (const v of names) if (!process.env[v]) throw new Error(`${v} is not set`);
  return Object.fromEntries(names.map((v) => [v, process.env[v]]));
}

export async function start() {
  const base = env('BASE_URL').BASE_URL;
  const shots = process.env.SCREENSHOT_DIR || 'screenshots';
  mkdirSync(shots, { recursive: true });
  const origin = new URL(base).origin;
  const problems = [];
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
  let n = 0;

  // A desktop-sized context, signed in as `email` when given; its page is returned.
  async function open(email, password) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
    await ctx.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(origin) || url.startsWith('data:')) return route.continue();
      problems.push(`request left the machine: ${url}`);
      return route.abort();
    });
    const page = await ctx.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console error on ${page.url()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error on ${page.url()}: ${e.message}`));
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`unexpected ${r.status()} for ${r.request().method()} ${new URL(r.url()).pathname}`);
    });
    if (email) {
      await page.goto(`${base}/app/login`);
      await page.getByLabel('Email').fill(email);
      await page.getByLabel('Password').fill(password);
      await page.getByRole('button', { name: 'Log in' }).click();
      await page.getByRole('heading', { name: 'Support queues', exact: true }).waitFor();
    }
    return { ctx, page };
  }

  async function shot(page, name, { a11y = true } = {}) {
    const text = await page.locator('body').innerText();
    const bad = text.match(/\[object \w+\]|undefined|NaN|\{"/);
    if (bad) problems.push(`${name}: the page shows "${bad[0]}"`);
    if (a11y) {
      await page.evaluate(axe);
      const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
      for (const v of r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')) {
        problems.push(`accessibility (${name}): ${v.id}: ${v.help} (${v.nodes.map((x) => x.target.join(' ')).join(', ')})`);
      }
    }
    await page.screenshot({ path: `${shots}/${String(++n).padStart(2, '0')}-${name}.png`, fullPage: true });
  }

  // Reloads `page` until `locator` shows (at most `tries` half-seconds): for states that arrive
  // through events while the page does not poll. `ready` is awaited after each reload.
  async function until(page, locator, ready, tries = 60) {
    for (let i = 0; i < tries && !(await locator.count()); i++) {
      await page.waitForTimeout(500);
      await page.reload();
      await ready.waitFor();
    }
    return (await locator.count()) > 0;
  }

  // Runs the flow; exits non-zero with every problem found, or prints `ok`.
  async function run(flow, ok) {
    try {
      await flow();
    } catch (e) {
      problems.push(`flow failed: ${e.message}`);
    } finally {
      await browser.close();
    }
    if (problems.length) {
      console.error(problems.join('\n'));
      process.exit(1);
    }
    console.log(`${ok}; screenshots in ${shots}`);
  }

  return { base, problems, open, shot, until, run };
}
