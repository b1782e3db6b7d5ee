// Switchboard customer portal. A small single-page app over the gateway's /v1 REST API: no
// framework, no build step, no inline script (the page's Content-Security-Policy forbids it).
// Every element is built with DOM calls (never innerHTML), so nothing the API returns can
// become markup.

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const banner = document.getElementById('banner');

// ---------------------------------------------------------------------------------------------
// DOM helper: h('p', {class: 'x'}, 'text', child, ...)

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// A table that scrolls sideways on a narrow screen: a labelled region that takes keyboard focus,
// so keyboard users can scroll it too.
function tableWrap(label, table) {
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': label }, table);
}

function link(href, text, attrs = {}) {
  return h('a', { href, 'data-link': true, ...attrs }, text);
}

// ---------------------------------------------------------------------------------------------
// The API. Errors become an ApiError whose message is safe and meant for a person; the raw
// body is never shown.

class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function messageFor(status, problem, retryAfter) {
  const detail = problem && typeof problem.detail === 'string' ? problem.detail : '';
  const title = problem && typeof problem.title === 'string' ? problem.title : '';
  switch (status) {
    case 401:
      return 'Your session has ended. Please log in again.';
    case 403:
      return 'You do not have permission to do that.';
    case 404:
      return 'We could not find that. It may have been removed, or it belongs to another account.';
    case 429:
      return `Too many attempts. Please wait ${retryAfter || 'a few'} seconds and try again.`;
    case 502:
    case 503:
    case 504:
      return 'Switchboard is temporarily unavailable. Nothing was lost; please try again in a moment.';
    default:
      if (status >= 500) return 'Something went wrong on our side. Please try again; if it keeps happening, contact support.';
      if (detail) return sentence(detail);
      if (title) return sentence(title);
      return `The request was not accepted (error ${status}).`;
  }
}

function sentence(s) {
  const t = s.trim();
  if (!t) return t;
  const first = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

// An admin acting as a customer: the impersonation session's token, kept for this tab only
// (sessionStorage) and sent as a Bearer token, so the admin's own cookie session is untouched and
// every other tab stays the admin's. It lives at most the impersonation's lifetime (15 minutes by
// default); the page's CSP runs no script but ours.
const IMPERSONATION_KEY = 'sb_impersonation';
function impersonation() {
  try {
    return JSON.parse(sessionStorage.getItem(IMPERSONATION_KEY) || 'null');
  } catch {
    return null;
  }
}
function endImpersonation() {
  sessionStorage.removeItem(IMPERSONATION_KEY);
  session.me = null;
  session.loaded = false;
}

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { accept: 'application/json', ...headers }, credentials: 'same-origin' };
  const acting = impersonation();
  if (acting) init.headers.authorization = `Bearer ${acting.token}`;
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch {
    throw new ApiError('We could not reach Switchboard. Check your connection and try again.', 0, 'network');
  }
  if (r.status === 204) return null;
  const type = r.headers.get('content-type') || '';
  const data = type.includes('json') ? await r.json().catch(() => null) : null;
  if (!r.ok) {
    const err = new ApiError(messageFor(r.status, data, r.headers.get('retry-after')), r.status, data && data.code);
    if (r.status === 401 && acting) {
      // The impersonation ended (expired or revoked): back to the admin's own session.
      endImpersonation();
    } else if (r.status === 401 && !path.startsWith('/v1/login') && !path.startsWith('/v1/signup')) {
      session.me = null;
      document.cookie = 'sb_signed_in=; Path=/; Max-Age=0; SameSite=Strict';
    }
    throw err;
  }
  return data;
}

// ---------------------------------------------------------------------------------------------
// Session and navigation

const session = { me: null, loaded: false };

// The gateway sets `sb_signed_in=1` (no secret) beside the HttpOnly session cookie: without it
// there is no session to ask about.
function maybeSignedIn() {
  return !!impersonation() || document.cookie.split(';').some((c) => c.trim() === 'sb_signed_in=1');
}

async function loadMe() {
  if (!maybeSignedIn()) {
    session.me = null;
    session.loaded = true;
    return null;
  }
  try {
    session.me = await api('GET', '/v1/me');
  } catch (e) {
    if (e.status !== 401) throw e;
    session.me = null;
  }
  session.loaded = true;
  return session.me;
}

function go(path, replace = false) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  render();
}

document.addEventListener('click', (ev) => {
  const a = ev.target.closest && ev.target.closest('a[data-link]');
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  ev.preventDefault();
  go(a.getAttribute('href'));
});
window.addEventListener('popstate', () => render());

function drawNav(path) {
  const items = !session.me
    ? [['/app/login', 'Log in'], ['/app/signup', 'Sign up']]
    : isStaff()
      ? [['/app/console', 'Queues'], ['/app/console/customers', 'Customers'],
        ...(isAdmin() ? [['/app/console/ops', 'Operations'], ['/app/console/mailbox', 'Mailbox']] : []), ['/app/profile', 'Profile']]
      : [['/app/', 'Dashboard'], ['/app/billing', 'Billing'], ['/app/tickets', 'Support'], ['/app/profile', 'Profile']];
  const links = items.map(([href, text]) => link(href, text, { 'aria-current': current(path, href) ? 'page' : null }));
  if (session.me && !impersonation()) links.push(h('button', { type: 'button', onclick: logOut }, 'Log out'));
  nav.replaceChildren(...links);
  const imp = session.me && session.me.impersonated_by;
  if (imp) {
    banner.hidden = false;
    const acting = impersonation();
    banner.replaceChildren(
      `You are viewing the portal as ${session.me.user ? session.me.user.email : 'this user'}, on behalf of ${imp.name || imp.email}. Everything you do is recorded in the audit log. `,
      acting ? h('button', { type: 'button', class: 'secondary', onclick: stopImpersonating }, 'Stop acting as this customer') : null);
  } else {
    banner.hidden = true;
    banner.replaceChildren();
  }
}

function isAdmin() {
  return !!session.me && session.me.role === 'admin';
}

// Ends the impersonation session (identity revokes it; the admin's own cookie session stays)
// and goes back to the customer in the console.
async function stopImpersonating() {
  const acting = impersonation();
  try {
    await api('POST', '/v1/logout');
  } catch {
    // Expired already: nothing to end.
  }
  endImpersonation();
  go(acting && acting.account_id ? `/app/console/customers/${acting.account_id}` : '/app/console');
}

function isStaff() {
  return !!session.me && (session.me.role === 'agent' || session.me.role === 'admin');
}

