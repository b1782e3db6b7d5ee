//! The ticket use cases after intake: reading (customers their account's, staff all), the public
//! thread, internal notes, assignment, manual re-prioritisation, resolving and reopening. Each
//! change locks the ticket, checks the status move (`domain::status`), moves the SLA clocks and
//! writes the activity line and events in one transaction.

use chrono::Utc;
use sb_bus::events::{TicketMessageAdded, TicketPrioritised, TicketResolved};
use sb_runtime::caller::Staff;
use tracing::info;
use uuid::Uuid;

use super::{Cause, Result, Support, Viewer, activity, count_breaches, publish, record_breaches};
use crate::{
    domain::{
        self, Author, Message, Note, QueueCount, SlaClock, Ticket, TicketId, TicketPriority, TicketQueue, TicketView, UserId, status,
        ticket_for_customer,
    },
    error::SupportError,
    store::{self, Filter},
};

impl Support {
    /// Customers: their account's tickets (the filter is ignored). Staff: every ticket, filtered.
    /// Newest activity first.
    pub async fn list_tickets(&self, viewer: &Viewer, filter: Filter, limit: i64) -> Result<Vec<Ticket>> {
        let mut conn = self.pool.acquire().await?;
        match viewer {
            Viewer::Staff(_) => Ok(store::list_tickets(&mut conn, &filter, limit).await?),
            Viewer::Customer(c) => {
                let own = Filter { account: Some(c.account.id()), ..Filter::default() };
                Ok(store::list_tickets(&mut conn, &own, limit).await?.into_iter().map(ticket_for_customer).collect())
            }
        }
    }

    /// One ticket as the viewer may see it, read in one snapshot: the ticket, its thread, notes,
    /// activity and drafts agree (a change committed between two reads cannot show half).
    pub async fn ticket(&self, viewer: &Viewer, id: TicketId) -> Result<TicketView> {
        let mut tx = sb_runtime::db::snapshot(&self.pool).await?;
        let view = match store::ticket(&mut tx, id).await? {
            Some(t) if viewer.may_see(&t) => self.view(&mut tx, t, viewer).await?,
            _ => return Err(SupportError::NotFound("ticket")),
        };
        tx.commit().await?;
        Ok(view)
    }

    /// A public message: the customer's reply (the ticket waits on us again; a resolved one is
    /// reopened), or an agent's answer (the ticket waits on the customer; the response clocks
    /// stop and resolution pauses).
    pub async fn add_message(&self, viewer: &Viewer, id: TicketId, body: String) -> Result<TicketView> {
        let mut tx = self.pool.begin().await?;
        let t = self.lock_visible(&mut tx, id, viewer).await?;
        let (t, _, breaches) = self.post_message(&mut tx, t, viewer, body).await?;
        let view = self.view(&mut tx, t, viewer).await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        count_breaches(&breaches);
        Ok(view)
    }

    /// Adds a public message to a locked ticket: the status move, the clocks, the thread, the
    /// activity line and `support.ticket.message_added.v1` (and any breach it reveals).
    pub(super) async fn post_message(
        &self,
        tx: &mut sqlx::PgConnection,
        mut t: Ticket,
        viewer: &Viewer,
        body: String,
    ) -> Result<(Ticket, Message, Vec<SlaClock>)> {
        let now = Utc::now();
        let h = &self.cfg.hours;
        let targets = self.cfg.sla.targets(t.tier_now, t.priority);
        let answered_before = t.first_answered_at.is_some();
        let (author, action, breaches) = match viewer {
            Viewer::Customer(_) => {
                let (next, reopened) = status::customer_reply(t.status);
                t.status = next;
                if reopened {
                    t.clocks.reopened(h, now, answered_before, targets);
                    let line =
                        activity(now, Some(viewer.actor()), "reopened", format!("reopened by the customer's reply{}", viewer.acting_as()));
                    store::insert_activity(tx, t.id, &line).await?;
                } else {
                    t.clocks.customer_replied(h, now, answered_before, targets);
                }
                (Author::Customer, "replied", Vec::new())
            }
            Viewer::Staff(_) => {
                t.status = status::agent_answer(t.status).map_err(SupportError::WrongStatus)?;
                t.first_answered_at.get_or_insert(now);
                (Author::Agent, "answered", t.clocks.agent_answered(h, now))
            }
        };
        t.updated_at = now;
        let author_user_id = match author {
            // Impersonation writes as the customer; the activity line names the admin.
            Author::Customer => Some(viewer.principal().user_id),
            Author::Agent => Some(viewer.actor()),
        };
        let message = Message { id: Uuid::now_v7(), author, author_user_id, body, created_at: now };
        store::update_ticket(tx, &t).await?;
        store::insert_message(tx, t.id, &message).await?;
        let detail = format!(
            "{} message; status {}{}",
            if author == Author::Agent { "public answer" } else { "customer" },
            t.status,
            viewer.acting_as()
        );
        store::insert_activity(tx, t.id, &activity(now, Some(viewer.actor()), action, detail)).await?;
        publish(tx, &t, Cause::Request(None), |requester| TicketMessageAdded {
            ticket_id: t.id,
            requester,
            subject: t.subject.clone(),
            message_id: message.id,
            author: message.author.into(),
            author_user_id: message.author_user_id,
            body: message.body.clone(),
            category: Some(t.category),
        })
        .await?;
        record_breaches(tx, &t, &breaches, now, Cause::Request(None)).await?;
        Ok((t, message, breaches.iter().map(|b| b.clock).collect()))
    }

