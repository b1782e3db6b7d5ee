// Lighthouse (mobile defaults: a phone-sized screen, throttled CPU and network) on the portal's
// pages, in Debian's Chromium, with every outside host unreachable. Fails unless performance,
// accessibility and best practices each score at least MIN_SCORE (0.95) on every page.
//
//   BASE_URL=... CUSTOMER_COOKIE='sb_session=...; sb_signed_in=1' AGENT_COOKIE=... ADMIN_COOKIE=...
//   TICKET_ID=... ACCOUNT_ID=... node tests/browser/lighthouse.mjs
//
// Pages: the login page (anonymous), the dashboard, billing and a ticket (the customer), the
// console's ticket queues (an agent), and the customer 360 with its billing history and refund
// form, and the operations view (an admin). Each report's scores are printed; the JSON reports go to
// REPORT_DIR when it is set.

import { mkdirSync, writeFileSync } from 'node:fs';
import * as chromeLauncher from 'chrome-launcher';
import lighthouse from 'lighthouse';

const base = process.env.BASE_URL;
if (!base) throw new Error('BASE_URL is not set');
const min = Number(process.env.MIN_SCORE || '0.95');
const reports = process.env.REPORT_DIR;
if (reports) mkdirSync(reports, { recursive: true });

const pages = [
  ['login', '/app/login', null],
  ['dashboard', '/app/', process.env.CUSTOMER_COOKIE],
  ['billing', '/app/billing', process.env.CUSTOMER_COOKIE],
  ['ticket', `/app/tickets/${process.env.TICKET_ID}`, process.env.CUSTOMER_COOKIE],
  ['console', '/app/console', process.env.AGENT_COOKIE],
  ['customer', `/app/console/customers/${process.env.ACCOUNT_ID}`, process.env.ADMIN_COOKIE],
  ['operations', '/app/console/ops', process.env.ADMIN_COOKIE],
];

const chrome = await chromeLauncher.launch({
  chromePath: process.env.CHROMIUM || '/usr/bin/chromium',
  chromeFlags: ['--headless=new', '--no-sandbox', "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
});
const failures = [];
try {
  for (const [name, path, cookie] of pages) {
    const flags = { port: chrome.port, output: 'json', logLevel: 'error', onlyCategories: ['performance', 'accessibility', 'best-practices'] };
    if (cookie) flags.extraHeaders = { Cookie: cookie };
    const result = await lighthouse(`${base}${path}`, flags);
    const lhr = result.lhr;
    if (lhr.runtimeError) failures.push(`${name}: ${lhr.runtimeError.code} ${lhr.runtimeError.message}`);
    const scores = Object.fromEntries(Object.values(lhr.categories).map((c) => [c.id, c.score]));
    const cls = lhr.audits['cumulative-layout-shift'] ? lhr.audits['cumulative-layout-shift'].numericValue : NaN;
    console.log(`${name.padEnd(10)} ${path.padEnd(52)} performance ${scores.performance} accessibility ${scores.accessibility} best-practices ${scores['best-practices']} CLS ${cls}`);
    for (const [id, score] of Object.entries(scores)) {
      if (!(score >= min)) {
        const failed = Object.values(lhr.audits).filter((a) => a.score !== null && a.score < 1 && a.scoreDisplayMode !== 'informative' && a.scoreDisplayMode !== 'notApplicable').map((a) => a.id);
        failures.push(`${name}: ${id} ${score} < ${min} (audits below 1: ${failed.join(', ')})`);
      }
    }
    if (reports) writeFileSync(`${reports}/${name}.json`, result.report);
  }
} finally {
  await chrome.kill();
}
if (failures.length) {
  console.error(failures.join('\n'));
  process.exit(1);
}