function current(path, href) {
  if (href === '/app/') return path === '/app/' || path === '/app';
  if (href === '/app/console') return path === href || path.startsWith('/app/console/queues') || path.startsWith('/app/console/tickets');
  if (href === '/app/console/ops') return path === href || path.startsWith('/app/console/ops/');
  return path === href || path.startsWith(`${href}/`);
}

async function logOut() {
  try {
    await api('POST', '/v1/logout');
  } catch {
    // The session is gone either way.
  }
  session.me = null;
  go('/app/login');
}

// Each page: a function that fills `main`. `show` replaces the page's content and moves focus to
// its heading, so keyboard and screen-reader users land on the new page.
function show(title, ...content) {
  document.title = `${title} · Switchboard`;
  const heading = h('h1', { tabindex: '-1' }, title);
  main.replaceChildren(heading, ...content.flat().filter((c) => c !== null && c !== undefined && c !== false));
  if (show.focus) heading.focus({ preventScroll: true });
  show.focus = true;
}
show.focus = false;

function errorBox(e) {
  return h('p', { class: 'error', role: 'alert' }, e instanceof ApiError ? e.message : 'Something went wrong. Please try again.');
}

// A button that runs `run` once at a time (disabled meanwhile, so a double click acts once). A
// failure is shown in `errors` (by default at the top of the page) and the button can be used
// again; on success `run` moves on itself (a new page, or the page drawn again).
function actionButton(text, run, { cls, errors } = {}) {
  const b = h('button', { type: 'button', class: cls }, text);
  b.addEventListener('click', async () => {
    if (b.disabled) return;
    b.disabled = true;
    if (errors) errors.replaceChildren();
    try {
      await run();
    } catch (e) {
      if (errors) errors.replaceChildren(errorBox(e));
      else main.prepend(errorBox(e));
      b.disabled = false;
    }
  });
  return b;
}

const routes = [
  [/^\/app\/?$/, dashboard, true],
  [/^\/app\/login$/, login, false],
  [/^\/app\/signup$/, signup, false],
  [/^\/app\/billing$/, billing, true],
  [/^\/app\/tickets$/, tickets, true],
  [/^\/app\/tickets\/new$/, newTicket, true],
  [/^\/app\/tickets\/([0-9a-f-]{36})$/, ticket, true],
  [/^\/app\/profile$/, profile, true],
  [/^\/app\/console$/, consoleQueues, 'staff'],
  [/^\/app\/console\/queues\/([a-z_]+)$/, consoleQueue, 'staff'],
  [/^\/app\/console\/tickets\/([0-9a-f-]{36})$/, consoleTicket, 'staff'],
  [/^\/app\/console\/customers$/, consoleCustomers, 'staff'],
  [/^\/app\/console\/customers\/([0-9a-f-]{36})$/, consoleCustomer, 'staff'],
  [/^\/app\/console\/ops$/, consoleOps, 'admin'],
  [/^\/app\/console\/ops\/([a-z-]+)$/, consoleParked, 'admin'],
  [/^\/app\/console\/mailbox$/, consoleMailbox, 'admin'],
];

let renderSeq = 0;
async function render() {
  const seq = ++renderSeq;
  const path = location.pathname;
  clearTimeout(render.poll);
  try {
    if (!session.loaded) await loadMe();
    const route = routes.find(([re]) => re.test(path));
    if (!route) {
      drawNav(path);
      show('Page not found', h('p', {}, 'There is no page at this address. ', link('/app/', 'Go to your dashboard'), '.'));
      return;
    }
    const [re, page, needsSession] = route;
    if (needsSession && !session.me) {
      go(`/app/login?next=${encodeURIComponent(path)}`, true);
      return;
    }
    if (!needsSession && session.me) {
      go(isStaff() ? '/app/console' : '/app/', true);
      return;
    }
    if ((needsSession === 'staff' && !isStaff()) || (needsSession === 'admin' && !isAdmin())) {
      drawNav(path);
      show('Not allowed', h('p', { class: 'error', role: 'alert' }, needsSession === 'admin'
        ? 'This page is for admins. Your account cannot open it.'
        : 'This page is for support agents and admins. Your account cannot open it.'),
      h('p', {}, link(isStaff() ? '/app/console' : '/app/', isStaff() ? 'Go to the console' : 'Go to your dashboard'), '.'));
      return;
    }
    if (isStaff() && (path === '/app/' || path === '/app')) {
      go('/app/console', true);
      return;
    }
    drawNav(path);
    await page(...path.match(re).slice(1));
  } catch (e) {
    if (seq !== renderSeq) return;
    if (e instanceof ApiError && e.status === 401) {
      go(`/app/login?next=${encodeURIComponent(path)}`, true);
      return;
    }
    drawNav(path);
    if (e instanceof ApiError && e.status === 404) {
      show('Not found', errorBox(e), h('p', {}, link(isStaff() ? '/app/console' : '/app/', isStaff() ? 'Go to the console' : 'Go to your dashboard'), '.'));
      return;
    }
    show('Something went wrong', errorBox(e), h('p', {}, h('button', { type: 'button', onclick: () => render() }, 'Try again')));
  }
}

// A form whose submit button is disabled while the request runs (a double click sends once),
// with its error shown above it.
function form(fields, submitText, onSubmit, extra = []) {
  const status = h('div', { 'aria-live': 'assertive' });
  const button = h('button', { type: 'submit' }, submitText);
  const f = h('form', { novalidate: true }, status, ...fields, h('div', { class: 'actions' }, button, ...extra));
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (button.disabled) return;
    button.disabled = true;
    // An earlier error stays until this attempt's outcome replaces it: removing it now (or when
    // the next page is about to replace this one) would move the form under the user's pointer.
    // A form that stays on the page after success clears it itself (`status`).
    try {
      await onSubmit(new FormData(f), status);
    } catch (e) {
      status.replaceChildren(errorBox(e));
    } finally {
      button.disabled = false;
    }
  });
  return f;
}

function field(label, name, attrs = {}, hint) {
  const { options, ...rest } = attrs;
  const control = attrs.type === 'textarea'
    ? h('textarea', { name, ...rest, type: null })
    : attrs.type === 'select'
      ? h('select', { name, ...rest, type: null }, (options || []).map(([value, text]) => h('option', { value }, text)))
      : h('input', { name, ...rest });
  return h('label', {}, label, hint ? h('span', { class: 'hint' }, hint) : null, control);
}

