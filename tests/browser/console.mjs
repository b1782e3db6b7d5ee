// The admin's console in a real browser (Debian's Chromium driven by playwright-core), against a
// running Switchboard whose address is BASE_URL, with one unreadable event parked in billing's
// DLQ and a paying customer (CUSTOMER_EMAIL) already there. An admin (ADMIN_EMAIL) sees the
// parked message in the operations view, runs a dry run of a replay (nothing moves), replays it
// (billing parks it again), purges it with the service's name as confirmation, reads the customer's welcome email in the embedded
// mailbox, downloads the customer's billing history as CSV, acts as the customer under an
// always-visible banner until they stop, and refunds the customer's payment with a double click
// (one refund; the access ends, per the default refund policy). An agent (AGENT_EMAIL) is refused
// the operations view and offered neither the export, a refund nor impersonation, then reads the API reference at /docs (the
// vendored Swagger UI; its own markup is not checked with axe). Fails on any request that leaves the machine,
// any CSP violation or console error, any unexpected error answer and any serious accessibility
// violation (axe-core); a screenshot of each state goes to SCREENSHOT_DIR.
//
//   BASE_URL=... ADMIN_EMAIL=... AGENT_EMAIL=... PASSWORD=... CUSTOMER_EMAIL=... node tests/browser/console.mjs

import { readFileSync } from 'node:fs';
import { env, start } from './harness.mjs';

const { ADMIN_EMAIL, AGENT_EMAIL, PASSWORD, CUSTOMER_EMAIL } = env('ADMIN_EMAIL', 'AGENT_EMAIL', 'PASSWORD', 'CUSTOMER_EMAIL');
const { base, problems, open, shot, until, run } = await start();

