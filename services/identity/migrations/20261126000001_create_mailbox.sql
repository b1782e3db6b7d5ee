-- The embedded mailbox: where identity's emails go when no SMTP server is configured (the default),
-- readable through the admin API. `id` is the email's idempotency key (the id of the bus event that
-- requested it), so a redelivered request stores nothing new.
CREATE TABLE IF NOT EXISTS sb_mailbox (
    id          UUID PRIMARY KEY,
    to_address  TEXT NOT NULL,
    subject     TEXT NOT NULL,
    text_body   TEXT NOT NULL,
    template    TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS sb_mailbox_to_address_created_at_idx ON sb_mailbox (to_address, created_at);