// ---------------------------------------------------------------------------------------------
// Pages: signing in

async function login() {
  const next = new URLSearchParams(location.search).get('next');
  show(
    'Log in',
    form(
      [
        field('Email', 'email', { type: 'email', autocomplete: 'username', required: true }),
        field('Password', 'password', { type: 'password', autocomplete: 'current-password', required: true }),
      ],
      'Log in',
      async (data) => {
        await api('POST', '/v1/login', { email: data.get('email'), password: data.get('password') });
        await loadMe();
        go(next && next.startsWith('/app/') ? next : '/app/');
      },
    ),
    h('p', {}, 'New here? ', link('/app/signup', 'Create an account'), '.'),
  );
}

async function signup() {
  show(
    'Create your account',
    form(
      [
        field('Your name', 'name', { autocomplete: 'name', required: true }),
        field('Email', 'email', { type: 'email', autocomplete: 'email', required: true }),
        field('Password', 'password', { type: 'password', autocomplete: 'new-password', required: true, minlength: 12 }, 'At least 12 characters.'),
        field('Company', 'account_name', { autocomplete: 'organization' }, 'Optional; your name is used if you leave it empty.'),
      ],
      'Create account',
      async (data) => {
        await api('POST', '/v1/signup', {
          name: data.get('name'),
          email: data.get('email'),
          password: data.get('password'),
          account_name: data.get('account_name') || '',
        });
        await loadMe();
        go('/app/');
      },
    ),
    h('p', {}, 'Already have an account? ', link('/app/login', 'Log in'), '.'),
  );
}

// ---------------------------------------------------------------------------------------------
// Access in plain words

function date(s) {
  if (!s) return '';
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

function money(amount, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency: (currency || 'usd').toUpperCase() }).format(amount / 100);
  } catch {
    return `${(amount / 100).toFixed(2)} ${currency || ''}`;
  }
}

// What the account's access means, and what the customer can do about it.
function accessState(me) {
  const a = me.access;
  if (!a) {
    return {
      tone: 'warn',
      headline: 'We cannot show your plan right now',
      text: 'Billing is not answering at the moment. Your access has not changed; this page will show it again as soon as billing is back.',
      action: null,
    };
  }
  switch (a.status) {
    case 'none':
      return { tone: 'warn', headline: 'Unpaid: no plan yet', text: 'Choose a plan to get access. You can cancel at any time.', action: 'checkout' };
    case 'pending':
      return {
        tone: 'info',
        headline: 'Pending provisioning',
        text: `We are waiting for the payment provider to confirm your payment${a.reason ? ` (${a.reason})` : ''}. This usually takes a few seconds; this page updates by itself.`,
        action: null,
        poll: true,
      };
    case 'active':
      return {
        tone: 'ok',
        headline: `Active: ${a.plan || 'your'} plan`,
        text: a.entitlements && a.entitlements.length ? `Included: ${a.entitlements.join(', ')}.` : 'Your access is active.',
        action: 'portal',
      };
    case 'past_due':
      return {
        tone: 'warn',
        headline: 'Past due: your last payment failed',
        text: a.grace_until
          ? `Your access continues until ${date(a.grace_until)}. Update your payment method before then to keep it.`
          : 'Your access continues for a grace period. Update your payment method to keep it.',
        action: 'portal',
      };
    case 'revoked':
      return {
        tone: 'bad',
        headline: 'Access ended',
        text: `${a.reason ? sentence(a.reason) : 'Your subscription ended.'} Start a new subscription to get access again.`,
        action: 'checkout',
      };
    default:
      return { tone: 'warn', headline: 'Access status unknown', text: a.message || '', action: null };
  }
}

async function startCheckout(plan) {
  const c = await api('POST', '/v1/billing/checkout', plan ? { plan } : undefined);
  location.assign(c.url);
}

async function openPortal() {
  const p = await api('POST', '/v1/billing/portal');
  location.assign(p.url);
}

function accessCard(me, plans) {
  const s = accessState(me);
  const card = h('section', { class: `card state ${s.tone}`, 'aria-labelledby': 'access-h' },
    h('h2', { id: 'access-h' }, 'Your access'),
    h('p', { class: 'headline', 'data-status': me.access ? me.access.status : 'unknown' }, s.headline),
    h('p', {}, s.text));
  const errors = h('div', { 'aria-live': 'assertive' });
  card.append(errors);
  if (s.action === 'checkout' && me.role === 'customer') {
    const choice = plans && plans.length > 1
      ? h('label', {}, 'Plan', h('select', { name: 'plan', id: 'plan' }, plans.map((p) => h('option', { value: p.name }, `${p.name}: ${money(p.amount, p.currency)} a month`))))
      : null;
    const only = plans && plans.length === 1 ? h('p', { class: 'muted' }, `${plans[0].name}: ${money(plans[0].amount, plans[0].currency)} a month.`) : null;
    card.append(only || '', choice || '', h('div', { class: 'actions' },
      actionButton('Choose plan and pay', () => startCheckout(choice ? choice.querySelector('select').value : ''), { errors })));
  }
  if (s.action === 'portal' && me.role === 'customer') {
    card.append(h('div', { class: 'actions' }, actionButton('Manage billing', openPortal, { cls: 'secondary', errors })));
  }
  if (s.poll) {
    render.poll = setTimeout(() => { if (location.pathname.replace(/\/$/, '') === '/app') render(); }, 1500);
  }
  return card;
}

// ---------------------------------------------------------------------------------------------
// Pages: signed in

async function dashboard() {
  const [me, plans, list] = await Promise.all([
    loadMe(),
    api('GET', '/v1/billing/plans').catch(() => []),
    api('GET', '/v1/tickets').catch(() => null),
  ]);
  if (!me) throw new ApiError('', 401);
  drawNav(location.pathname);
  const who = me.user ? me.user.name || me.user.email : '';
  const open = list ? list.filter((t) => t.status !== 'resolved') : null;
  show(
    who ? `Welcome, ${who}` : 'Your dashboard',
    accessCard(me, plans),
    h('section', { class: 'card', 'aria-labelledby': 'support-h' },
      h('h2', { id: 'support-h' }, 'Support'),
      open === null
        ? h('p', {}, 'Your tickets cannot be shown right now. ', link('/app/tickets', 'Try the support page'), '.')
        : h('p', {}, open.length === 0 ? 'You have no open tickets. ' : `You have ${open.length} open ticket${open.length === 1 ? '' : 's'}. `,
          link('/app/tickets', 'See your tickets'), ' or ', link('/app/tickets/new', 'ask us something'), '.')),
    h('section', { class: 'card', 'aria-labelledby': 'account-h' },
      h('h2', { id: 'account-h' }, 'Account'),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Company'), h('dd', {}, me.account ? me.account.name : ''),
        h('dt', {}, 'Email'), h('dd', {}, me.user ? me.user.email : ''),
        h('dt', {}, 'Role'), h('dd', {}, me.role))),
  );
}

