-- The relay claims rows above the highest sequence number it has already seen (less a window for
-- transactions that commit out of order), so its claim starts where the unpublished rows are and
-- never walks the index entries of rows published earlier. Those stay in an index until a vacuum
-- removes them, and a vacuum may lag (or, on some machines, not run at all).
DROP INDEX IF EXISTS sb_outbox_pending;
CREATE INDEX IF NOT EXISTS sb_outbox_unpublished ON sb_outbox (seq) WHERE published_at IS NULL;
