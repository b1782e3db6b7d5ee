-- Accounts (tenants), their users, sessions, the audit log and login throttling.

CREATE TABLE accounts (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    account_id    UUID NOT NULL REFERENCES accounts (id),
    email         TEXT NOT NULL UNIQUE,   -- normalised (trimmed, lower-case) by the service
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('customer', 'agent', 'admin')),
    password_hash TEXT NOT NULL,          -- argon2id PHC string
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX users_account ON users (account_id);

CREATE TABLE sessions (
    id              UUID PRIMARY KEY,
    token_hash      BYTEA NOT NULL UNIQUE, -- SHA-256 of the opaque token; the token itself is never stored
    user_id         UUID NOT NULL REFERENCES users (id),
    impersonator_id UUID REFERENCES users (id),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL,
    revoked_at      TIMESTAMPTZ,
    client_ip       TEXT
);
CREATE INDEX sessions_live_by_user ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE audit_log (
    id             UUID PRIMARY KEY,
    at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor_user_id  UUID,
    action         TEXT NOT NULL,
    target_user_id UUID,
    account_id     UUID,
    client_ip      TEXT,
    detail         JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at ON audit_log (at DESC);

-- Failed logins per key (`email:<address>` or `ip:<address>`) in a sliding window.
CREATE TABLE login_throttle (
    key               TEXT PRIMARY KEY,
    failures          INT NOT NULL,
    window_started_at TIMESTAMPTZ NOT NULL,
    blocked_until     TIMESTAMPTZ
);