    /// An internal note (never shown to customers, never published).
    pub async fn add_note(&self, staff: &Staff, id: TicketId, body: String) -> Result<TicketView> {
        let now = Utc::now();
        let viewer = Viewer::Staff(staff.clone());
        let mut tx = self.pool.begin().await?;
        let mut t = self.lock_visible(&mut tx, id, &viewer).await?;
        t.updated_at = now;
        let note = Note { id: Uuid::now_v7(), author_user_id: staff.0.user_id, body, created_at: now };
        store::update_ticket(&mut tx, &t).await?;
        store::insert_note(&mut tx, t.id, &note).await?;
        store::insert_activity(&mut tx, t.id, &activity(now, Some(staff.0.user_id), "noted", "internal note added")).await?;
        let view = self.view(&mut tx, t, &viewer).await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        Ok(view)
    }

    /// Assigns the ticket to an agent (`None`: unassigns). Staff are not in the local directory,
    /// so the id is taken as given.
    pub async fn assign(&self, staff: &Staff, id: TicketId, assignee: Option<UserId>) -> Result<TicketView> {
        let now = Utc::now();
        let viewer = Viewer::Staff(staff.clone());
        let mut tx = self.pool.begin().await?;
        let mut t = self.lock_visible(&mut tx, id, &viewer).await?;
        if t.assignee != assignee {
            let detail = match (t.assignee, assignee) {
                (_, Some(a)) => format!("assigned to {a}"),
                (Some(old), None) => format!("unassigned (was {old})"),
                (None, None) => "unassigned".to_owned(),
            };
            t.assignee = assignee;
            t.updated_at = now;
            store::update_ticket(&mut tx, &t).await?;
            store::insert_activity(&mut tx, t.id, &activity(now, Some(staff.0.user_id), "assigned", detail)).await?;
        }
        let view = self.view(&mut tx, t, &viewer).await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        Ok(view)
    }

