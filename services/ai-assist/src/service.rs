//! ai-assist's use cases. A ticket's opening and each public message are stored (redacted, with
//! the injection rules the original tripped); a customer message opens a pending draft; drafting
//! reads what it needs, holds no connection while the model answers, checks the answer, then
//! stores the outcome, its audit, the tokens and `ai.draft.ready` / `ai.draft.failed` in one
//! transaction. Nothing here can change a ticket: support-router decides what a suggestion may do.

use std::{collections::BTreeSet, sync::Arc, time::Instant};

use sb_bus::{
    Envelope, Failure, Inbox, OnFailure,
    events::{AccessChanged, AiDraftFailed, AiDraftReady, DraftFailure, DraftSource, MessageAuthor, TicketMessageAdded, TicketOpened},
    outbox::enqueue,
};
use sqlx::{PgConnection, PgPool};
use tracing::{info, warn};

use crate::{
    config::AiConfig,
    domain::{
        Proposal, Source, ThreadMessage, TicketAudit, TicketContext, TicketId, Usage, guard, injection, local,
        prompt::{self, PromptInput},
        redact::redact,
    },
    error::AssistError,
    model::{ModelError, SharedDrafter},
    store::{self, Finished},
};

pub type Result<T> = std::result::Result<T, AssistError>;

/// Who drafts.
#[derive(Clone)]
pub enum Engine {
    /// The deterministic local drafter (no model configured).
    Local,
    Model(SharedDrafter),
}

#[derive(Clone)]
pub struct Assist {
    pool: PgPool,
    cfg: Arc<AiConfig>,
    engine: Engine,
}

/// What drafting one message needs, read in one go.
struct Work {
    d: store::DraftRow,
    ticket: TicketContext,
    subject_flags: Vec<String>,
    thread: Vec<ThreadMessage>,
    plan: Option<crate::domain::AccountPlan>,
    used: i64,
}

/// How many help articles a prompt may carry.
const ARTICLES_PER_PROMPT: usize = 3;

fn rule_names(flags: &[injection::Flag]) -> Vec<String> {
    let mut names: Vec<String> = flags.iter().map(|f| f.rule.to_owned()).collect();
    names.dedup();
    names
}

impl Assist {
    pub fn new(pool: PgPool, cfg: AiConfig, engine: Engine) -> Self {
        Self { pool, cfg: Arc::new(cfg), engine }
    }

    /// Keeps the account's plan (the newest announcement wins). In the inbox transaction.
    pub async fn access_changed(&self, tx: &mut PgConnection, e: &AccessChanged) -> Result<()> {
        store::save_plan(tx, e.account_id, &e.plan, e.to, e.since).await?;
        Ok(())
    }

    /// A ticket was opened: its priority, queue and tier complete the context. In the inbox
    /// transaction (drafting waits for nothing but the message itself).
    pub async fn ticket_opened(&self, tx: &mut PgConnection, e: &TicketOpened) -> Result<()> {
        let flags = rule_names(&injection::detect(&e.subject));
        let ctx = TicketContext {
            ticket_id: e.ticket_id,
            account_id: e.requester.account_id,
            subject: redact(&e.subject).text,
            category: e.category,
            priority: Some(e.priority),
            queue: Some(e.queue),
            tier: Some(e.tier.clone()),
        };
        store::upsert_ticket(tx, &ctx, &flags).await?;
        Ok(())
    }

