//! The work that follows events and time: the local user directory (identity's announcements),
//! the plan projection (billing's, or billing asked by the refresher), re-prioritising open
//! tickets when a plan changes, and the SLA sweeper with the backlog gauges.

use chrono::{DateTime, Utc};
use sb_bus::{
    Envelope, Event,
    events::{AccessChanged, SlaBreached, TicketMessageAdded, TicketOpened, TicketPrioritised, TicketResolved, UserSignedUp, UserUpdated},
};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Cause, Result, Support, activity, count_breaches, publish, record_breaches, release};
use crate::{
    billing::BillingPlans,
    domain::{
        AccountId, DirectoryUser, PlanProjection, SlaClock, Ticket, UserId,
        routing::{Current, reroute},
        sla::Breach,
    },
    error::SupportError,
    store::{self, PlanSource},
};

/// Tickets (or accounts) one round of a background loop takes at most.
const BATCH: i64 = 100;

impl Support {
    /// A new user joins the directory; tickets they opened before it arrived get their email, and
    /// their held events go out.
    pub async fn user_signed_up(&self, tx: &mut PgConnection, env: &Envelope, e: &UserSignedUp) -> Result<usize> {
        let user = DirectoryUser {
            user_id: e.user_id,
            account_id: e.account_id,
            email: e.email.clone(),
            name: e.name.clone(),
            role: Some(e.role),
        };
        store::lock_account(tx, e.account_id, false).await?;
        store::save_user(tx, &user, env.occurred_at).await?;
        let released = self.release_held(tx, e.user_id).await?;
        // A customer's sign-up creates their account, which has no access until billing says
        // otherwise: the plan is known (free) without asking billing. Stored as the oldest news,
        // so any change billing announced already, or announces later, wins.
        if e.role == sb_types::Role::Customer {
            let none = PlanProjection { plan: String::new(), status: sb_types::AccessStatus::None, since: DateTime::<Utc>::UNIX_EPOCH };
            if store::save_plan_if_newer(tx, e.account_id, &none, PlanSource::Event).await? {
                self.reroute_account(tx, e.account_id, Some(&none), Cause::Event(env)).await?;
            }
        }
        Ok(released)
    }

    /// A user's new profile (newer news only).
    pub async fn user_updated(&self, tx: &mut PgConnection, env: &Envelope, e: &UserUpdated) -> Result<usize> {
        let user = DirectoryUser { user_id: e.user_id, account_id: e.account_id, email: e.email.clone(), name: e.name.clone(), role: None };
        store::lock_account(tx, e.account_id, false).await?;
        store::save_user(tx, &user, env.occurred_at).await?;
        self.release_held(tx, e.user_id).await
    }

    /// Gives the user's tickets that were waiting for it their email, and publishes their held
    /// events in order. Returns how many tickets.
    async fn release_held(&self, tx: &mut PgConnection, user: UserId) -> Result<usize> {
        let ids = store::tickets_awaiting_requester(tx, user).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let Some(known) = store::user(tx, user).await? else { return Ok(0) };
        let tickets = store::tickets_for_update(tx, &ids, false).await?;
        for mut t in tickets {
            t.requester.email = Some(known.email.clone());
            if t.requester.name.is_empty() {
                t.requester.name = known.name.clone();
            }
            store::update_ticket(tx, &t).await?;
            let Some(requester) = t.requester.for_events() else { continue };
            for (event_type, data, correlation) in store::take_held(tx, t.id).await? {
                match event_type.as_str() {
                    TicketOpened::TYPE => release::<TicketOpened>(tx, data, &requester, correlation).await?,
                    TicketMessageAdded::TYPE => release::<TicketMessageAdded>(tx, data, &requester, correlation).await?,
                    TicketPrioritised::TYPE => release::<TicketPrioritised>(tx, data, &requester, correlation).await?,
                    SlaBreached::TYPE => release::<SlaBreached>(tx, data, &requester, correlation).await?,
                    TicketResolved::TYPE => release::<TicketResolved>(tx, data, &requester, correlation).await?,
                    other => return Err(SupportError::Internal(format!("a held event of unknown type {other}"))),
                }
            }
            info!(ticket_id = %t.id, "requester known: held events published");
        }
        Ok(ids.len())
    }

    /// billing's change of an account's access: stored if newer than what is known, and the
    /// account's open tickets re-prioritised (in the handler's transaction).
    pub async fn access_changed(&self, tx: &mut PgConnection, env: &Envelope, e: &AccessChanged) -> Result<usize> {
        let plan = PlanProjection { plan: e.plan.clone(), status: e.to, since: e.since };
        store::lock_account(tx, e.account_id, false).await?;
        let Some(open) = store::save_plan_and_open_tickets(tx, e.account_id, &plan, PlanSource::Event).await? else {
            debug!(account_id = %e.account_id, since = %e.since, "access change older than the known one: ignored");
            return Ok(0);
        };
        self.reroute_tickets(tx, &open, Some(&plan), Cause::Event(env)).await
    }

