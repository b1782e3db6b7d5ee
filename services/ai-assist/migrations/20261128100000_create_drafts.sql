-- ai-assist's own state. Customer text is stored only redacted: ai-assist never holds an email,
-- card or key it could leak. Internal notes never reach it (it reads public events only).

-- What ai-assist knows of a ticket: from its first message (support.ticket.message_added.v1),
-- completed by support.ticket.opened.v1 (priority, queue, tier) whichever arrives first.
CREATE TABLE tickets (
    ticket_id   uuid PRIMARY KEY,
    account_id  uuid,
    subject     text NOT NULL,          -- redacted
    flags       text[] NOT NULL DEFAULT '{}',  -- injection rules the original subject tripped
    category    text NOT NULL,
    priority    text,                   -- NULL until the opening arrives
    queue       text,
    tier        text,
    opened_at   timestamptz NOT NULL DEFAULT now()
);

-- The public thread (support.ticket.message_added.v1), redacted, with the injection rules each
-- original message tripped.
CREATE TABLE thread_messages (
    id          uuid PRIMARY KEY,
    ticket_id   uuid NOT NULL,
    author      text NOT NULL CHECK (author IN ('customer', 'agent')),
    body        text NOT NULL,
    flags       text[] NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL
);
CREATE INDEX thread_messages_ticket ON thread_messages (ticket_id, at, id);

-- Each account's plan as billing last announced it (billing.access.changed.v1).
CREATE TABLE account_plans (
    account_id    uuid PRIMARY KEY,
    plan          text NOT NULL,
    access_status text NOT NULL,
    since         timestamptz NOT NULL
);

-- One draft per customer message: pending until drafted, then ready (offered to staff) or failed
-- (kept for audit with its reason and guardrail hits, never offered).
CREATE TABLE drafts (
    id                 uuid PRIMARY KEY,
    ticket_id          uuid NOT NULL,
    account_id         uuid,
    for_message_id     uuid NOT NULL UNIQUE,
    state              text NOT NULL CHECK (state IN ('pending', 'ready', 'failed')),
    source             text,
    model              text,
    summary            text,
    suggested_category text,
    suggested_urgency  text,
    reply              text,
    failure            text CHECK (failure IN ('flagged', 'guardrail', 'budget', 'unavailable')),
    reason             text,
    guard_hits         jsonb NOT NULL DEFAULT '[]',
    attempts           integer NOT NULL DEFAULT 0,
    last_error         text,
    next_attempt_at    timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz
);
CREATE INDEX drafts_ticket ON drafts (ticket_id, created_at);

-- The audit of every model call: the redacted request and answer, tokens, latency and outcome.
CREATE TABLE model_calls (
    id                uuid PRIMARY KEY,
    draft_id          uuid NOT NULL,
    ticket_id         uuid NOT NULL,
    account_id        uuid,
    model             text NOT NULL,
    request           jsonb NOT NULL,
    response          text,
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    latency_ms        double precision NOT NULL,
    outcome           text NOT NULL CHECK (outcome IN ('ok', 'transient', 'refused')),
    error             text,
    at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_calls_draft ON model_calls (draft_id);

-- Tokens each account used per UTC day (the daily budget).
CREATE TABLE token_use (
    account_id uuid NOT NULL,
    day        date NOT NULL,
    tokens     bigint NOT NULL,
    PRIMARY KEY (account_id, day)
);