await run(async () => {
  const { ctx, page } = await open(ADMIN_EMAIL, PASSWORD);

  // Operations: billing's DLQ holds the parked message.
  await page.getByRole('link', { name: 'Operations' }).click();
  await page.getByRole('heading', { name: 'Operations', exact: true }).waitFor();
  const billingRow = page.locator('tr[data-service="billing"]');
  await billingRow.getByRole('link', { name: '1 parked' }).waitFor();
  await shot(page, 'ops-overview');
  await billingRow.getByRole('link', { name: '1 parked' }).click();
  await page.getByRole('heading', { name: 'Parked messages: billing', exact: true }).waitFor();
  await page.getByText('stripe.event.received.v1').first().waitFor();
  await shot(page, 'ops-parked');

  // A dry run of a replay by event type: the count, the message, and nothing moved.
  const replay = page.locator('section', { has: page.getByRole('heading', { name: 'Replay', exact: true }) });
  await replay.getByLabel('One event type').check();
  await replay.getByLabel(/Event id, account id or event type/).fill('stripe.event.received.v1');
  await replay.getByRole('button', { name: 'Replay' }).click();
  await page.getByRole('heading', { name: 'Dry run: 1 message would be replayed', exact: true }).waitFor();
  await shot(page, 'ops-replay-dry-run');
  // Replay it for real: billing still cannot read it, so it is parked again (once).
  await replay.getByLabel('Replay now').check();
  await replay.getByRole('button', { name: 'Replay' }).click();
  await page.getByText('Replayed 1: every parked stripe.event.received.v1 message in billing.').waitFor();
  await shot(page, 'ops-replayed');
  // Billing parks it again within moments; the page does not poll, so look again until it shows.
  const parkedAgain = page.locator('ol[aria-label="Parked messages"] li strong');
  if (!(await until(page, parkedAgain, page.getByRole('heading', { name: 'Parked messages: billing', exact: true })))) {
    problems.push('the replayed message never came back to the DLQ');
  }

  // Purge for good, confirmed by typing the service's name.
  const purge = page.locator('section', { has: page.getByRole('heading', { name: 'Purge', exact: true }) });
  await purge.getByLabel('Delete now').check();
  await purge.getByLabel('Type billing to confirm').fill('billing');
  await purge.getByRole('button', { name: 'Purge' }).click();
  await page.getByText('Deleted 1: ALL parked messages of billing.').waitFor();
  await page.getByText('Nothing parked.').waitFor();
  await shot(page, 'ops-purged');

  // The embedded mailbox: the customer's welcome email.
  await page.getByRole('link', { name: 'Mailbox' }).click();
  await page.getByRole('heading', { name: 'Mailbox', exact: true }).waitFor();
  await page.getByLabel('Recipient').fill(CUSTOMER_EMAIL);
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.locator('ol.tickets li').first().waitFor();
  await page.locator('ol.tickets li summary').first().click();
  await shot(page, 'mailbox');

  // The customer 360: billing history, its CSV, and acting as the customer.
  await page.getByRole('link', { name: 'Customers' }).click();
  await page.getByLabel('Email, name or company').fill(CUSTOMER_EMAIL);
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('ul.tickets li a').first().click();
  await page.getByRole('heading', { name: 'Billing history', exact: true }).waitFor();
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download billing history (CSV)' }).click()]);
  const csv = readFileSync(await download.path(), 'utf8');
  if (!csv.startsWith('record,at,id,status,plan,amount_due,amount_paid,currency,detail')) problems.push(`the CSV starts ${csv.slice(0, 80)}`);
  if (!/ -> active,/.test(csv)) problems.push('the CSV has no access change to active');
  await shot(page, 'customer-billing-history');
  const act = page.locator('section', { has: page.getByRole('heading', { name: 'Act as a customer', exact: true }) });
  await act.getByLabel('Reason').fill('checking what the customer sees (browser test)');
  await act.getByRole('button', { name: 'Act as this customer' }).click();
  const banner = page.locator('#banner');
  await banner.getByText(`You are viewing the portal as ${CUSTOMER_EMAIL}`).waitFor();
  await page.getByRole('heading', { name: /^Welcome/ }).waitFor();
  await shot(page, 'impersonating-dashboard');
  await page.getByRole('link', { name: 'Billing', exact: true }).click();
  await page.getByRole('heading', { name: 'Billing', exact: true }).waitFor();
  if (!(await banner.isVisible())) problems.push('the impersonation banner disappeared on another page');
  await page.getByRole('button', { name: 'Stop acting as this customer' }).click();
  await page.getByRole('heading', { name: 'Billing history', exact: true }).waitFor();
  if (await banner.isVisible()) problems.push('the banner stayed after impersonation ended');
  await page.getByRole('link', { name: 'Operations' }).waitFor();
  await shot(page, 'impersonation-ended');

  // A refund, double-clicked: one refund is made; the access follows the policy (a full refund
  // ends it) once billing has applied Stripe's charge.refunded.
  const refundForm = page.locator('section', { has: page.getByRole('heading', { name: 'Refund a payment', exact: true }) });
  await refundForm.getByLabel('Reason').fill('charged twice (browser test)');
  await shot(page, 'refund-form');
  await refundForm.getByRole('button', { name: 'Refund', exact: true }).dblclick();
  await page.locator('tr[data-refund-status="succeeded"]').waitFor();
  const accessSection = page.locator('section', { has: page.getByRole('heading', { name: 'Access', exact: true }) });
  if (!(await until(page, accessSection.getByText(/^Access ended: charge refunded/), page.getByRole('heading', { name: 'Billing history', exact: true })))) {
    problems.push('the access did not end after the full refund');
  }
  const refundRows = await page.locator('tr[data-refund-status]').count();
  if (refundRows !== 1) problems.push(`a double click made ${refundRows} refunds`);
  if (await page.getByRole('heading', { name: 'Refund a payment', exact: true }).count()) problems.push('a refunded payment is still offered for a refund');
  await shot(page, 'refund-access-ended');

  // Every staff page, opened by its address, draws its page (no outside request, no error).
  const customerPage = new URL(page.url()).pathname;
  for (const path of ['/app/console', '/app/console/queues/billing', '/app/console/customers', customerPage, '/app/console/ops',
    '/app/console/ops/billing', '/app/console/mailbox', '/app/profile']) {
    await page.goto(`${base}${path}`);
    await page.locator('main h1').waitFor();
    const title = await page.locator('main h1').innerText();
    if (/Something went wrong|Not allowed|Page not found/.test(title)) problems.push(`${path} shows "${title}"`);
  }
  await page.goto(`${base}/app/no/such/page`);
  await page.getByRole('heading', { name: 'Page not found', exact: true }).waitFor();
  await ctx.close();

  // An agent: no operations view, no export, no impersonation.
  const agent = await open(AGENT_EMAIL, PASSWORD);
  if (await agent.page.getByRole('link', { name: 'Operations' }).count()) problems.push('an agent is offered the operations view');
  await agent.page.goto(`${base}/app/console/ops`);
  await agent.page.getByRole('heading', { name: 'Not allowed', exact: true }).waitFor();
  await agent.page.getByText('This page is for admins.').waitFor();
  await shot(agent.page, 'agent-refused-operations');
  await agent.page.getByRole('link', { name: 'Customers' }).click();
  await agent.page.getByLabel('Email, name or company').fill(CUSTOMER_EMAIL);
  await agent.page.getByRole('button', { name: 'Search' }).click();
  await agent.page.locator('ul.tickets li a').first().click();
  await agent.page.getByRole('heading', { name: 'Billing history', exact: true }).waitFor();
  if (await agent.page.getByRole('link', { name: 'Download billing history (CSV)' }).count()) problems.push('an agent is offered the billing export');
  if (await agent.page.getByRole('heading', { name: 'Act as a customer', exact: true }).count()) problems.push('an agent is offered impersonation');
  if (await agent.page.getByRole('heading', { name: 'Refund a payment', exact: true }).count()) problems.push('an agent is offered a refund');
  // Asked directly from the console's own page, the API refuses the agent's role too (not the
  // cross-site check): 403 "forbidden". That one 403 is expected, so it is not a problem.
  const refundPath = new URL(agent.page.url()).pathname.replace('/app/console/customers/', '/v1/admin/accounts/') + '/billing/refunds';
  const refused = await agent.page.evaluate(async (path) => {
    const r = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ invoice_id: 'in_x', reason: 'agent tries' }) });
    return `${r.status} ${(await r.json()).code}`;
  }, refundPath);
  if (refused !== '403 forbidden') problems.push(`an agent's refund answered ${refused}, not 403 forbidden`);
  const expected = problems.indexOf(`unexpected 403 for POST ${refundPath}`);
  if (expected >= 0) problems.splice(expected, 1);
  // The API reference: served by the gateway itself, under the same policy, nothing from elsewhere.
  await agent.page.goto(`${base}/docs`);
  await agent.page.getByText('/v1/signup').first().waitFor();
  await agent.page.getByText('/v1/admin/ops/queues').first().waitFor();
  await shot(agent.page, 'api-docs', { a11y: false });
  await agent.ctx.close();
}, 'console flow ok');