    /// Re-applies the rules to the account's open tickets with this plan. Returns how many changed.
    async fn reroute_account(
        &self,
        tx: &mut PgConnection,
        account: AccountId,
        plan: Option<&PlanProjection>,
        cause: Cause<'_>,
    ) -> Result<usize> {
        let ids = store::open_tickets_of(tx, account).await?;
        self.reroute_tickets(tx, &ids, plan, cause).await
    }

    /// Re-applies the rules to these open tickets (of one account) with this plan. Returns how
    /// many changed.
    async fn reroute_tickets(
        &self,
        tx: &mut PgConnection,
        ids: &[crate::domain::TicketId],
        plan: Option<&PlanProjection>,
        cause: Cause<'_>,
    ) -> Result<usize> {
        if ids.is_empty() {
            // Most access changes are of accounts with no open ticket: no locking query for them.
            return Ok(0);
        }
        let tickets = store::tickets_for_update(tx, ids, false).await?;
        let mut changed = 0;
        for t in tickets {
            changed += usize::from(self.reroute_ticket(tx, t, plan, cause).await?);
        }
        Ok(changed)
    }

    /// The rules again for one (locked) ticket: automation may raise or lower its own choices,
    /// never takes a ticket out of human review, never lowers a person's priority. An activity
    /// line when anything changed, `support.ticket.prioritised.v1` when priority or queue did.
    async fn reroute_ticket(&self, tx: &mut PgConnection, mut t: Ticket, plan: Option<&PlanProjection>, cause: Cause<'_>) -> Result<bool> {
        let body = store::first_message(tx, t.id).await?;
        let computed = self.cfg.rules.decide(&t.subject, &body, t.category, plan);
        let tier = computed.tier;
        let current =
            Current { priority: t.priority, queue: t.queue, manual_reason: t.manual_reason.as_deref().filter(|_| t.manual_override) };
        let (priority, queue, reasons) = reroute(&current, computed);
        if (tier, priority, queue) == (t.tier_now, t.priority, t.queue) {
            return Ok(false);
        }
        let now = Utc::now();
        let (from_tier, from_priority, from_queue) = (t.tier_now, t.priority, t.queue);
        t.tier_now = tier;
        t.priority = priority;
        t.queue = queue;
        t.priority_reasons = reasons.clone();
        t.updated_at = now;
        t.clocks.retarget(&self.cfg.hours, self.cfg.sla.targets(tier, priority));
        store::update_ticket(tx, &t).await?;
        let detail = format!(
            "plan changed: tier {from_tier} → {tier}; priority {from_priority} → {priority}; queue {from_queue} → {queue}: {}",
            reasons.join("; ")
        );
        store::insert_activity(tx, t.id, &activity(now, None, "prioritised", detail)).await?;
        if (from_priority, from_queue) != (priority, queue) {
            publish(tx, &t, cause, |requester| TicketPrioritised {
                ticket_id: t.id,
                requester,
                subject: t.subject.clone(),
                from_priority,
                to_priority: priority,
                from_queue,
                to_queue: queue,
                reasons,
                by: None,
            })
            .await?;
        }
        info!(ticket_id = %t.id, %from_tier, %tier, %from_priority, %priority, %queue, "ticket re-prioritised");
        Ok(true)
    }

