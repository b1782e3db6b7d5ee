-- AI drafts attached to tickets as suggestions only staff see (ai.draft.ready.v1 /
-- ai.draft.failed.v1). A draft reaches the customer only as an agent's answer, after approval.
CREATE TABLE ticket_drafts (
    id                 uuid PRIMARY KEY,
    ticket_id          uuid NOT NULL REFERENCES tickets (id),
    for_message_id     uuid NOT NULL,
    state              text NOT NULL
        CHECK (state IN ('offered', 'approved', 'rejected', 'superseded', 'refused', 'flagged', 'unavailable')),
    summary            text NOT NULL DEFAULT '',
    suggested_category text,
    suggested_urgency  text,
    reply              text NOT NULL DEFAULT '',
    source             text NOT NULL DEFAULT '',
    model              text NOT NULL DEFAULT '',
    reason             text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    decided_by         uuid,
    decided_at         timestamptz,
    sent_message_id    uuid
);
CREATE INDEX ticket_drafts_ticket ON ticket_drafts (ticket_id, created_at DESC);