    /// A public message joined a thread: keep it (redacted); a customer's is drafted for now.
    /// The message carries what drafting needs (subject, category, account), so it waits for no
    /// other event; the opening fills in priority, queue and tier whenever it arrives.
    /// The draft's outcome commits with the event's inbox row.
    pub async fn message_added(&self, cause: &Envelope, e: &TicketMessageAdded, inbox: &Inbox) -> Result<()> {
        let customer = e.author == MessageAuthor::Customer;
        let flags = if customer { rule_names(&injection::detect(&e.body)) } else { Vec::new() };
        for f in &flags {
            metrics::counter!("ai_injection_flags_total", "rule" => f.clone()).increment(1);
        }
        let message = ThreadMessage { id: e.message_id, author: e.author, body: redact(&e.body).text, flags, at: cause.occurred_at };
        let known = TicketContext {
            ticket_id: e.ticket_id,
            account_id: e.requester.account_id,
            subject: redact(&e.subject).text,
            category: e.category.unwrap_or(crate::domain::TicketCategory::Other),
            priority: None,
            queue: None,
            tier: None,
        };
        let subject_flags = rule_names(&injection::detect(&e.subject));
        let mut tx = self.pool.begin().await?;
        // Nothing here needs to outlive a crash on its own: until the draft is finished the event
        // is not acknowledged, and a redelivery records it again. The finishing transaction commits
        // durably, and with it (the log is sequential) this one.
        store::commit_without_flush_wait(&mut tx).await?;
        let recorded = store::record_message(&mut tx, &known, &subject_flags, &message, customer).await?;
        let work = match (customer, recorded.new_draft) {
            (false, _) => None,
            (true, Some(id)) => {
                let t = &recorded.ticket;
                let d = store::DraftRow {
                    id,
                    ticket_id: t.ticket_id,
                    account_id: t.account_id,
                    for_message_id: e.message_id,
                    state: "pending".into(),
                };
                self.load(&mut tx, d, recorded.ticket, recorded.subject_flags).await?
            }
            (true, None) => {
                let d = store::existing_draft(&mut tx, e.message_id).await?;
                self.load(&mut tx, d, recorded.ticket, recorded.subject_flags).await?
            }
        };
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        match work {
            Some(w) => self.draft_work(cause, w, inbox).await,
            None => Ok(()),
        }
    }

    /// What drafting needs, read before the model is asked (`None`: the draft is finished).
    async fn load(
        &self,
        conn: &mut PgConnection,
        d: store::DraftRow,
        ticket: TicketContext,
        subject_flags: Vec<String>,
    ) -> Result<Option<Work>> {
        if d.state != "pending" {
            return Ok(None);
        }
        let (mut thread, plan, used) = store::drafting_inputs(conn, d.ticket_id, ticket.account_id).await?;
        // What came after the message this draft answers belongs to later drafts.
        if let Some(i) = thread.iter().position(|m| m.id == d.for_message_id) {
            thread.truncate(i + 1);
        }
        // Only a model spends the budget.
        let used = if matches!(self.engine, Engine::Model(_)) { used } else { 0 };
        Ok(Some(Work { d, ticket, subject_flags, thread, plan, used }))
    }

