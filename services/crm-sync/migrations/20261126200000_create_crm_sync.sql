-- crm-sync: each user's link to their CRM contact and how its sync stands, what billing last said
-- about each account, and the embedded contact book (used when no HubSpot token is configured).

CREATE TABLE crm_users (
    user_id          uuid PRIMARY KEY,
    account_id       uuid NOT NULL,
    -- Normalised (lower-cased) by identity.
    email            text NOT NULL,
    name             text NOT NULL DEFAULT '',
    crm_contact_id   text,
    -- The stage last written to the CRM.
    lifecycle_stage  text NOT NULL DEFAULT '',
    -- pending | synced | failed
    status           text NOT NULL DEFAULT 'pending',
    last_error       text NOT NULL DEFAULT '',
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    synced_at        timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crm_users_account ON crm_users (account_id);
CREATE INDEX crm_users_email ON crm_users (email);

-- What billing said last about each account (`as_of` = billing's `since`, so an older
-- billing.access.changed never overwrites a newer one).
CREATE TABLE crm_accounts (
    account_id         uuid PRIMARY KEY,
    account_name       text NOT NULL DEFAULT '',
    plan               text NOT NULL DEFAULT '',
    access_status      text NOT NULL DEFAULT 'none',
    stripe_customer_id text NOT NULL DEFAULT '',
    as_of              timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- The embedded CRM: one contact per email, with the same stage rules as HubSpot.
CREATE TABLE contact_book (
    id                 bigserial PRIMARY KEY,
    email              text NOT NULL UNIQUE,
    name               text NOT NULL DEFAULT '',
    account_id         text NOT NULL DEFAULT '',
    account_name       text NOT NULL DEFAULT '',
    plan               text NOT NULL DEFAULT '',
    stripe_customer_id text NOT NULL DEFAULT '',
    access_status      text NOT NULL DEFAULT '',
    lifecycle_stage    text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
