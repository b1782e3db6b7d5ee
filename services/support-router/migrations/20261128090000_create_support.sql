-- support-router: tickets with their public thread, internal notes, activity log and SLA clocks;
-- the local projections it routes by (users identity announced, plans billing announced); request
-- idempotency and contact-form throttling.
--
-- Retention: tickets, threads, notes and activity are kept (they are the support record). What
-- intake only needs for a while is deleted by the sweeper, in bounded batches, once done (so the
-- tables stay small without relying on autovacuum): idempotency keys after
-- SUPPORT_ROUTER_IDEMPOTENCY_KEY_TTL, fingerprints after the duplicate window, throttle rows
-- after their window.

-- Users as identity announced them (identity.user.signed_up / updated): how a portal requester's
-- email and name are known, and whether a contact-form email belongs to a known user.
CREATE TABLE directory_users (
    user_id    uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    email      text NOT NULL,  -- normalised by identity
    name       text NOT NULL DEFAULT '',
    role       text CHECK (role IN ('customer', 'agent', 'admin')),  -- NULL: only an update seen
    as_of      timestamptz NOT NULL  -- when identity said it (older news never overwrites newer)
);
CREATE INDEX directory_users_email ON directory_users (email);

-- Each account's plan as billing announced it (billing.access.changed), or as billing answered
-- when asked (for accounts no event had told about).
CREATE TABLE account_plans (
    account_id    uuid PRIMARY KEY,
    plan          text NOT NULL DEFAULT '',
    access_status text NOT NULL CHECK (access_status IN ('none', 'pending', 'active', 'past_due', 'revoked')),
    since         timestamptz NOT NULL,  -- billing's time of the decision
    source        text NOT NULL CHECK (source IN ('event', 'billing')),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tickets (
    id                uuid PRIMARY KEY,
    account_id        uuid,          -- NULL: a contact-form ticket from an email no known user has
    requester_user_id uuid,
    requester_email   text,          -- NULL while identity's announcement of the requester is on its way
    requester_name    text NOT NULL DEFAULT '',
    subject           text NOT NULL,
    category          text NOT NULL CHECK (category IN ('billing', 'technical', 'account', 'other')),
    status            text NOT NULL CHECK (status IN ('new', 'open', 'waiting_on_customer', 'resolved')),
    priority          text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    queue             text NOT NULL CHECK (queue IN ('billing', 'technical', 'account', 'human_review')),
    assignee_user_id  uuid,
    tier_at_intake    text NOT NULL CHECK (tier_at_intake IN ('free', 'unknown', 'standard', 'priority')),
    tier_now          text NOT NULL CHECK (tier_now IN ('free', 'unknown', 'standard', 'priority')),
    channel           text NOT NULL CHECK (channel IN ('portal', 'contact_form')),
    priority_reasons  text[] NOT NULL,
    manual_override   boolean NOT NULL DEFAULT false,
    manual_reason     text,
    first_answered_at timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX tickets_account ON tickets (account_id, updated_at DESC);
CREATE INDEX tickets_updated ON tickets (updated_at DESC);
CREATE INDEX tickets_open_queue ON tickets (queue) WHERE status <> 'resolved';
CREATE INDEX tickets_unanswered ON tickets (created_at) WHERE status <> 'resolved' AND first_answered_at IS NULL;
CREATE INDEX tickets_unknown_tier ON tickets (account_id) WHERE status <> 'resolved' AND tier_now = 'unknown';
CREATE INDEX tickets_requester_pending ON tickets (requester_user_id) WHERE requester_email IS NULL;

-- Double submissions. `requester_key` is `user:<id>` or `email:<address>`. Intake claims its row
-- first (the ticket row follows in the same transaction, hence the deferred keys): a concurrent
-- duplicate waits on that one row, and then finds the first ticket; nothing else waits.
-- The same idempotency key from the same requester answers the first ticket again.
CREATE TABLE ticket_requests (
    requester_key   text NOT NULL,
    idempotency_key text NOT NULL,
    ticket_id       uuid NOT NULL REFERENCES tickets (id) DEFERRABLE INITIALLY DEFERRED,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (requester_key, idempotency_key)
);
CREATE INDEX ticket_requests_created ON ticket_requests (created_at);
-- Without a key: the same requester's same subject and body (SHA-256) within the duplicate window
-- is a retried request; a later one takes the row over for a new ticket.
CREATE TABLE ticket_fingerprints (
    requester_key text NOT NULL,
    fingerprint   text NOT NULL,
    ticket_id     uuid NOT NULL REFERENCES tickets (id) DEFERRABLE INITIALLY DEFERRED,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (requester_key, fingerprint)
);
CREATE INDEX ticket_fingerprints_created ON ticket_fingerprints (created_at);

-- The public thread (the ticket's body is its first message).
CREATE TABLE ticket_messages (
    id             uuid PRIMARY KEY,
    ticket_id      uuid NOT NULL REFERENCES tickets (id),
    author         text NOT NULL CHECK (author IN ('customer', 'agent')),
    author_user_id uuid,
    body           text NOT NULL,
    created_at     timestamptz NOT NULL
);
CREATE INDEX ticket_messages_ticket ON ticket_messages (ticket_id, created_at, id);

-- Internal notes: staff only, never in a customer's answer.
CREATE TABLE ticket_notes (
    id             uuid PRIMARY KEY,
    ticket_id      uuid NOT NULL REFERENCES tickets (id),
    author_user_id uuid NOT NULL,
    body           text NOT NULL,
    created_at     timestamptz NOT NULL
);
CREATE INDEX ticket_notes_ticket ON ticket_notes (ticket_id, created_at, id);

-- Who changed what, when and why (staff only).
CREATE TABLE ticket_activity (
    id            uuid PRIMARY KEY,
    ticket_id     uuid NOT NULL REFERENCES tickets (id),
    at            timestamptz NOT NULL,
    actor_user_id uuid,  -- NULL: the system (routing, SLA, plan changes); an impersonator, not the customer, when impersonating
    action        text NOT NULL,
    detail        text NOT NULL
);
CREATE INDEX ticket_activity_ticket ON ticket_activity (ticket_id, at, id);

-- Each ticket's three SLA clocks (see src/domain/sla.rs), in business milliseconds.
CREATE TABLE sla_clocks (
    ticket_id     uuid NOT NULL REFERENCES tickets (id),
    clock         text NOT NULL CHECK (clock IN ('first_response', 'next_response', 'resolution')),
    phase         text NOT NULL CHECK (phase IN ('idle', 'running', 'paused', 'stopped')),
    target_ms     bigint NOT NULL,
    elapsed_ms    bigint NOT NULL DEFAULT 0,  -- used before running_since
    running_since timestamptz,
    due_at        timestamptz,                -- while running
    stopped_at    timestamptz,
    spell         integer NOT NULL DEFAULT 0,
    breached_at   timestamptz,                -- this spell's breach was recorded (and published)
    PRIMARY KEY (ticket_id, clock)
);
CREATE INDEX sla_clocks_overdue ON sla_clocks (due_at) WHERE phase = 'running' AND breached_at IS NULL;

-- A ticket's events held while its requester's email is unknown (a portal ticket opened before
-- identity's announcement of the user arrived); released, in order, when it arrives.
CREATE TABLE held_events (
    seq            bigserial PRIMARY KEY,
    ticket_id      uuid NOT NULL REFERENCES tickets (id),
    event_type     text NOT NULL,
    data           jsonb NOT NULL,
    correlation_id uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX held_events_ticket ON held_events (ticket_id, seq);

-- Contact-form submissions per key (`ip:<address>`, `email:<address>`) in a fixed window.
CREATE TABLE intake_throttle (
    key               text PRIMARY KEY,
    window_started_at timestamptz NOT NULL,
    count             integer NOT NULL
);
CREATE INDEX intake_throttle_window ON intake_throttle (window_started_at);
