-- billing: the account ↔ Stripe customer map, the newest known state of each Stripe object, and
-- the access each account derives from them. Facts are keyed by Stripe ids and stamped with the
-- Stripe time they describe (`as_of`), so an older event never overwrites newer state.

-- Every Stripe event seen, once. `dedupe_key` is (object id, event type) for events that happen
-- once per object, plus a digest of the object for repeatable ones, so Stripe's duplicate Event
-- objects for one change have one effect.
CREATE TABLE stripe_events (
    event_id       text PRIMARY KEY,
    event_type     text NOT NULL,
    object_id      text NOT NULL,
    dedupe_key     text NOT NULL UNIQUE,
    stripe_created timestamptz NOT NULL,
    outcome        text NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customers (
    stripe_customer_id text PRIMARY KEY,
    account_id         uuid NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_account ON customers (account_id);

-- The newest known state of each subscription. `rank` breaks ties between facts stamped with the
-- same second (Stripe's timestamps are whole seconds): later stages of a subscription's life win.
CREATE TABLE subscriptions (
    id                 text PRIMARY KEY,
    stripe_customer_id text NOT NULL,
    status             text NOT NULL,
    plan               text NOT NULL DEFAULT '',
    price_id           text NOT NULL DEFAULT '',
    current_period_end timestamptz,
    as_of              timestamptz NOT NULL,
    rank               integer NOT NULL,
    -- Newest payment (checkout paid, invoice paid): a refund after it ends what it bought.
    last_paid_at       timestamptz,
    -- Start of the current past_due/unpaid spell (the grace period counts from here, not from
    -- Stripe's later retry failures).
    past_due_since     timestamptz,
    cause_event_id     text NOT NULL,
    cause_event_type   text NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_customer ON subscriptions (stripe_customer_id);

CREATE TABLE invoices (
    id                 text PRIMARY KEY,
    stripe_customer_id text NOT NULL,
    subscription_id    text NOT NULL DEFAULT '',
    status             text NOT NULL,
    amount_due         bigint NOT NULL DEFAULT 0,
    amount_paid        bigint NOT NULL DEFAULT 0,
    currency           text NOT NULL DEFAULT '',
    attempt_count      integer NOT NULL DEFAULT 0,
    as_of              timestamptz NOT NULL,
    rank               integer NOT NULL
);
CREATE INDEX invoices_customer ON invoices (stripe_customer_id);

CREATE TABLE refunds (
    charge_id          text PRIMARY KEY,
    stripe_customer_id text NOT NULL,
    amount             bigint NOT NULL,
    amount_refunded    bigint NOT NULL,
    currency           text NOT NULL DEFAULT '',
    as_of              timestamptz NOT NULL,
    cause_event_id     text NOT NULL
);
CREATE INDEX refunds_customer ON refunds (stripe_customer_id);

-- Checkout sessions this service started (Stripe's or local ones).
CREATE TABLE checkouts (
    session_id      text PRIMARY KEY,
    account_id      uuid NOT NULL,
    plan            text NOT NULL,
    price_id        text NOT NULL,
    amount          bigint NOT NULL DEFAULT 0,
    currency        text NOT NULL DEFAULT 'usd',
    url             text NOT NULL,
    local           boolean NOT NULL,
    status          text NOT NULL DEFAULT 'open',
    success_url     text NOT NULL DEFAULT '',
    cancel_url      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    completed_at    timestamptz
);
CREATE INDEX checkouts_account ON checkouts (account_id, created_at DESC);

-- Each account's access, derived from the facts above.
CREATE TABLE access (
    account_id       uuid PRIMARY KEY,
    status           text NOT NULL,
    plan             text NOT NULL DEFAULT '',
    since            timestamptz NOT NULL DEFAULT now(),
    reason           text NOT NULL DEFAULT '',
    cause_event_id   text NOT NULL DEFAULT '',
    cause_event_type text NOT NULL DEFAULT '',
    grace_until      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX access_grace ON access (grace_until) WHERE status = 'past_due';

CREATE TABLE access_changes (
    id               bigserial PRIMARY KEY,
    account_id       uuid NOT NULL,
    from_status      text NOT NULL,
    to_status        text NOT NULL,
    plan             text NOT NULL DEFAULT '',
    reason           text NOT NULL DEFAULT '',
    cause_event_id   text NOT NULL DEFAULT '',
    cause_event_type text NOT NULL DEFAULT '',
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX access_changes_account ON access_changes (account_id, id DESC);

-- Embedded default only: signed Stripe-shaped webhooks the local checkout still has to deliver
-- to the gateway (retried with backoff until the gateway answers 2xx, like Stripe does).
CREATE TABLE local_webhooks (
    id              bigserial PRIMARY KEY,
    event_id        text NOT NULL UNIQUE,
    body            text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text NOT NULL DEFAULT ''
);