async function billing() {
  const [b, plans] = await Promise.all([api('GET', '/v1/billing'), api('GET', '/v1/billing/plans').catch(() => [])]);
  const me = { ...session.me, access: b.access };
  const invoices = b.invoices || [];
  show(
    'Billing',
    accessCard(me, plans),
    h('section', { class: 'card', 'aria-labelledby': 'inv-h' },
      h('h2', { id: 'inv-h' }, 'Invoices'),
      invoices.length === 0
        ? h('p', { class: 'muted' }, 'No invoices yet.')
        : tableWrap('Invoices', h('table', {},
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Date'), h('th', { scope: 'col' }, 'Amount'), h('th', { scope: 'col' }, 'Status'))),
          h('tbody', {}, invoices.map((i) => {
            const refunded = refundedOf(b, i.id);
            return h('tr', {}, h('td', {}, date(i.created)), h('td', {}, money(i.amount_paid || i.amount_due, i.currency)),
              h('td', {}, i.status, refunded > 0 ? ` · ${money(refunded, i.currency)} refunded` : ''));
          }))))),
    h('section', { class: 'card', 'aria-labelledby': 'hist-h' },
      h('h2', { id: 'hist-h' }, 'Access history'),
      (b.history || []).length === 0
        ? h('p', { class: 'muted' }, 'No changes yet.')
        : h('ul', {}, b.history.map((c) => h('li', {}, `${date(c.at)} ${c.from} → ${c.to}${c.plan ? ` (${c.plan})` : ''}${c.reason ? `: ${c.reason}` : ''}`)))),
  );
}

function statusBadge(t) {
  return h('span', { class: `badge ${t.status}` }, t.status_text ? t.status_text.split(':')[0] : t.status);
}

async function tickets() {
  const list = await api('GET', '/v1/tickets');
  show(
    'Support',
    h('div', { class: 'actions' }, link('/app/tickets/new', 'Open a ticket', { class: 'button' })),
    h('section', { class: 'card', 'aria-labelledby': 'list-h' },
      h('h2', { id: 'list-h' }, 'Your tickets'),
      list.length === 0
        ? h('p', { class: 'muted' }, 'You have not opened any tickets yet.')
        : h('ul', { class: 'tickets' }, list.map((t) => h('li', {},
          link(`/app/tickets/${t.id}`, t.subject), ' ', statusBadge(t),
          h('div', { class: 'small muted' }, `${t.status_text} · opened ${date(t.created_at)}`))))),
  );
}

const CATEGORIES = [['technical', 'Something is not working'], ['billing', 'Billing and payments'], ['account', 'My account and login'], ['other', 'Something else']];

async function newTicket() {
  // One key per form: a double click or a retried request opens one ticket.
  const key = crypto.randomUUID();
  show(
    'Open a ticket',
    form(
      [
        field('Subject', 'subject', { required: true, maxlength: 200 }),
        h('label', {}, 'What is it about?', h('select', { name: 'category' }, CATEGORIES.map(([v, t]) => h('option', { value: v }, t)))),
        field('Message', 'body', { type: 'textarea', required: true, maxlength: 10000 }),
      ],
      'Send',
      async (data) => {
        const t = await api('POST', '/v1/tickets', { subject: data.get('subject'), body: data.get('body'), category: data.get('category') }, { 'idempotency-key': key });
        go(`/app/tickets/${t.ticket.id}`);
      },
      [link('/app/tickets', 'Cancel')],
    ),
  );
}

async function ticket(id) {
  const v = await api('GET', `/v1/tickets/${id}`);
  const t = v.ticket;
  const closed = t.status === 'resolved';
  show(
    t.subject,
    h('p', {}, statusBadge(t), ' ', h('span', { class: 'muted' }, (t.status_text || '').split(':').slice(1).join(':').trim())),
    h('ol', { class: 'thread', 'aria-label': 'Messages' }, v.messages.map((m) => h('li', { class: m.from },
      h('div', { class: 'who' }, m.from === 'support' ? 'Support' : 'You', h('span', { class: 'muted small' }, ` · ${date(m.created_at)}`)),
      h('p', { class: 'body' }, m.body)))),
    form(
      [field(closed ? 'Reply (reopens the ticket)' : 'Reply', 'body', { type: 'textarea', required: true, maxlength: 10000 })],
      'Send reply',
      async (data) => {
        await api('POST', `/v1/tickets/${id}/messages`, { body: data.get('body') });
        render();
      },
      closed ? [] : [actionButton('Close ticket', async () => {
        await api('POST', `/v1/tickets/${id}/close`);
        render();
      }, { cls: 'secondary' })],
    ),
    h('p', {}, link('/app/tickets', 'All your tickets')),
  );
}

