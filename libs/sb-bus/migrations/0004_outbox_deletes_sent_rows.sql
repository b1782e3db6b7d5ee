-- The relay deletes a row once the broker confirmed its event, instead of setting
-- `published_at`: marking wrote a second copy of every row (and two index entries), and the
-- copies waited for a cleanup and then a vacuum. `published_at` stays for rows marked by
-- earlier relays (and any still running during a rolling upgrade); the relay's periodic cleanup
-- deletes those through this index, which new rows never enter.
CREATE INDEX IF NOT EXISTS sb_outbox_marked_sent ON sb_outbox (seq) WHERE published_at IS NOT NULL;
