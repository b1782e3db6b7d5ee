-- The bus's own tables, created in every service's database.

-- Transactional outbox: written in the same transaction as the state change it announces.
CREATE TABLE IF NOT EXISTS sb_outbox (
    seq             BIGSERIAL PRIMARY KEY,
    event_id        UUID NOT NULL UNIQUE,
    event_type      TEXT NOT NULL,
    payload         JSONB NOT NULL,
    headers         JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at    TIMESTAMPTZ,
    attempts        INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS sb_outbox_pending ON sb_outbox (next_attempt_at, seq) WHERE published_at IS NULL;

-- Inbox: one row per event a consumer has applied, committed with the effect itself.
CREATE TABLE IF NOT EXISTS sb_inbox (
    consumer     TEXT NOT NULL,
    event_id     UUID NOT NULL,
    event_type   TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
