//! AI drafts on tickets (see `domain::assist` for the rules): ai-assist's drafts are attached as
//! staff-only suggestions; a suggested urgency may raise a priority; a flagged ticket goes to
//! human review; an agent's approval sends a draft as their answer, once.

use chrono::Utc;
use sb_bus::{
    Envelope,
    events::{AiDraftFailed, AiDraftReady, DraftFailure, DraftSource, TicketPrioritised},
};
use sb_runtime::caller::Staff;
use sqlx::PgConnection;
use tracing::{info, warn};
use uuid::Uuid;

use super::{Cause, Result, Support, Viewer, activity, count_breaches, publish};
use crate::{
    domain::{
        Ticket, TicketId, TicketQueue, TicketStatus, TicketView,
        assist::{self, Draft, DraftState},
    },
    error::SupportError,
    store,
};

impl Support {
    /// `ai.draft.ready.v1`: offered to staff unless it repeats an internal note; its urgency may
    /// raise the ticket's priority. In the inbox transaction.
    pub async fn draft_ready(&self, tx: &mut PgConnection, env: &Envelope, e: &AiDraftReady) -> Result<()> {
        let Some(t) = store::ticket_for_update(tx, e.ticket_id).await? else {
            warn!(ticket_id = %e.ticket_id, "a draft for an unknown ticket: dropped");
            return Ok(());
        };
        let notes = store::notes(tx, t.id).await?;
        let bodies: Vec<&str> = notes.iter().map(|n| n.body.as_str()).collect();
        let repeats = assist::repeats_note(&e.reply, &bodies) || assist::repeats_note(&e.summary, &bodies);
        let now = Utc::now();
        let (state, reason) = if repeats {
            (DraftState::Refused, "it repeats an internal note: not offered".to_owned())
        } else {
            (DraftState::Offered, String::new())
        };
        let draft = Draft {
            summary: e.summary.clone(),
            suggested_category: Some(e.suggested_category),
            suggested_urgency: Some(e.suggested_urgency),
            reply: e.reply.clone(),
            source: match e.source {
                DraftSource::Model => "model",
                DraftSource::Local => "local",
            }
            .to_owned(),
            model: e.model.clone(),
            ..Draft::bare(e.draft_id, e.for_message_id, state, reason, now)
        };
        if !store::insert_draft(tx, t.id, &draft).await? {
            return Ok(());
        }
        if repeats {
            store::insert_activity(tx, t.id, &activity(now, None, "ai_draft", "AI draft refused: it repeats an internal note")).await?;
            metrics::counter!("support_ai_drafts_total", "state" => "refused").increment(1);
            return Ok(());
        }
        store::supersede_drafts(tx, t.id, draft.id).await?;
        let line =
            format!("AI draft offered ({}, {}); suggests {} / {}", draft.source, draft.model, e.suggested_category, e.suggested_urgency);
        store::insert_activity(tx, t.id, &activity(now, None, "ai_draft", line)).await?;
        metrics::counter!("support_ai_drafts_total", "state" => "offered").increment(1);
        if t.status != TicketStatus::Resolved
            && let Some((priority, queue)) = assist::raise(t.priority, t.queue, t.manual_override, e.suggested_urgency)
        {
            let reason = format!("AI suggested urgency {}", e.suggested_urgency);
            self.move_ticket(tx, t, priority, queue, reason, Cause::Event(env)).await?;
        }
        Ok(())
    }

    /// `ai.draft.failed.v1`: recorded; a ticket flagged for prompt injection goes to human review.
    pub async fn draft_failed(&self, tx: &mut PgConnection, env: &Envelope, e: &AiDraftFailed) -> Result<()> {
        let Some(t) = store::ticket_for_update(tx, e.ticket_id).await? else {
            warn!(ticket_id = %e.ticket_id, "a failed draft for an unknown ticket: dropped");
            return Ok(());
        };
        let state = match e.failure {
            DraftFailure::Flagged => DraftState::Flagged,
            DraftFailure::Guardrail => DraftState::Refused,
            DraftFailure::Budget | DraftFailure::Unavailable => DraftState::Unavailable,
        };
        let now = Utc::now();
        let draft = Draft::bare(e.draft_id, e.for_message_id, state, e.reason.clone(), now);
        if !store::insert_draft(tx, t.id, &draft).await? {
            return Ok(());
        }
        store::insert_activity(tx, t.id, &activity(now, None, "ai_draft", format!("AI draft {}: {}", state, e.reason))).await?;
        metrics::counter!("support_ai_drafts_total", "state" => state.as_str()).increment(1);
        if state == DraftState::Flagged && t.queue != TicketQueue::HumanReview && t.status != TicketStatus::Resolved {
            let priority = t.priority;
            let reason = "possible prompt injection in the customer's text: a person handles this ticket".to_owned();
            self.move_ticket(tx, t, priority, TicketQueue::HumanReview, reason, Cause::Event(env)).await?;
        }
        Ok(())
    }