    /// Asks the drafter (no connection held meanwhile), checks the answer and stores the outcome.
    async fn draft_work(&self, cause: &Envelope, w: Work, inbox: &Inbox) -> Result<()> {
        let Work { d, ticket, subject_flags, thread, plan, used } = w;
        let flags: BTreeSet<&str> = subject_flags.iter().chain(thread.iter().flat_map(|m| &m.flags)).map(String::as_str).collect();
        if !flags.is_empty() {
            let reason = format!(
                "possible prompt injection in the customer's text ({}): a person handles this ticket",
                flags.into_iter().collect::<Vec<_>>().join(", ")
            );
            return self.fail(cause, &d, DraftFailure::Flagged, &reason, None, Some(inbox)).await;
        }
        if used >= self.cfg.daily_token_budget {
            let reason = format!("the account's daily token budget ({}) is used up", self.cfg.daily_token_budget);
            return self.fail(cause, &d, DraftFailure::Budget, &reason, None, Some(inbox)).await;
        }

        let customer_text: String =
            thread.iter().filter(|m| m.author == MessageAuthor::Customer).map(|m| m.body.as_str()).collect::<Vec<_>>().join(" ");
        let articles =
            prompt::relevant(&self.cfg.articles, ticket.category, &format!("{} {customer_text}", ticket.subject), ARTICLES_PER_PROMPT);
        let input = PromptInput {
            subject: &ticket.subject,
            thread: thread.iter().map(|m| (m.author, m.body.as_str())).collect(),
            // The plan billing announced, else the support tier the ticket was opened on.
            plan: plan.as_ref().map(|p| p.plan.as_str()).filter(|p| !p.is_empty()).or(ticket.tier.as_deref()),
            access: plan.as_ref().map(|p| p.status),
            articles: articles.clone(),
        };
        let (proposal, source, model, call) = match &self.engine {
            Engine::Local => (local::draft(&input, ticket.category, &articles), Source::Local, "local".to_owned(), None),
            Engine::Model(m) => {
                let prompt = prompt::build(&input, &self.cfg.policy.statement);
                for (kind, n) in &prompt.redacted {
                    metrics::counter!("ai_redactions_total", "kind" => *kind).increment(*n as u64);
                }
                let request = serde_json::json!({ "system": prompt.system, "user": prompt.user });
                let started = Instant::now();
                let answer = m.propose(&prompt).await;
                let latency_ms = started.elapsed().as_secs_f64() * 1e3;
                match answer {
                    Ok(a) => {
                        metrics::counter!("ai_calls_total", "outcome" => "ok").increment(1);
                        metrics::counter!("ai_tokens_total", "kind" => "prompt").increment(u64::from(a.usage.prompt_tokens));
                        metrics::counter!("ai_tokens_total", "kind" => "completion").increment(u64::from(a.usage.completion_tokens));
                        (a.proposal, Source::Model, m.name().to_owned(), Some((request, redact(&a.raw).text, a.usage, latency_ms)))
                    }
                    Err(e) => {
                        let outcome = if matches!(e, ModelError::Transient { .. }) { "transient" } else { "refused" };
                        metrics::counter!("ai_calls_total", "outcome" => outcome).increment(1);
                        let mut conn = self.pool.acquire().await?;
                        let call = store::Call {
                            draft_id: d.id,
                            ticket_id: d.ticket_id,
                            account_id: d.account_id,
                            model: m.name(),
                            request: &request,
                            response: None,
                            usage: Usage::default(),
                            latency_ms,
                            outcome,
                            error: Some(&e.to_string()),
                        };
                        store::insert_call(&mut conn, &call).await?;
                        return Err(e.into());
                    }
                }
            }
        };

        let urls: Vec<&str> = articles.iter().map(|a| a.url.as_str()).collect();
        let hits = guard::check(&proposal.reply, &self.cfg.policy, &self.cfg.rules, &urls);
        let summary = redact(&proposal.summary).text;
        let reason = (!hits.is_empty()).then(|| {
            format!(
                "the draft broke a guardrail: {}",
                hits.iter().map(|h| format!("{} ({})", h.rule, h.detail)).collect::<Vec<_>>().join("; ")
            )
        });
        let finished = Finished {
            ready: hits.is_empty(),
            source: source.as_str(),
            model: &model,
            summary: Some(&summary),
            category: Some(proposal.category),
            urgency: Some(proposal.urgency),
            reply: Some(&proposal.reply),
            failure: reason.as_ref().map(|_| "guardrail"),
            reason: reason.as_deref(),
            hits: &hits,
        };
        let mut tx = self.pool.begin().await?;
        let done = match &call {
            // The model's answer: the draft, the call's audit row and its tokens in one statement.
            Some((request, raw, usage, latency_ms)) => {
                let c = store::Call {
                    draft_id: d.id,
                    ticket_id: d.ticket_id,
                    account_id: d.account_id,
                    model: &model,
                    request,
                    response: Some(raw),
                    usage: *usage,
                    latency_ms: *latency_ms,
                    outcome: "ok",
                    error: None,
                };
                store::finish_drafted(&mut tx, d.id, &finished, &c).await?
            }
            None => store::finish_draft(&mut tx, d.id, &finished).await?,
        };
        if !done {
            return Ok(()); // finished meanwhile by a redelivery
        }
        let env = match &reason {
            None => Envelope::caused_by(cause, &ready_event(&d, &proposal, summary, source, model)),
            Some(reason) => Envelope::caused_by(
                cause,
                &AiDraftFailed {
                    ticket_id: d.ticket_id,
                    account_id: d.account_id,
                    draft_id: d.id,
                    for_message_id: d.for_message_id,
                    failure: DraftFailure::Guardrail,
                    reason: reason.clone(),
                },
            ),
        };
        enqueue(&mut tx, &env).await?;
        if !inbox.record(&mut tx).await? {
            return Ok(()); // applied by another delivery meanwhile: this one rolls back
        }
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        for h in &hits {
            metrics::counter!("ai_guardrail_hits_total", "rule" => h.rule.clone()).increment(1);
        }
        let state = if hits.is_empty() { "ready" } else { "failed" };
        metrics::counter!("ai_drafts_total", "state" => state, "source" => source.as_str()).increment(1);
        info!(ticket_id = %d.ticket_id, draft_id = %d.id, state, source = source.as_str(), "draft finished");
        Ok(())
    }

