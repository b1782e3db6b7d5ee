// A CRM outage as an agent sees it, in a real browser (Debian's Chromium driven by
// playwright-core), against a running Switchboard at BASE_URL whose HubSpot answers 503: the
// customer CUSTOMER_EMAIL signed up during the outage. The agent (AGENT_EMAIL, PASSWORD) opens the
// customer in the console and sees the CRM sync as pending, with the next attempt's time and the
// error, in words; the script then writes RECOVER_FILE, the test brings HubSpot back, and the page
// (looked at again) shows the contact synced and the records in agreement. Fails on any request
// that leaves the machine, any console error, any unexpected error answer and any serious
// accessibility violation (axe-core); screenshots go to SCREENSHOT_DIR.

import { readFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
for (const v of ['BASE_URL', 'AGENT_EMAIL', 'PASSWORD', 'CUSTOMER_EMAIL', 'RECOVER_FILE']) {
  if (!process.env[v]) throw new Error(`${v} is not set`);
}
const base = process.env.BASE_URL;
const shots = process.env.SCREENSHOT_DIR || 'screenshots';
mkdirSync(shots, { recursive: true });
const axe = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const origin = new URL(base).origin;

const problems = [];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
let n = 0;
async function shot(page, name) {
  const text = await page.locator('body').innerText();
  const bad = text.match(/\[object \w+\]|undefined|NaN|\{"/);
  if (bad) problems.push(`${name}: the page shows "${bad[0]}"`);
  await page.evaluate(axe);
  const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  for (const v of r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')) {
    problems.push(`accessibility (${name}): ${v.id}: ${v.help}`);
  }
  await page.screenshot({ path: `${shots}/${String(++n).padStart(2, '0')}-${name}.png`, fullPage: true });
}

try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await ctx.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith('data:')) return route.continue();
    problems.push(`request left the machine: ${url}`);
    return route.abort();
  });
  const page = await ctx.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error on ${page.url()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error on ${page.url()}: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`unexpected ${r.status()} for ${r.request().method()} ${new URL(r.url()).pathname}`);
  });
  await page.goto(`${base}/app/login`);
  await page.getByLabel('Email').fill(process.env.AGENT_EMAIL);
  await page.getByLabel('Password').fill(process.env.PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Support queues', exact: true }).waitFor();
  await page.getByRole('link', { name: 'Customers', exact: true }).click();
  await page.getByLabel('Email, name or company').fill(process.env.CUSTOMER_EMAIL);
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('ul.tickets li a').first().click();
  await page.getByRole('heading', { name: 'CRM sync', exact: true }).waitFor();

  // During the outage: pending, said in words, with when it is tried next and why it failed.
  // (crm-sync's first failed attempt may still be on its way: look again until it has one)
  const pending = page.locator('[data-crm-status="pending"]', { hasText: /next attempt/i });
  for (let i = 0; i < 60 && !(await pending.count()); i++) {
    await page.waitForTimeout(500);
    await page.reload();
    await page.getByRole('heading', { name: 'CRM sync', exact: true }).waitFor();
  }
  const said = (await pending.count()) ? await pending.first().innerText() : await page.locator('main').innerText();
  if (!/pending/i.test(said) || !/next attempt/i.test(said)) problems.push(`the pending sync reads "${said}"`);
  // (the error HubSpot gave may say "unavailable"; the view itself must not say a service is)
  if (/is unavailable; .* unknown/.test(await page.locator('main').innerText())) problems.push('the customer view says a service is unavailable during a CRM outage');
  await shot(page, 'crm-sync-pending');

  // HubSpot comes back (the test does it); the sync catches up on its retry ladder.
  writeFileSync(process.env.RECOVER_FILE, 'seen pending\n');
  const synced = page.locator('[data-crm-status="synced"]');
  for (let i = 0; i < 120 && !(await synced.count()); i++) {
    await page.waitForTimeout(500);
    await page.reload();
    await page.getByRole('heading', { name: 'CRM sync', exact: true }).waitFor();
  }
  if (!(await synced.count())) problems.push('the CRM sync never showed as synced after HubSpot came back');
  await page.getByRole('heading', { name: 'Records agree', exact: true }).waitFor();
  await shot(page, 'crm-synced');
  await ctx.close();
} catch (e) {
  problems.push(`flow failed: ${e.message}`);
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log(`CRM outage flow ok; screenshots in ${shots}`);