async function profile() {
  const me = await loadMe();
  const saved = h('div', { 'aria-live': 'polite' });
  show(
    'Profile',
    saved,
    form(
      [
        field('Name', 'name', { autocomplete: 'name', value: me.user ? me.user.name : '', required: true }),
        h('p', { class: 'muted' }, `Email: ${me.user ? me.user.email : ''}`),
      ],
      'Save',
      async (data, status) => {
        await api('PATCH', '/v1/me', { name: data.get('name') });
        await loadMe();
        status.replaceChildren();
        saved.replaceChildren(h('p', { class: 'success' }, 'Saved.'));
      },
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Console (agents and admins)

const QUEUE_NAMES = { human_review: 'Human review (urgent)', billing: 'Billing', technical: 'Technical', account: 'Account' };

function age(seconds) {
  if (!seconds) return 'none waiting';
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} days`;
}

async function consoleQueues() {
  const queues = await api('GET', '/v1/admin/queues');
  show(
    'Support queues',
    tableWrap('Support queues', h('table', {},
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Queue'), h('th', { scope: 'col' }, 'Open'), h('th', { scope: 'col' }, 'Unanswered'), h('th', { scope: 'col' }, 'Oldest unanswered'))),
      h('tbody', {}, queues.map((q) => h('tr', {},
        h('td', {}, link(`/app/console/queues/${q.queue}`, QUEUE_NAMES[q.queue] || q.queue)),
        h('td', {}, q.open), h('td', {}, q.unanswered), h('td', {}, age(q.oldest_unanswered_seconds))))))),
  );
}

async function consoleQueue(queue) {
  const list = await api('GET', `/v1/admin/tickets?queue=${encodeURIComponent(queue)}&open=true`);
  show(
    QUEUE_NAMES[queue] || queue,
    h('p', {}, link('/app/console', 'All queues')),
    list.length === 0
      ? h('p', { class: 'muted' }, 'No open tickets in this queue.')
      : h('ul', { class: 'tickets' }, list.map((t) => h('li', {},
        link(`/app/console/tickets/${t.id}`, t.subject), ' ', h('span', { class: `badge priority-${t.priority}` }, t.priority),
        h('div', { class: 'small muted' }, `${t.requester_name || t.requester_email} · ${t.tier_now} plan · ${t.status.replaceAll('_', ' ')} · first response ${t.sla ? t.sla.first_response.text : 'n/a'}`)))),
  );
}

function clockRow(name, c) {
  return [h('dt', {}, name), h('dd', { class: `clock ${c.state}` }, c.text || c.state)];
}

async function consoleTicket(id) {
  const v = await api('GET', `/v1/admin/tickets/${id}`);
  const t = v.ticket;
  const reload = () => render();
  const offered = (v.drafts || []).find((d) => d.state === 'offered');
  const sla = t.sla;
  show(
    t.subject,
    h('p', {}, link(`/app/console/queues/${t.queue}`, `Back to ${QUEUE_NAMES[t.queue] || t.queue}`)),
    h('section', { class: 'card', 'aria-labelledby': 'facts-h' },
      h('h2', { id: 'facts-h' }, 'Ticket'),
      h('dl', { class: 'facts' },
        h('dt', {}, 'From'), h('dd', {}, `${t.requester_name} <${t.requester_email}>`),
        h('dt', {}, 'Plan'), h('dd', {}, `${t.tier_now} (at intake: ${t.tier_at_intake})`),
        h('dt', {}, 'Priority'), h('dd', {}, t.priority),
        h('dt', {}, 'Queue'), h('dd', {}, QUEUE_NAMES[t.queue] || t.queue),
        h('dt', {}, 'Status'), h('dd', {}, `${t.status.replaceAll('_', ' ')} (customer sees: ${t.customer_status.replaceAll('_', ' ')})`),
        h('dt', {}, 'Why'), h('dd', {}, t.priority_reasons.join('; ')),
        sla ? clockRow('First response', sla.first_response) : null,
        sla ? clockRow('Next response', sla.next_response) : null,
        sla ? clockRow('Resolution', sla.resolution) : null)),
    h('h2', {}, 'Conversation'),
    h('ol', { class: 'thread', 'aria-label': 'Messages' }, v.messages.map((m) => h('li', { class: m.author === 'agent' ? 'support' : 'you' },
      h('div', { class: 'who' }, m.author === 'agent' ? 'Support' : 'Customer', h('span', { class: 'muted small' }, ` · ${date(m.created_at)}`)),
      h('p', { class: 'body' }, m.body)))),
    v.notes.length
      ? h('section', { class: 'card internal', 'aria-labelledby': 'notes-h' },
        h('h2', { id: 'notes-h' }, 'Internal notes (never shown to the customer)'),
        h('ol', { class: 'thread' }, v.notes.map((n) => h('li', {}, h('div', { class: 'who' }, `Note · ${date(n.created_at)}`), h('p', { class: 'body' }, n.body)))))
      : null,
    h('section', { class: 'card internal', 'aria-labelledby': 'ai-h' },
      h('h2', { id: 'ai-h' }, 'AI draft (internal until you send it)'),
      offered
        ? [h('p', {}, h('strong', {}, 'Summary: '), offered.summary),
          form([field('Draft answer (edit before sending if needed)', 'body', { type: 'textarea', id: 'draft-body', required: true, maxlength: 10000 })], 'Approve and send',
            async (data) => {
              const body = data.get('body');
              await api('POST', `/v1/admin/tickets/${id}/drafts/${offered.id}/approve`, body === offered.reply ? {} : { body });
              reload();
            },
            [actionButton('Reject draft', async () => {
              await api('POST', `/v1/admin/tickets/${id}/drafts/${offered.id}/reject`, { reason: 'rejected in the console' });
              reload();
            }, { cls: 'secondary' })])]
        : h('p', { class: 'muted' }, v.ai_state === 'pending' ? 'AI draft pending.' : v.ai_state === 'unavailable' ? 'AI draft unavailable: answer by hand.' : v.ai_state === 'flagged' ? 'Flagged: a person must handle this ticket.' : 'No draft waiting.')),
    h('section', { class: 'card', 'aria-labelledby': 'reply-h' },
      h('h2', { id: 'reply-h' }, 'Answer the customer'),
      form([field('Answer', 'body', { type: 'textarea', required: true, maxlength: 10000 })], 'Send answer', async (data) => {
        await api('POST', `/v1/admin/tickets/${id}/messages`, { body: data.get('body') });
        reload();
      })),
    h('section', { class: 'card internal', 'aria-labelledby': 'note-h' },
      h('h2', { id: 'note-h' }, 'Add an internal note'),
      form([field('Note (staff only)', 'body', { type: 'textarea', required: true, maxlength: 10000 })], 'Add note', async (data) => {
        await api('POST', `/v1/admin/tickets/${id}/notes`, { body: data.get('body') });
        reload();
      })),
    h('div', { class: 'actions' }, t.status === 'resolved'
      ? actionButton('Reopen', async () => { await api('POST', `/v1/admin/tickets/${id}/reopen`, {}); reload(); }, { cls: 'secondary' })
      : actionButton('Resolve', async () => { await api('POST', `/v1/admin/tickets/${id}/resolve`); reload(); }, { cls: 'secondary' })),
    h('details', {}, h('summary', {}, 'Activity'),
      h('ul', { class: 'small' }, v.activity.map((a) => h('li', {}, `${date(a.at)} ${a.action}: ${a.detail}`)))),
  );
  if (offered) {
    const box = document.getElementById('draft-body');
    if (box) box.value = offered.reply;
  }
}

async function consoleCustomers() {
  const q = new URLSearchParams(location.search).get('q') || '';
  const list = await api('GET', `/v1/admin/customers?q=${encodeURIComponent(q)}`);
  const search = h('form', { role: 'search', class: 'actions', onsubmit: (ev) => {
    ev.preventDefault();
    go(`/app/console/customers?q=${encodeURIComponent(new FormData(ev.currentTarget).get('q'))}`);
  } }, h('label', {}, 'Email, name or company', h('input', { name: 'q', type: 'search', value: q })), h('button', { type: 'submit' }, 'Search'));
  show(
    'Customers',
    search,
    list.length === 0
      ? h('p', { class: 'muted' }, q ? `No customer matches "${q}".` : 'No customers yet.')
      : h('ul', { class: 'tickets' }, list.map((c) => h('li', {},
        c.account ? link(`/app/console/customers/${c.account.id}`, c.account.name) : 'Account unknown',
        h('div', { class: 'small muted' }, c.users.map((u) => `${u.name} <${u.email}>`).join(', '))))),
  );
}

// Where the records of one customer disagree: each finding is a sentence for the agent.
function drift(v) {
  const found = [];
  const a = v.access;
  const customers = (v.users || []).filter((u) => u.role === 'customer');
  if (a && (a.status === 'active' || a.status === 'past_due') && !a.stripe_customer_id) found.push('Access is granted but billing knows no Stripe customer for the account.');
  for (const c of v.crm || []) {
    if (c.status === 'failed') found.push(`CRM sync failed for ${c.email}: ${c.last_error || 'see the DLQ'}.`);
    if (c.status === 'synced' && a && a.status === 'active' && c.lifecycle_stage && c.lifecycle_stage !== 'customer') found.push(`${c.email} pays, but the CRM has them as "${c.lifecycle_stage}".`);
  }
  const known = new Set((v.crm || []).map((c) => c.user_id));
  for (const u of customers) if (v.crm && !known.has(u.id)) found.push(`${u.email} has no CRM record yet.`);
  return found;
}

async function consoleCustomer(accountId) {
  const [v, billed] = await Promise.all([
    api('GET', `/v1/admin/customers/${accountId}`),
    api('GET', `/v1/accounts/${accountId}/billing`).then((b) => ({ b }), (e) => ({ e })),
  ]);
  const bill = billed.b;
  const billError = billed.e;
  const a = v.access;
  const flags = drift(v);
  show(
    v.account ? v.account.name : 'Customer',
    h('p', {}, link('/app/console/customers', 'All customers')),
    h('section', { class: `card state ${flags.length ? 'warn' : 'ok'}`, 'aria-labelledby': 'drift-h' },
      h('h2', { id: 'drift-h' }, flags.length ? 'Records disagree' : 'Records agree'),
      flags.length ? h('ul', {}, flags.map((f) => h('li', {}, f))) : h('p', {}, 'Identity, billing, the CRM and support tell the same story.')),
    h('section', { class: 'card', 'aria-labelledby': 'ids-h' },
      h('h2', { id: 'ids-h' }, 'Every id'),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Account'), h('dd', {}, v.account ? v.account.id : ''),
        (v.users || []).map((u) => [h('dt', {}, `User (${u.role})`), h('dd', {}, `${u.id} · ${u.email}`)]),
        h('dt', {}, 'Stripe customer'), h('dd', {}, a ? a.stripe_customer_id || 'none yet' : v.access_error || ''),
        (v.crm || []).map((c) => [h('dt', {}, `CRM contact (${c.crm || 'not seen yet'})`), h('dd', {}, `${c.crm_contact_id || 'none yet'} · ${c.email}`)]))),
    h('section', { class: 'card', 'aria-labelledby': 'acc-h' },
      h('h2', { id: 'acc-h' }, 'Access'),
      a ? h('p', {}, `${a.message}${a.cause_event_type ? ` (from ${a.cause_event_type} ${a.cause_event_id})` : ''}`) : h('p', { class: 'error' }, v.access_error || 'unknown')),
    h('section', { class: 'card', 'aria-labelledby': 'crm-h' },
      h('h2', { id: 'crm-h' }, 'CRM sync'),
      v.crm ? h('ul', {}, v.crm.map((c) => h('li', { 'data-crm-status': c.status }, `${c.email}: ${c.message}`))) : h('p', { class: 'error' }, v.crm_error || 'unknown')),
    h('section', { class: 'card', 'aria-labelledby': 'tk-h' },
      h('h2', { id: 'tk-h' }, 'Open tickets'),
      v.tickets
        ? (v.tickets.length ? h('ul', { class: 'tickets' }, v.tickets.map((t) => h('li', {}, link(`/app/console/tickets/${t.id}`, t.subject), ' ',
          h('span', { class: `badge priority-${t.priority}` }, t.priority), h('div', { class: 'small muted' }, `first response ${t.sla ? t.sla.first_response.text : 'n/a'}`)))) : h('p', { class: 'muted' }, 'None.'))
        : h('p', { class: 'error' }, v.tickets_error || 'unknown')),
    billingHistory(accountId, bill, billError),
    isAdmin() ? actAsCustomer(v) : null,
  );
}

// A refund that takes (or may still take) money back: everything but failed and canceled ones.
const REFUND_COUNTS = new Set(['requested', 'pending', 'requires_action', 'succeeded']);

function refundedOf(bill, invoiceId) {
  return (bill.refunds || []).filter((r) => r.invoice_id === invoiceId && REFUND_COUNTS.has(r.status)).reduce((n, r) => n + r.amount, 0);
}

const REFUND_STATUS = {
  requested: 'requested; Stripe has not answered yet (refunding again with the same form is safe)',
  pending: 'pending at Stripe',
  requires_action: 'waiting for the customer at Stripe',
  succeeded: 'refunded',
  failed: 'refused by Stripe',
  canceled: 'canceled',
};

// The account's invoices, refunds and access changes, newest first; admins can refund a payment
// and download everything as CSV.
function billingHistory(accountId, bill, billError) {
  const refunds = billError ? [] : bill.refunds || [];
  return h('section', { class: 'card', 'aria-labelledby': 'bill-h' },
    h('h2', { id: 'bill-h' }, 'Billing history'),
    billError ? errorBox(billError) : [
      bill.invoices.length === 0
        ? h('p', { class: 'muted' }, 'No invoices.')
        : tableWrap('Invoices', h('table', {},
          h('caption', { class: 'muted small' }, 'Invoices'),
          h('thead', {}, h('tr', {}, ['Date', 'Invoice', 'Status', 'Paid', 'Refunded'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, bill.invoices.map((i) => h('tr', { 'data-invoice': i.id }, h('td', {}, date(i.created)), h('td', {}, i.id), h('td', {}, i.status),
            h('td', {}, money(i.amount_paid, i.currency)), h('td', {}, money(refundedOf(bill, i.id), i.currency))))))),
      refunds.length === 0 ? null : tableWrap('Refunds', h('table', {},
        h('caption', { class: 'muted small' }, 'Refunds'),
        h('thead', {}, h('tr', {}, ['Date', 'Invoice', 'Amount', 'Status', 'Reason'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, refunds.map((r) => h('tr', { 'data-refund-status': r.status }, h('td', {}, date(r.created)), h('td', {}, r.invoice_id),
          h('td', {}, money(r.amount, r.currency)), h('td', {}, REFUND_STATUS[r.status] || r.status, r.failure ? `: ${r.failure}` : ''), h('td', {}, r.reason)))))),
      bill.history.length === 0
        ? h('p', { class: 'muted' }, 'No access changes.')
        : h('ul', { class: 'small' }, bill.history.map((c) => h('li', {}, `${date(c.at)}: ${c.from} → ${c.to} (${c.reason}${c.cause_event_type ? `; ${c.cause_event_type} ${c.cause_event_id}` : ''})`))),
      isAdmin() ? h('p', {}, h('a', { href: `/v1/admin/accounts/${accountId}/billing/export`, download: `billing-${accountId}.csv` }, 'Download billing history (CSV)')) : null,
      isAdmin() ? refundForm(accountId, bill) : null,
    ]);
}

// Admins: refund a paid invoice's payment, in full or in part, with a reason (audited). The form
// carries one idempotency key for as long as it is on the page, so a double click or a retry after
// an outage refunds once; the access then follows the refund policy.
function refundForm(accountId, bill) {
  const refundable = bill.invoices
    .map((i) => ({ i, left: i.status === 'paid' ? i.amount_paid - refundedOf(bill, i.id) : 0 }))
    .filter((x) => x.left > 0);
  if (refundable.length === 0) return null;
  const key = crypto.randomUUID();
  return h('section', { class: 'internal', 'aria-labelledby': 'refund-h' },
    h('h3', { id: 'refund-h' }, 'Refund a payment'),
    h('p', { class: 'small' }, 'Billing refunds through Stripe (or the local checkout) and records the reason in the audit log. A full refund ends the access the payment bought, per the refund policy.'),
    form([
      field('Payment', 'invoice_id', { type: 'select', options: refundable.map((x) => [x.i.id, `${date(x.i.created)} · ${x.i.id} · ${money(x.left, x.i.currency)} left`]) }),
      field('Amount', 'amount', { type: 'number', min: '0.01', step: '0.01', inputmode: 'decimal' }, 'Leave empty to refund everything that is left'),
      field('Reason', 'reason', { required: true, maxlength: 500 }, 'For example: charged twice, see ticket 1234'),
    ], 'Refund', async (data, status) => {
      const raw = String(data.get('amount') || '').trim();
      const amount = raw === '' ? 0 : Math.round(Number(raw) * 100);
      if (!Number.isFinite(amount) || amount < 0) throw new ApiError('Enter the amount in the currency, like 19.00, or leave it empty.', 422);
      const reason = String(data.get('reason') || '').trim();
      if (!reason) throw new ApiError('Say why the payment is refunded.', 422);
      const r = await api('POST', `/v1/admin/accounts/${accountId}/billing/refunds`, { invoice_id: data.get('invoice_id'), amount, reason }, { 'idempotency-key': key });
      status.replaceChildren(h('p', { class: 'notice', role: 'status' }, `Refund of ${money(r.amount, r.currency)}: ${REFUND_STATUS[r.status] || r.status}.`));
      await render();
    }));
}

// Admins: act as one of the account's customers, with a reason (audited); this tab shows the
// portal as they see it, under a banner, until "Stop acting as this customer".
function actAsCustomer(v) {
  const customers = (v.users || []).filter((u) => u.role === 'customer');
  if (customers.length === 0) return null;
  return h('section', { class: 'card internal', 'aria-labelledby': 'imp-h' },
    h('h2', { id: 'imp-h' }, 'Act as a customer'),
    h('p', { class: 'small' }, 'Opens the portal in this tab as the customer sees it, for 15 minutes. The reason and everything you do are recorded in the audit log.'),
    form([
      field('Customer', 'user_id', { type: 'select', options: customers.map((u) => [u.id, `${u.name} <${u.email}>`]) }),
      field('Reason', 'reason', { required: true, maxlength: 200 }, 'For example: reproducing ticket 1234'),
    ], 'Act as this customer', async (data) => {
      const grant = await api('POST', `/v1/admin/users/${data.get('user_id')}/impersonate`, { reason: data.get('reason') });
      sessionStorage.setItem(IMPERSONATION_KEY, JSON.stringify({ token: grant.token, account_id: v.account ? v.account.id : null }));
      session.me = null;
      session.loaded = false;
      go('/app/');
    }));
}

// ---------------------------------------------------------------------------------------------
// Operations (admins): queues, parked messages, replay and purge

const SERVICE_NAMES = ['gateway', 'identity', 'billing', 'crm-sync', 'support-router', 'ai-assist'];

function count(n) {
  return n === null || n === undefined ? 'missing' : String(n);
}

async function consoleOps() {
  const o = await api('GET', '/v1/admin/ops/queues');
  show(
    'Operations',
    h('p', {}, 'Every service\'s queues. Parked messages (DLQ) waited through every retry or cannot be applied as sent; open a service to see why, then replay or purge them. ',
      h('a', { href: o.dashboard_url, rel: 'noopener', target: '_blank' }, 'RabbitMQ dashboard'), '.'),
    tableWrap('Service queues', h('table', {},
      h('thead', {}, h('tr', {}, ['Service', 'Waiting', 'Consumers', 'Retrying', 'Parked (DLQ)'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, o.services.map((s) => {
        const retrying = s.retry.reduce((n, q) => n + (q.messages || 0), 0);
        const parked = s.dlq.messages;
        return h('tr', { 'data-service': s.service },
          h('th', { scope: 'row' }, s.service),
          h('td', {}, count(s.work.messages)),
          h('td', { class: s.work.consumers === 0 ? 'error' : null }, s.work.consumers === 0 ? '0 (nothing consuming)' : count(s.work.consumers)),
          h('td', {}, String(retrying)),
          h('td', {}, parked ? link(`/app/console/ops/${s.service}`, `${parked} parked`, { class: 'error' }) : link(`/app/console/ops/${s.service}`, count(parked))));
      })))),
  );
}

function parkedItem(p) {
  return h('li', {},
    h('div', {}, h('strong', {}, p.event_type || 'unreadable message'), ` · ${p.attempts} attempt${p.attempts === 1 ? '' : 's'}${p.failed_at ? ` · parked ${date(p.failed_at)}` : ''}`),
    h('div', { class: 'error small' }, p.reason),
    h('div', { class: 'small muted' }, `event ${p.event_id || 'unknown'}${p.account_id ? ` · account ${p.account_id}` : ''}`),
    h('details', {}, h('summary', {}, 'Original event'), h('pre', { class: 'small' }, JSON.stringify(p.body, null, 2))));
}

function selectionFields() {
  return [
    h('fieldset', {}, h('legend', {}, 'Which messages'),
      ...[['all', 'All of this service\'s parked messages'], ['event_id', 'One event (event id)'], ['account_id', 'One account\'s (account id)'], ['event_type', 'One event type']]
        .map(([value, text], i) => h('label', { class: 'inline' }, h('input', { type: 'radio', name: 'which', value, checked: i === 0 }), ` ${text}`))),
    field('Event id, account id or event type (unless all)', 'value', { maxlength: 200 }),
  ];
}

function selection(data) {
  const which = data.get('which');
  const value = String(data.get('value') || '').trim();
  if (which === 'all') return { all: true };
  if (!value) throw new ApiError('Enter the event id, account id or event type to select.', 422, 'validation_failed');
  return { [which]: value };
}

async function consoleParked(service) {
  if (!SERVICE_NAMES.includes(service)) {
    show('Not found', h('p', { class: 'error', role: 'alert' }, `There is no service called ${service}.`), h('p', {}, link('/app/console/ops', 'All services')));
    return;
  }
  const parked = await api('GET', `/v1/admin/ops/services/${service}/parked?limit=50`);
  const result = h('div', { 'aria-live': 'polite', id: 'ops-result' });
  const act = (action) => async (data, status) => {
    const body = { ...selection(data), dry_run: data.get('mode') !== 'do' };
    if (action === 'purge' && !body.dry_run) body.confirm = String(data.get('confirm') || '').trim();
    const r = await api('POST', `/v1/admin/ops/services/${service}/${action}`, body);
    status.replaceChildren();
    if (r.dry_run) {
      result.replaceChildren(h('section', { class: 'card', 'aria-labelledby': 'dry-h' },
        h('h2', { id: 'dry-h' }, `Dry run: ${r.matched} message${r.matched === 1 ? '' : 's'} would be ${action === 'replay' ? 'replayed' : 'deleted'}`),
        h('p', { class: 'small' }, `${r.selection}; looked at ${r.looked_at}${r.partial ? ' (the DLQ holds more than a dry run reads)' : ''}. Nothing changed.`),
        r.messages.length ? h('ol', { class: 'tickets' }, r.messages.map(parkedItem)) : null));
    } else {
      result.replaceChildren(h('p', { class: 'notice', role: 'status' }, `${action === 'replay' ? 'Replayed' : 'Deleted'} ${r.matched}: ${r.selection}.`));
      const left = await api('GET', `/v1/admin/ops/services/${service}/parked?limit=50`);
      list.replaceChildren(...(left.length ? left.map(parkedItem) : [h('li', { class: 'muted' }, 'Nothing parked.')]));
    }
  };
  const mode = (doText) => h('fieldset', {}, h('legend', {}, 'Run'),
    h('label', { class: 'inline' }, h('input', { type: 'radio', name: 'mode', value: 'dry', checked: true }), ' Dry run first: show what it would touch'),
    h('label', { class: 'inline' }, h('input', { type: 'radio', name: 'mode', value: 'do' }), ` ${doText}`));
  const list = h('ol', { class: 'tickets', 'aria-label': 'Parked messages' },
    parked.length ? parked.map(parkedItem) : [h('li', { class: 'muted' }, 'Nothing parked.')]);
  show(
    `Parked messages: ${service}`,
    h('p', {}, link('/app/console/ops', 'All services')),
    result,
    h('section', { class: 'card', 'aria-labelledby': 'replay-h' },
      h('h2', { id: 'replay-h' }, 'Replay'),
      h('p', { class: 'small' }, 'Puts the messages back on the service\'s work queue with a fresh retry ladder; an event already applied is not applied twice.'),
      form([...selectionFields(), mode('Replay now')], 'Replay', act('replay'))),
    h('section', { class: 'card', 'aria-labelledby': 'purge-h' },
      h('h2', { id: 'purge-h' }, 'Purge'),
      h('p', { class: 'small' }, 'Deletes the messages for good. To purge, type the service name to confirm.'),
      form([...selectionFields(), mode('Delete now'), field(`Type ${service} to confirm`, 'confirm', { maxlength: 40, autocomplete: 'off' })], 'Purge', act('purge'))),
    h('h2', {}, `Oldest ${parked.length} parked`),
    list,
  );
}

async function consoleMailbox() {
  const to = new URLSearchParams(location.search).get('to') || '';
  const mails = await api('GET', `/v1/admin/mailbox?limit=100${to ? `&to=${encodeURIComponent(to)}` : ''}`);
  const search = h('form', { role: 'search', class: 'actions', onsubmit: (ev) => {
    ev.preventDefault();
    go(`/app/console/mailbox?to=${encodeURIComponent(new FormData(ev.currentTarget).get('to'))}`);
  } }, h('label', {}, 'Recipient', h('input', { name: 'to', type: 'search', value: to })), h('button', { type: 'submit' }, 'Filter'));
  show(
    'Mailbox',
    h('p', { class: 'small' }, 'Emails Switchboard recorded instead of sending (no SMTP server configured), newest first.'),
    search,
    mails.length === 0
      ? h('p', { class: 'muted' }, to ? `No email to ${to}.` : 'No email recorded yet.')
      : h('ol', { class: 'tickets', 'aria-label': 'Emails' }, mails.map((m) => h('li', {},
        h('details', {}, h('summary', {}, h('strong', {}, m.subject), ` to ${m.to} · ${date(m.created_at)}`),
          h('p', { class: 'small muted' }, `template ${m.template}`),
          h('pre', { class: 'mail' }, m.text_body))))),
  );
}

render();