    /// Finishes a draft as failed (nothing proposed) and announces it (with the inbox row of the
    /// event being applied, if one is).
    async fn fail(
        &self,
        cause: &Envelope,
        d: &store::DraftRow,
        failure: DraftFailure,
        reason: &str,
        source: Option<Source>,
        inbox: Option<&Inbox>,
    ) -> Result<()> {
        let name = match failure {
            DraftFailure::Flagged => "flagged",
            DraftFailure::Guardrail => "guardrail",
            DraftFailure::Budget => "budget",
            DraftFailure::Unavailable => "unavailable",
        };
        let mut tx = self.pool.begin().await?;
        let finished = Finished {
            ready: false,
            source: source.map_or("none", Source::as_str),
            model: "",
            summary: None,
            category: None,
            urgency: None,
            reply: None,
            failure: Some(name),
            reason: Some(reason),
            hits: &[],
        };
        if store::finish_draft(&mut tx, d.id, &finished).await? {
            let event = AiDraftFailed {
                ticket_id: d.ticket_id,
                account_id: d.account_id,
                draft_id: d.id,
                for_message_id: d.for_message_id,
                failure,
                reason: reason.to_owned(),
            };
            enqueue(&mut tx, &Envelope::caused_by(cause, &event)).await?;
            if let Some(inbox) = inbox
                && !inbox.record(&mut tx).await?
            {
                return Ok(()); // applied by another delivery meanwhile: this one rolls back
            }
        }
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        metrics::counter!("ai_drafts_total", "state" => "failed", "source" => "none").increment(1);
        info!(ticket_id = %d.ticket_id, draft_id = %d.id, failure = name, "no draft offered");
        Ok(())
    }

    /// What ai-assist did for a ticket, for staff (the gRPC guard admits only them): read in one
    /// snapshot, so a draft and its calls agree.
    pub async fn ticket_audit(&self, ticket: TicketId) -> Result<TicketAudit> {
        let mut tx = sb_runtime::db::snapshot(&self.pool).await?;
        let (ctx, _) = store::ticket(&mut tx, ticket).await?.ok_or(AssistError::NotFound("ticket"))?;
        let injection_flags = store::injection_flags(&mut tx, ticket).await?;
        let drafts = store::drafts_of(&mut tx, ticket).await?;
        let calls = store::calls_of(&mut tx, ticket).await?;
        let tokens_today = match ctx.account_id {
            Some(account) => store::tokens_today(&mut tx, account).await?,
            None => 0,
        };
        tx.commit().await?;
        let daily_token_budget = self.cfg.daily_token_budget;
        Ok(TicketAudit { ticket_id: ticket, account_id: ctx.account_id, injection_flags, drafts, calls, tokens_today, daily_token_budget })
    }

    /// Shows every failed attempt on the ticket's pending drafts ("pending, next attempt at ...");
    /// when the event is parked, its drafts fail as `unavailable` (a replay that then succeeds
    /// offers the draft after all).
    pub fn on_failure(&self) -> OnFailure {
        let this = self.clone();
        Arc::new(move |f: Failure| {
            let this = this.clone();
            Box::pin(async move {
                if let Err(e) = this.record_failure(&f).await {
                    warn!(error = %e, "could not record a failed draft attempt");
                }
            })
        })
    }

    async fn record_failure(&self, f: &Failure) -> Result<()> {
        if f.env.event_type != <TicketMessageAdded as sb_bus::Event>::TYPE {
            return Ok(());
        }
        let Ok(message) = f.env.decode::<TicketMessageAdded>() else { return Ok(()) };
        let reason = redact(&f.reason).text;
        let next = f.next_attempt_in.map(|delay| chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
        let parked = {
            let mut conn = self.pool.acquire().await?;
            let Some(id) = store::pending_for_message(&mut conn, message.message_id).await? else { return Ok(()) };
            store::record_attempt(&mut conn, id, &reason, next).await?;
            match next {
                Some(_) => None,
                None => store::draft(&mut conn, id).await?,
            }
        };
        // Parked: the draft fails as unavailable (the connection above is back in the pool).
        if let Some(d) = parked {
            let why = format!("the model could not be used: {reason}");
            self.fail(&f.env, &d, DraftFailure::Unavailable, &why, Some(Source::Model), None).await?;
        }
        Ok(())
    }
}

fn ready_event(d: &store::DraftRow, p: &Proposal, summary: String, source: Source, model: String) -> AiDraftReady {
    AiDraftReady {
        ticket_id: d.ticket_id,
        account_id: d.account_id,
        draft_id: d.id,
        for_message_id: d.for_message_id,
        summary,
        suggested_category: p.category,
        suggested_urgency: p.urgency,
        reply: p.reply.clone(),
        source: match source {
            Source::Model => DraftSource::Model,
            Source::Local => DraftSource::Local,
        },
        model,
    }
}