    /// One round of the plan refresher: accounts with open tickets of an unknown tier get their
    /// plan — the projection if it arrived meanwhile, else billing's answer — and their tickets
    /// re-prioritised. Stops at billing's first failure (it is down; the next round tries again).
    pub async fn refresh_plans(&self, billing: &BillingPlans) -> Result<usize> {
        let accounts = {
            let mut conn = self.pool.acquire().await?;
            store::accounts_of_unknown_tier(&mut conn, BATCH).await?
        };
        let mut refreshed = 0;
        for account in accounts {
            let known = {
                let mut conn = self.pool.acquire().await?;
                store::plan(&mut conn, account).await?
            };
            let fetched = match known {
                Some(_) => None,
                // No connection is held while billing answers.
                None => match billing.plan(account).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        warn!(account_id = %account, error = %e, "could not ask billing for a plan; will retry");
                        metrics::counter!("support_plan_refresh_failures_total").increment(1);
                        break;
                    }
                },
            };
            let mut tx = self.pool.begin().await?;
            store::lock_account(&mut tx, account, false).await?;
            if let Some(p) = &fetched {
                store::save_plan_if_newer(&mut tx, account, p, PlanSource::Billing).await?;
            }
            // Whatever is stored now (billing's answer, or a newer event that beat it).
            let plan = store::plan(&mut tx, account).await?;
            refreshed += self.reroute_account(&mut tx, account, plan.as_ref(), Cause::System).await?;
            sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        }
        Ok(refreshed)
    }

    /// Runs [`Support::refresh_plans`] every `SUPPORT_ROUTER_PLAN_REFRESH_INTERVAL` until shutdown.
    pub async fn run_plan_refresher(self, billing: BillingPlans, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.plan_refresh_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.refresh_plans(&billing).await {
                Ok(0) => {}
                Ok(n) => info!(tickets = n, "plans refreshed from billing"),
                Err(e) => warn!(error = %e, "plan refresh failed; will retry"),
            }
        }
    }

    /// One round of the SLA sweeper: each running clock past due whose breach is not recorded is
    /// marked, with an activity line and `support.ticket.sla_breached.v1`, in one transaction.
    /// Tickets another transaction holds are skipped (the next round takes them), and clocks are
    /// re-read under the ticket's lock, so concurrent sweepers (replicas) record a breach once.
    pub async fn sweep_sla(&self) -> Result<usize> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let ids = store::overdue_tickets(&mut tx, now, BATCH).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let tickets = store::tickets_for_update(&mut tx, &ids, true).await?;
        let mut recorded: Vec<SlaClock> = Vec::new();
        for mut t in tickets {
            let breaches = mark_overdue(&mut t, now);
            if breaches.is_empty() {
                continue;
            }
            store::update_ticket(&mut tx, &t).await?;
            record_breaches(&mut tx, &t, &breaches, now, Cause::System).await?;
            recorded.extend(breaches.iter().map(|b| b.clock));
        }
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        count_breaches(&recorded);
        Ok(recorded.len())
    }

    /// Forgets idempotency keys, fingerprints and throttle windows that are done (bounded rounds
    /// of deletes, so the tables stay small whether or not autovacuum keeps up).
    pub async fn prune_intake(&self) -> Result<u64> {
        let mut total = 0;
        for _ in 0..10 {
            let mut conn = self.pool.acquire().await?;
            let c = &self.cfg;
            let gone = store::prune_intake(&mut conn, c.idempotency_key_ttl, c.duplicate_window, c.contact_window, 1000).await?;
            total += gone;
            if gone < 1000 {
                break;
            }
        }
        if total > 0 {
            debug!(rows = total, "intake keys pruned");
        }
        Ok(total)
    }

    /// Sets the backlog gauges: open tickets per queue, and the age of the oldest open ticket
    /// without a first response (the founder's alarm is at 24 h).
    pub async fn refresh_gauges(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let counts = store::queue_counts(&mut conn).await?;
        for c in &counts {
            metrics::gauge!("support_tickets_open", "queue" => c.queue.as_str()).set(c.open as f64);
        }
        let oldest = counts.iter().map(|c| c.oldest_unanswered_seconds).max().unwrap_or(0);
        metrics::gauge!("support_backlog_oldest_unanswered_seconds").set(oldest as f64);
        Ok(())
    }

    /// Runs the sweeper and refreshes the gauges every `SUPPORT_ROUTER_SLA_SWEEP_INTERVAL`.
    pub async fn run_sla_sweeper(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.sla_sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A full batch may mean more are waiting: go again (bounded) before sleeping.
            for _ in 0..10 {
                match self.sweep_sla().await {
                    Ok(n) if n > 0 => info!(breaches = n, "SLA breaches recorded"),
                    Ok(_) => break,
                    Err(e) => {
                        warn!(error = %e, "SLA sweep failed; will retry");
                        break;
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
            }
            if let Err(e) = self.prune_intake().await {
                warn!(error = %e, "pruning intake's keys failed; will retry");
            }
            if let Err(e) = self.refresh_gauges().await {
                warn!(error = %e, "refreshing the backlog gauges failed");
            }
        }
    }
}

/// Marks the ticket's overdue clocks breached (their due time is when they were due).
fn mark_overdue(t: &mut Ticket, now: DateTime<Utc>) -> Vec<Breach> {
    let mut breaches = Vec::new();
    for which in SlaClock::ALL {
        let clock = t.clocks.get_mut(*which);
        if clock.overdue(now) {
            clock.breached_at = Some(now);
            breaches.push(Breach { clock: *which, due_at: clock.due_at.unwrap_or(now) });
        }
    }
    breaches
}