    /// Automation moves a (locked) ticket: the reasons, clocks, activity line and event.
    async fn move_ticket(
        &self,
        tx: &mut PgConnection,
        mut t: Ticket,
        priority: crate::domain::TicketPriority,
        queue: TicketQueue,
        reason: String,
        cause: Cause<'_>,
    ) -> Result<()> {
        let now = Utc::now();
        let (from_priority, from_queue) = (t.priority, t.queue);
        t.priority = priority;
        t.queue = queue;
        t.priority_reasons.push(reason.clone());
        t.updated_at = now;
        t.clocks.retarget(&self.cfg.hours, self.cfg.sla.targets(t.tier_now, t.priority));
        store::update_ticket(tx, &t).await?;
        let detail = format!("priority {from_priority} → {priority}, queue {from_queue} → {queue}: {reason}");
        store::insert_activity(tx, t.id, &activity(now, None, "prioritised", detail)).await?;
        publish(tx, &t, cause, |requester| TicketPrioritised {
            ticket_id: t.id,
            requester,
            subject: t.subject.clone(),
            from_priority,
            to_priority: priority,
            from_queue,
            to_queue: queue,
            reasons: vec![reason],
            by: None,
        })
        .await?;
        info!(ticket_id = %t.id, %from_priority, %priority, %queue, "ticket moved by an AI suggestion or flag");
        Ok(())
    }

    /// An agent sends an offered draft as their answer (as drafted, or `edited`). Approving an
    /// approved draft again sends nothing and answers the ticket as it is.
    pub async fn approve_draft(&self, staff: &Staff, id: TicketId, draft: Uuid, edited: Option<String>) -> Result<TicketView> {
        let viewer = Viewer::Staff(staff.clone());
        let mut tx = self.pool.begin().await?;
        let t = self.lock_visible(&mut tx, id, &viewer).await?;
        let d = store::draft_for_update(&mut tx, id, draft).await?.ok_or(SupportError::NotFound("draft"))?;
        match d.state {
            DraftState::Approved => {
                let view = self.view(&mut tx, t, &viewer).await?;
                sb_bus::outbox::commit(tx, crate::SERVICE).await?;
                return Ok(view);
            }
            DraftState::Offered => {}
            other => return Err(SupportError::WrongStatus(format!("the draft is {other}: only an offered draft can be sent"))),
        }
        let was_edited = edited.as_ref().is_some_and(|b| *b != d.reply);
        let body = edited.unwrap_or(d.reply);
        let (t, message, breaches) = self.post_message(&mut tx, t, &viewer, body).await?;
        store::decide_draft(&mut tx, d.id, DraftState::Approved, staff.0.user_id, None, Some(message.id)).await?;
        let how = if was_edited { "edited and sent" } else { "sent as drafted" };
        store::insert_activity(&mut tx, t.id, &activity(Utc::now(), Some(staff.0.user_id), "ai_draft_approved", format!("AI draft {how}")))
            .await?;
        let view = self.view(&mut tx, t, &viewer).await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        count_breaches(&breaches);
        metrics::counter!("support_ai_drafts_total", "state" => "approved").increment(1);
        Ok(view)
    }

    /// An agent turns an offered draft down (rejecting it again changes nothing).
    pub async fn reject_draft(&self, staff: &Staff, id: TicketId, draft: Uuid, reason: Option<String>) -> Result<TicketView> {
        let viewer = Viewer::Staff(staff.clone());
        let mut tx = self.pool.begin().await?;
        let t = self.lock_visible(&mut tx, id, &viewer).await?;
        let d = store::draft_for_update(&mut tx, id, draft).await?.ok_or(SupportError::NotFound("draft"))?;
        match d.state {
            DraftState::Rejected => {}
            DraftState::Offered => {
                store::decide_draft(&mut tx, d.id, DraftState::Rejected, staff.0.user_id, reason.as_deref(), None).await?;
                let detail = match &reason {
                    Some(r) => format!("AI draft rejected: {r}"),
                    None => "AI draft rejected".to_owned(),
                };
                store::insert_activity(&mut tx, t.id, &activity(Utc::now(), Some(staff.0.user_id), "ai_draft_rejected", detail)).await?;
                metrics::counter!("support_ai_drafts_total", "state" => "rejected").increment(1);
            }
            other => return Err(SupportError::WrongStatus(format!("the draft is {other}: only an offered draft can be rejected"))),
        }
        let view = self.view(&mut tx, t, &viewer).await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        Ok(view)
    }
}
