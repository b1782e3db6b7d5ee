-- The audit reads a ticket's model calls (gRPC GetTicketAudit).
CREATE INDEX model_calls_ticket ON model_calls (ticket_id, at);