    /// A person sets the priority and/or queue, with a reason: the ticket is then theirs to route
    /// (automation may raise, never lower, it), and this is the only way out of human review.
    pub async fn reprioritise(
        &self,
        staff: &Staff,
        id: TicketId,
        priority: Option<TicketPriority>,
        queue: Option<TicketQueue>,
        reason: String,
    ) -> Result<TicketView> {
        if priority.is_none() && queue.is_none() {
            return Err(domain::Invalid::new("priority", "set a priority, a queue or both").into());
        }
        let now = Utc::now();
        let viewer = Viewer::Staff(staff.clone());
        let mut tx = self.pool.begin().await?;
        let mut t = self.lock_visible(&mut tx, id, &viewer).await?;
        status::reprioritise(t.status).map_err(SupportError::WrongStatus)?;
        let (from_priority, from_queue) = (t.priority, t.queue);
        t.priority = priority.unwrap_or(t.priority);
        t.queue = queue.unwrap_or(t.queue);
        let by_person = format!("set by a person: {reason}");
        let earlier = t.priority_reasons.iter().filter(|r| !r.starts_with("set by a person: ")).cloned();
        t.priority_reasons = std::iter::once(by_person.clone()).chain(earlier).collect();
        t.manual_override = true;
        t.manual_reason = Some(reason.clone());
        t.updated_at = now;
        t.clocks.retarget(&self.cfg.hours, self.cfg.sla.targets(t.tier_now, t.priority));
        let changed = (from_priority, from_queue) != (t.priority, t.queue);
        store::update_ticket(&mut tx, &t).await?;
        let detail = format!("priority {from_priority} → {}, queue {from_queue} → {}: {reason}", t.priority, t.queue);
        store::insert_activity(&mut tx, t.id, &activity(now, Some(staff.0.user_id), "prioritised", detail)).await?;
        if changed {
            publish(&mut tx, &t, Cause::Request(None), |requester| TicketPrioritised {
                ticket_id: t.id,
                requester,
                subject: t.subject.clone(),
                from_priority,
                to_priority: t.priority,
                from_queue,
                to_queue: t.queue,
                reasons: vec![by_person],
                by: Some(staff.0.user_id),
            })
            .await?;
        }
        let view = self.view(&mut tx, t, &viewer).await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        Ok(view)
    }

    /// Resolves the ticket (staff), or closes it (its customer). Every clock stops.
    pub async fn resolve(&self, viewer: &Viewer, id: TicketId) -> Result<TicketView> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let mut t = self.lock_visible(&mut tx, id, viewer).await?;
        t.status = status::resolve(t.status).map_err(SupportError::WrongStatus)?;
        let breaches = t.clocks.resolved(&self.cfg.hours, now);
        t.updated_at = now;
        let by_customer = matches!(viewer, Viewer::Customer(_));
        store::update_ticket(&mut tx, &t).await?;
        let (action, detail) = if by_customer { ("closed", "closed by the customer") } else { ("resolved", "resolved") };
        store::insert_activity(&mut tx, t.id, &activity(now, Some(viewer.actor()), action, format!("{detail}{}", viewer.acting_as())))
            .await?;
        record_breaches(&mut tx, &t, &breaches, now, Cause::Request(None)).await?;
        let by = Some(if by_customer { viewer.principal().user_id } else { viewer.actor() });
        publish(&mut tx, &t, Cause::Request(None), |requester| TicketResolved {
            ticket_id: t.id,
            requester,
            subject: t.subject.clone(),
            by,
            by_customer,
        })
        .await?;
        let view = self.view(&mut tx, t, viewer).await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        count_breaches(&breaches.iter().map(|b| b.clock).collect::<Vec<SlaClock>>());
        info!(ticket_id = %id, by_customer, "ticket resolved");
        Ok(view)
    }

    /// Staff reopen a resolved ticket: it waits on us again, resolution runs on.
    pub async fn reopen(&self, staff: &Staff, id: TicketId, reason: Option<String>) -> Result<TicketView> {
        let now = Utc::now();
        let viewer = Viewer::Staff(staff.clone());
        let mut tx = self.pool.begin().await?;
        let mut t = self.lock_visible(&mut tx, id, &viewer).await?;
        t.status = status::reopen(t.status).map_err(SupportError::WrongStatus)?;
        let targets = self.cfg.sla.targets(t.tier_now, t.priority);
        t.clocks.reopened(&self.cfg.hours, now, t.first_answered_at.is_some(), targets);
        t.updated_at = now;
        store::update_ticket(&mut tx, &t).await?;
        let detail = match &reason {
            Some(r) => format!("reopened: {r}"),
            None => "reopened".to_owned(),
        };
        store::insert_activity(&mut tx, t.id, &activity(now, Some(staff.0.user_id), "reopened", detail)).await?;
        let view = self.view(&mut tx, t, &viewer).await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        Ok(view)
    }

    /// Each queue's open tickets, unanswered ones and the age of the oldest of those.
    pub async fn queues(&self, _staff: &Staff) -> Result<Vec<QueueCount>> {
        let mut conn = self.pool.acquire().await?;
        Ok(store::queue_counts(&mut conn).await?)
    }
}
