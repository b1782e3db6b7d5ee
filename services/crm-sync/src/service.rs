//! What crm-sync does: keeps one CRM contact per user current — found by email first, created only
//! when none exists, linked, with the account's plan, Stripe customer id, access status and the
//! lifecycle stage they imply — and records how each sync stands.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use sb_bus::{Envelope, Failure, Handler, HandlerError, catalog, enqueue};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    SERVICE,
    config::CrmConfig,
    crm::{Contact, ContactProps, Crm, CrmError},
    store,
};

#[derive(Clone)]
pub struct Sync {
    pub pool: PgPool,
    pub cfg: Arc<CrmConfig>,
    pub crm: Arc<dyn Crm>,
}

impl From<CrmError> for HandlerError {
    fn from(e: CrmError) -> Self {
        // "CRM unavailable: ..." / "CRM refused: <the CRM's message>": what operators read in the DLQ.
        match e {
            CrmError::Transient { .. } => HandlerError::Transient(e.to_string()),
            CrmError::Permanent(_) => HandlerError::Permanent(e.to_string()),
        }
    }
}

impl Sync {
    /// The stage an access status implies.
    pub fn stage_for(&self, access: &str) -> &str {
        match access {
            "active" | "past_due" => &self.cfg.stage_customer,
            "revoked" => &self.cfg.stage_churned,
            _ => &self.cfg.stage_lead,
        }
    }

    /// Brings one user's contact up to date inside the handler's transaction (the link and the
    /// `crm.contact.synced.v1` event commit with the event's inbox row).
    pub async fn sync_user(&self, conn: &mut PgConnection, cause: &Envelope, user: Uuid) -> Result<(), HandlerError> {
        let Some(u) = store::user(conn, user).await? else { return Ok(()) };
        store::lock_email(conn, &u.email).await?;
        // Re-read under the lock: a concurrent handler may have linked the contact meanwhile.
        let Some(u) = store::user(conn, user).await? else { return Ok(()) };
        let a = store::account(conn, u.account_id).await?;
        let stage = self.stage_for(&a.access_status).to_owned();
        let props = ContactProps {
            name: u.name.clone(),
            account_id: u.account_id.to_string(),
            account_name: a.account_name.clone(),
            plan: a.plan.clone(),
            stripe_customer_id: a.stripe_customer_id.clone(),
            access_status: a.access_status.clone(),
            lifecycle_stage: stage.clone(),
        };
        let existing = match &u.crm_contact_id {
            Some(id) => Some(Contact { id: id.clone(), email: u.email.clone(), lifecycle_stage: u.lifecycle_stage.clone() }),
            None => self.crm.find_by_email(&u.email).await?,
        };
        let contact = match existing {
            Some(c) => self.crm.update(&c, &props).await?,
            None => {
                let created = self.crm.create(&u.email, &props).await?;
                // Created by someone else in between (the CRM answered with the existing contact).
                if created.lifecycle_stage == stage { created } else { self.crm.update(&created, &props).await? }
            }
        };
        store::mark_synced(conn, user, &contact.id, &stage).await?;
        let data = json!({
            "user_id": user, "account_id": u.account_id, "email": u.email, "crm_contact_id": contact.id,
            "lifecycle_stage": stage, "access_status": a.access_status, "plan": a.plan, "crm": self.crm.name(),
        });
        enqueue(conn, &Envelope::caused_by(cause, SERVICE, catalog::CRM_CONTACT_SYNCED, data).with_account(u.account_id).with_user(user))
            .await?;
        metrics::counter!("crm_sync_synced_total", "crm" => self.crm.name()).increment(1);
        info!(%user, contact = %contact.id, stage = %stage, crm = self.crm.name(), "CRM contact synced");
        Ok(())
    }

    /// Called by the bus for every failed attempt: records "pending until <next attempt>" or
    /// "failed: <reason>" where operators and the portal can see it, and says so on the bus when
    /// the sync gave up.
    pub async fn record_failure(&self, f: Failure) {
        let next = f.next_attempt_in.and_then(|d| chrono::Duration::from_std(d).ok()).map(|d| Utc::now() + d);
        let kind = if next.is_some() { "retrying" } else { "parked" };
        metrics::counter!("crm_sync_failures_total", "crm" => self.crm.name(), "kind" => kind).increment(1);
        let attempts = i32::try_from(f.attempts).unwrap_or(i32::MAX);
        let result = match (f.env.event_type.as_str(), f.env.user_id, f.env.account_id) {
            (catalog::IDENTITY_USER_SIGNED_UP, Some(user), Some(account)) => {
                let text = |k: &str| f.env.data.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                store::mark_failed(&self.pool, user, account, &text("email"), &text("name"), &f.reason, attempts, next).await
            }
            (_, _, Some(account)) => store::mark_account_failed(&self.pool, account, &f.reason, attempts, next).await,
            _ => Ok(()),
        };
        if let Err(e) = result {
            warn!(error = %e, "could not record a CRM sync failure");
        }
        if next.is_none() {
            let data = json!({"event_id": f.env.id, "event_type": f.env.event_type, "reason": f.reason, "attempts": f.attempts});
            let mut env = Envelope::caused_by(&f.env, SERVICE, catalog::CRM_SYNC_FAILED, data);
            env.user_id = f.env.user_id;
            let published = async {
                let mut conn = self.pool.acquire().await?;
                enqueue(&mut conn, &env).await
            };
            if let Err(e) = published.await {
                warn!(error = %e, "could not announce a failed CRM sync");
            }
        }
    }
}

/// `identity.user.signed_up.v1`: a new customer becomes a lead.
pub struct SignedUp(pub Sync);

#[async_trait]
impl Handler for SignedUp {
    async fn handle(&self, event: &Envelope, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let (Some(user), Some(account)) = (event.user_id, event.account_id) else {
            return Err(HandlerError::permanent("signed_up without user_id/account_id"));
        };
        let text = |k: &str| event.data.get(k).and_then(Value::as_str).unwrap_or_default();
        if !text("role").is_empty() && text("role") != "customer" {
            return Ok(()); // staff are not CRM contacts
        }
        if text("email").is_empty() {
            return Err(HandlerError::permanent("signed_up without an email"));
        }
        store::upsert_user(tx, user, account, text("email"), text("name")).await?;
        store::set_account_name(tx, account, text("account_name")).await?;
        self.0.sync_user(tx, event, user).await
    }

    /// Calls the CRM: never re-run because another event of a batch failed.
    fn batchable(&self) -> bool {
        false
    }
}

/// `billing.access.changed.v1`: plan, customer id, access and stage follow the account's access.
pub struct AccessChanged(pub Sync);

#[async_trait]
impl Handler for AccessChanged {
    async fn handle(&self, event: &Envelope, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let d = &event.data;
        let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default();
        let account = event
            .account_id
            .or_else(|| Uuid::parse_str(text("account_id")).ok())
            .ok_or_else(|| HandlerError::permanent("access change without account_id"))?;
        if !matches!(text("to"), "none" | "pending" | "active" | "past_due" | "revoked") {
            return Err(HandlerError::permanent(format!("access change with unknown status {:?}", text("to"))));
        }
        let as_of = d.get("since").and_then(|s| serde_json::from_value(s.clone()).ok()).unwrap_or(event.occurred_at);
        if !store::apply_access(tx, account, text("plan"), text("to"), text("stripe_customer_id"), as_of).await? {
            return Ok(()); // older than what is known
        }
        for u in store::users_of_account(tx, account).await? {
            self.0.sync_user(tx, event, u.user_id).await?;
        }
        Ok(())
    }

    fn batchable(&self) -> bool {
        false
    }
}
