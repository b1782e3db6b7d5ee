-- crm-sync writes to the CRM with no transaction or lock open (issue 9). Each change of what a
-- user's contact should hold bumps `desired_version`; a write to the CRM records `synced_version`
-- only if `desired_version` did not move while the CRM answered, else it writes again. So
-- concurrent events converge on the newest state without serialising on a database lock.

ALTER TABLE crm_users
    ADD COLUMN desired_version bigint NOT NULL DEFAULT 1,
    ADD COLUMN synced_version  bigint NOT NULL DEFAULT 0,
    -- When identity changed the profile (the event's `occurred_at`), so an older update arriving
    -- late does not overwrite a newer one.
    ADD COLUMN profile_as_of   timestamptz;

UPDATE crm_users SET synced_version = desired_version WHERE status = 'synced';

ALTER TABLE crm_users
    ADD CONSTRAINT crm_users_status_known CHECK (status IN ('pending', 'synced', 'failed')),
    ADD CONSTRAINT crm_users_versions CHECK (synced_version <= desired_version);

-- Statuses are read as a closed set now. Before unknown ones were refused (913d270), a status
-- billing never sends could be stored; it was read as "none" (a lead), so it becomes that.
UPDATE crm_accounts SET access_status = 'none'
 WHERE access_status NOT IN ('none', 'pending', 'active', 'past_due', 'revoked');

ALTER TABLE crm_accounts
    ADD CONSTRAINT crm_accounts_access_status_known
        CHECK (access_status IN ('none', 'pending', 'active', 'past_due', 'revoked'));
