-- Refunds an admin asked billing to issue. The row is the intent, committed before Stripe is
-- asked (its id is the Idempotency-Key Stripe gets, so asking again never refunds twice), and
-- then the outcome. `idempotency_key` is the caller's (the console sends one per refund form), so
-- a double click or a retried request finds the first request instead of making a second.
-- Access does not change here: it follows Stripe's `charge.refunded`, like every other change.
CREATE TABLE refund_requests (
    id               uuid PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    account_id       uuid NOT NULL,
    invoice_id       text NOT NULL,
    amount           bigint NOT NULL CHECK (amount > 0),
    currency         text NOT NULL,
    reason           text NOT NULL,
    -- The admin who asked (identity's user id).
    requested_by     uuid NOT NULL,
    -- requested (Stripe not answered yet), pending, succeeded, failed or canceled (Stripe's words).
    status           text NOT NULL,
    stripe_refund_id text NOT NULL DEFAULT '',
    charge_id        text NOT NULL DEFAULT '',
    -- Why Stripe refused, in Stripe's words (no secret of ours).
    failure          text NOT NULL DEFAULT '',
    -- While one attempt is asking Stripe, until when (another attempt waits rather than asks too).
    asking_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refund_requests_invoice ON refund_requests (invoice_id);
CREATE INDEX refund_requests_account ON refund_requests (account_id, created_at DESC);
