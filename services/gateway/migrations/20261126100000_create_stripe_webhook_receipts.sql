-- Stripe webhooks whose signature verified: one row per Stripe event id, written in the same
-- transaction as the event's `stripe.event.received.v1` outbox row, so a redelivery (Stripe
-- retries, or sends one event twice) is acknowledged without a second event on the bus.
-- The body itself is not kept here (it travels in the outbox row); only its digest.

CREATE TABLE stripe_webhook_receipts (
    event_id       TEXT PRIMARY KEY,                   -- Stripe's `evt_...`
    event_type     TEXT NOT NULL,                      -- e.g. `checkout.session.completed`
    livemode       BOOLEAN NOT NULL,
    stripe_created TIMESTAMPTZ NOT NULL,               -- the event's `created`
    signed_at      TIMESTAMPTZ NOT NULL,               -- `t=` of the Stripe-Signature that verified (first delivery)
    received_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    body_sha256    BYTEA NOT NULL                      -- SHA-256 of the raw body as signed
);
