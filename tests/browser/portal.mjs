// The customer portal in a real browser (Debian's Chromium driven by playwright-core), against a
// running Switchboard whose address is BASE_URL. A new customer on a phone-sized window signs up,
// sees "unpaid", pays with the local checkout, sees access turn active, and opens a ticket with a
// double click (one ticket). Fails on any request that leaves the machine, any Content-Security-
// Policy violation or console error, and any serious accessibility violation (axe-core). A
// screenshot of each state goes to SCREENSHOT_DIR. Then a support agent (AGENT_EMAIL,
// AGENT_PASSWORD) finds the ticket in its queue with its SLA clock, approves the AI draft, and the
// customer sees the answer in their thread; the customer is refused the console with a clear message.
//
//   BASE_URL=http://127.0.0.1:8080 AGENT_EMAIL=... AGENT_PASSWORD=... SCREENSHOT_DIR=/tmp/shots node tests/browser/portal.mjs

import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const base = process.env.BASE_URL;
const shots = process.env.SCREENSHOT_DIR || 'screenshots';
if (!base) throw new Error('BASE_URL is not set');
mkdirSync(shots, { recursive: true });
const axe = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const origin = new URL(base).origin;

const problems = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  // Anything that is not this Switchboard is refused and reported.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith('data:')) return route.continue();
    problems.push(`request left the machine: ${url}`);
    return route.abort();
  });
  // Failed requests are judged by their responses below; any other console error is a problem.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console error on ${page.url()}: ${m.text()}`);
  });
  // Every answer is a success, except the ones a step below expects (`expected` holds them).
  const expected = [];
  page.on('response', (r) => {
    const at = `${r.request().method()} ${new URL(r.url()).pathname}`;
    if (r.status() < 400) return;
    const i = expected.findIndex(([s, what]) => s === r.status() && what === at);
    if (i >= 0) expected.splice(i, 1);
    else problems.push(`unexpected ${r.status()} for ${at}`);
  });
  page.on('pageerror', (e) => problems.push(`page error on ${page.url()}: ${e.message}`));

  let n = 0;
  // Every state photographed is also read: no text a person should not see (a script's object
  // printed as text, a raw JSON body, "undefined").
  const readable = async (p, name) => {
    const text = await p.locator('body').innerText();
    const bad = text.match(/\[object \w+\]|undefined|NaN|\{"/);
    if (bad) problems.push(`${name}: the page shows "${bad[0]}"`);
  };
  const shot = async (name) => {
    await readable(page, name);
    await page.screenshot({ path: `${shots}/${String(++n).padStart(2, '0')}-${name}.png`, fullPage: true });
  };
  const accessible = async (what) => {
    await page.evaluate(axe);
    const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
    for (const v of r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')) {
      problems.push(`accessibility (${what}): ${v.id}: ${v.help} (${v.nodes.map((x) => x.target.join(' ')).join(', ')})`);
    }
  };
  const status = () => page.locator('[data-status]').getAttribute('data-status');

  // A visitor lands on the login page and goes on to sign up.
  await page.goto(`${base}/`);
  await page.getByRole('heading', { name: 'Log in' }).waitFor();
  await accessible('log in');
  await shot('login');
  await page.getByRole('link', { name: 'Create an account' }).click();
  await page.getByRole('heading', { name: 'Create your account' }).waitFor();
  // A short password is refused with the API's reason, shown as a sentence.
  const email = `browser-${Date.now()}@example.com`;
  await page.getByLabel('Your name', { exact: true }).fill('Ada Browser');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill('short');
  expected.push([422, 'POST /v1/signup']);
  await page.getByRole('button', { name: 'Create account' }).click();
  const err = page.getByRole('alert');
  await err.waitFor();
  const errText = await err.innerText();
  if (!/password/i.test(errText) || /[{}]/.test(errText)) problems.push(`a short password showed "${errText}"`);
  await accessible('sign up with an error');
  await shot('signup-error');
  await page.getByLabel('Password').fill('correct horse battery staple');
  // Every layout shift from here to the dashboard counts, user-triggered ones included.
  await page.evaluate(() => {
    window.shiftSum = 0;
    window.shifted = [];
    const add = (e) => {
      window.shiftSum += e.value;
      for (const s of e.sources || []) {
        const n = s.node;
        const what = n ? (n.id ? `#${n.id}` : n.nodeName ? `${n.nodeName.toLowerCase()}${n.className ? `.${n.className}` : ''}` : String(n)) : '?';
        window.shifted.push(`${what} ${JSON.stringify(s.previousRect)} -> ${JSON.stringify(s.currentRect)}`);
      }
    };
    window.shiftObserver = new PerformanceObserver((list) => { for (const e of list.getEntries()) add(e); });
    window.shiftObserver.observe({ type: 'layout-shift' });
  });
  await page.getByRole('button', { name: 'Create account' }).click();

  // Dashboard: unpaid, in plain words; nothing moved on the way from the form to it.
  await page.getByRole('heading', { name: 'Welcome, Ada Browser' }).waitFor();
  // After two more frames, every shift the dashboard's render caused has an entry: take any the
  // observer has not delivered yet as well.
  const shift = await page.evaluate(async () => {
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    window.shiftObserver.takeRecords().forEach((e) => window.shiftSum += e.value);
    return [window.shiftSum, window.shifted];
  });
  if (shift[0] !== 0) problems.push(`cumulative layout shift from sign-up to the dashboard: ${shift[0]} (${shift[1].join('; ')})`);
  if ((await status()) !== 'none') problems.push(`a new account shows access "${await status()}", not "none"`);
  await page.getByText('Unpaid: no plan yet').waitFor();
  await accessible('dashboard, unpaid');
  await shot('dashboard-unpaid');

  // Pay with the local checkout; back on the dashboard, access turns active by itself.
  await page.getByRole('button', { name: 'Choose plan and pay' }).click();
  await page.getByRole('heading', { name: 'Switchboard checkout' }).waitFor();
  await accessible('local checkout');
  await shot('checkout');
  await page.getByRole('button', { name: /^Pay / }).click();
  await page.getByRole('heading', { name: 'Payment received' }).waitFor();
  await shot('payment-received');
  await page.getByRole('link', { name: 'Back to your dashboard' }).click();
  await page.locator('[data-status="active"]').waitFor({ timeout: 30_000 });
  await page.getByText(/^Active: /).waitFor();
  await accessible('dashboard, active');
  await shot('dashboard-active');

  // Open a ticket; a double click on Send opens one.
  await page.getByRole('link', { name: 'Support' }).click();
  await page.getByRole('link', { name: 'Open a ticket' }).click();
  await page.getByLabel('Subject').fill('How do I export invoices?');
  await page.getByLabel('What is it about?').selectOption('billing');
  await page.getByLabel('Message').fill('I need last year\'s invoices as a spreadsheet.');
  await page.getByRole('button', { name: 'Send' }).dblclick();
  await page.getByRole('heading', { name: 'How do I export invoices?' }).waitFor();
  await page.getByText('I need last year\'s invoices as a spreadsheet.').waitFor();
  await accessible('ticket');
  await shot('ticket');
  await page.getByRole('link', { name: 'All your tickets' }).click();
  await page.getByRole('heading', { name: 'Your tickets' }).waitFor();
  const listed = await page.locator('ul.tickets li').count();
  if (listed !== 1) problems.push(`a double-clicked Send listed ${listed} tickets, not 1`);
  await accessible('ticket list');
  await shot('tickets');

  const ticketUrl = await page.locator('ul.tickets li a').first().getAttribute('href');

  // A customer who opens a console address is told, in words, that it is not for them.
  await page.goto(`${base}/app/console`);
  await page.getByRole('heading', { name: 'Not allowed' }).waitFor();
  await shot('customer-refused-console');

  // The agent, on a desktop-sized window: the queue, the ticket with its clock, the AI draft.
  if (process.env.AGENT_EMAIL) {
    const agentCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await agentCtx.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(origin) || url.startsWith('data:')) return route.continue();
      problems.push(`request left the machine: ${url}`);
      return route.abort();
    });
    const agent = await agentCtx.newPage();
    agent.on('pageerror', (e) => problems.push(`page error on ${agent.url()}: ${e.message}`));
    await agent.goto(`${base}/app/login`);
    await agent.getByLabel('Email').fill(process.env.AGENT_EMAIL);
    await agent.getByLabel('Password').fill(process.env.AGENT_PASSWORD);
    await agent.getByRole('button', { name: 'Log in' }).click();
    await agent.getByRole('heading', { name: 'Support queues' }).waitFor();
    await readable(agent, 'agent-queues');
    await agent.screenshot({ path: `${shots}/${String(++n).padStart(2, '0')}-agent-queues.png`, fullPage: true });
    await agent.getByRole('link', { name: 'Billing' }).click();
    await agent.getByRole('link', { name: 'How do I export invoices?' }).click();
    await agent.getByRole('heading', { name: 'How do I export invoices?' }).waitFor();
    await agent.getByText('First response').waitFor();
    // The local drafter answers within seconds; the page shows "pending" until then.
    const approve = agent.getByRole('button', { name: 'Approve and send' });
    for (let i = 0; i < 60 && !(await approve.isVisible()); i++) {
      await agent.waitForTimeout(500);
      await agent.reload();
      await agent.getByRole('heading', { name: 'How do I export invoices?' }).waitFor();
    }
    await readable(agent, 'agent-ticket-with-draft');
    await agent.screenshot({ path: `${shots}/${String(++n).padStart(2, '0')}-agent-ticket-with-draft.png`, fullPage: true });
    const drafted = await agent.locator('#draft-body').inputValue();
    if (!drafted.trim()) problems.push('the AI draft was empty');
    await approve.click();
    await agent.getByText('No draft waiting.').waitFor();

    // The customer 360: found by email, every id side by side, records in agreement.
    await agent.getByRole('link', { name: 'Customers' }).click();
    await agent.getByLabel('Email, name or company').fill(email);
    await agent.getByRole('button', { name: 'Search' }).click();
    await agent.getByRole('link', { name: 'Ada Browser' }).click();
    await agent.getByRole('heading', { name: 'Every id' }).waitFor();
    // The CRM catches up through events: look again until it has (the page does not poll).
    const synced = agent.locator('[data-crm-status="synced"]');
    for (let i = 0; i < 60 && !(await synced.count()); i++) {
      await agent.waitForTimeout(500);
      await agent.reload();
      await agent.getByRole('heading', { name: 'Every id' }).waitFor();
    }
    if (!(await synced.count())) problems.push('the customer view never showed the CRM sync as synced');
    await agent.getByRole('heading', { name: 'Records agree' }).waitFor();
    const ids = await agent.locator('dl.facts').innerText();
    if (!/cus_/.test(ids)) problems.push(`the customer view shows no Stripe customer id: ${ids}`);
    await readable(agent, 'agent-customer-360');
    await agent.screenshot({ path: `${shots}/${String(++n).padStart(2, '0')}-agent-customer-360.png`, fullPage: true });
    await agentCtx.close();

    // The customer sees the answer.
    await page.goto(`${base}${ticketUrl}`);
    await page.locator('ol.thread li.support').first().waitFor();
    const answer = await page.locator('ol.thread li.support .body').first().innerText();
    if (answer.trim() !== drafted.trim()) problems.push(`the customer saw "${answer}", not the approved draft`);
    await accessible('ticket with an answer');
    await shot('customer-sees-answer');
  }

  // Every customer page, opened by its address, draws its page; another account's ticket is "not
  // found" in words, never its content.
  for (const path of ['/app/', '/app/billing', '/app/tickets', '/app/tickets/new', '/app/profile']) {
    await page.goto(`${base}${path}`);
    await page.locator('main h1').waitFor();
    const title = await page.locator('main h1').innerText();
    if (/Something went wrong|Not allowed|Page not found/.test(title)) problems.push(`${path} shows "${title}"`);
  }
  if (process.env.OTHER_TICKET_ID) {
    expected.push([404, `GET /v1/tickets/${process.env.OTHER_TICKET_ID}`]);
    await page.goto(`${base}/app/tickets/${process.env.OTHER_TICKET_ID}`);
    await page.getByText('We could not find that. It may have been removed, or it belongs to another account.').waitFor();
    await shot('other-accounts-ticket-refused');
  }

  // Log out: the portal asks for a login again.
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('heading', { name: 'Log in' }).waitFor();
  await page.goto(`${base}/app/billing`);
  await page.getByRole('heading', { name: 'Log in' }).waitFor();
  await shot('logged-out');
} catch (e) {
  problems.push(`flow failed: ${e.message}`);
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log(`portal flow ok; screenshots in ${shots}`);
