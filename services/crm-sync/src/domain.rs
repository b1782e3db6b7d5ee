//! crm-sync's rules, free of I/O: the lifecycle stage an account's access implies, how a sync
//! stands, what a user's CRM contact should hold, which change wins when changes arrive out of
//! order, and how lifecycle stages move.

use std::fmt;

use chrono::{DateTime, Utc};
pub use sb_types::{AccessStatus, AccountId, Email, Invalid, Role, UserId};

/// Whether a user with this role is a CRM contact: customers are; staff are not.
pub fn is_contact(role: Role) -> bool {
    match role {
        Role::Customer => true,
        Role::Agent | Role::Admin => false,
    }
}

/// Where a customer stands with the business, as billing's access implies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Signed up, not paying (no checkout, or one not confirmed yet).
    Lead,
    /// Paying (access active, or past due within the grace period).
    Customer,
    /// Access ended.
    Churned,
}

impl Stage {
    pub fn for_access(access: AccessStatus) -> Self {
        match access {
            AccessStatus::None | AccessStatus::Pending => Stage::Lead,
            AccessStatus::Active | AccessStatus::PastDue => Stage::Customer,
            AccessStatus::Revoked => Stage::Churned,
        }
    }
}

/// A CRM lifecycle stage id (`lead`, `customer`, a portal's own `churned`): lower-case ASCII
/// letters, digits and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LifecycleStage(String);

impl LifecycleStage {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim().to_ascii_lowercase();
        if s.is_empty() || s.len() > 100 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Invalid::new("lifecycle stage", "a lifecycle stage id: letters, digits and _ only"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LifecycleStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The CRM's stage id for each [`Stage`] (`CRM_SYNC_STAGE_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages {
    pub lead: LifecycleStage,
    pub customer: LifecycleStage,
    pub churned: LifecycleStage,
}

impl Stages {
    pub fn id(&self, stage: Stage) -> &LifecycleStage {
        match stage {
            Stage::Lead => &self.lead,
            Stage::Customer => &self.customer,
            Stage::Churned => &self.churned,
        }
    }
}

impl Default for Stages {
    /// HubSpot's own stages; `other` for churned customers, as HubSpot has no churn stage.
    fn default() -> Self {
        let known = |s: &str| LifecycleStage(s.to_owned());
        Self { lead: known("lead"), customer: known("customer"), churned: known("other") }
    }
}

/// HubSpot's default lifecycle stages in their forward order.
pub const STAGE_ORDER: [&str; 8] =
    ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer", "evangelist", "other"];

/// Whether moving a contact from stage `from` (as the CRM holds it; empty = unset) to `to` goes
/// backwards, or sideways to a stage outside HubSpot's default order, which HubSpot only accepts
/// after clearing the stage.
pub fn is_backward(from: &str, to: &LifecycleStage) -> bool {
    let to = to.as_str();
    if from.is_empty() || from == to {
        return false;
    }
    match (STAGE_ORDER.iter().position(|s| *s == from), STAGE_ORDER.iter().position(|s| *s == to)) {
        (Some(f), Some(t)) => t < f,
        _ => true,
    }
}

/// How a user's contact sync stands (stored as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum SyncStatus {
    /// The CRM does not hold the newest state yet: a write is under way or waits for its next attempt.
    Pending,
    /// The CRM holds what it should.
    Synced,
    /// Gave up: the CRM refused, or the retry ladder ran out (the event is in the DLQ).
    Failed,
}

impl SyncStatus {
    /// After a failed attempt: pending while another attempt is scheduled, else failed.
    pub fn after_failure(retrying: bool) -> Self {
        if retrying { SyncStatus::Pending } else { SyncStatus::Failed }
    }
}

/// Whether a change made at `incoming` replaces what is known as of `known`: changes apply in the
/// order they were made, whatever order they arrive in, and applying one twice changes nothing.
pub fn supersedes(known: Option<DateTime<Utc>>, incoming: DateTime<Utc>) -> bool {
    known.is_none_or(|k| incoming >= k)
}

/// A user's profile as crm-sync knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub email: Email,
    pub name: String,
    /// When identity made this profile (None for rows from before it was recorded).
    pub as_of: Option<DateTime<Utc>>,
}

impl Profile {
    /// The profile after identity's change made at `at`, or `None` when it is older than this one.
    pub fn after(&self, email: &Email, name: &str, at: DateTime<Utc>) -> Option<Profile> {
        supersedes(self.as_of, at).then(|| Profile { email: email.clone(), name: name.to_owned(), as_of: Some(at) })
    }

    /// Whether the CRM would hold something else for `other`.
    pub fn differs_for_crm(&self, other: &Profile) -> bool {
        self.email != other.email || self.name != other.name
    }
}

/// An account's access as billing announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessChange {
    pub to: AccessStatus,
    /// The plan's name (empty while none is known).
    pub plan: String,
    /// `None`: not said (the known one stays).
    pub stripe_customer_id: Option<String>,
    /// When billing decided it.
    pub since: DateTime<Utc>,
}

/// What crm-sync knows about an account: its name (from the sign-up) and billing's last word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub name: String,
    pub plan: String,
    pub access: AccessStatus,
    pub stripe_customer_id: Option<String>,
    /// billing's `since` of the change applied last (None: billing has said nothing yet).
    pub as_of: Option<DateTime<Utc>>,
}

impl Default for AccountState {
    /// An account billing has said nothing about: no access, a lead.
    fn default() -> Self {
        Self { name: String::new(), plan: String::new(), access: AccessStatus::None, stripe_customer_id: None, as_of: None }
    }
}

impl AccountState {
    /// The state after billing's `change`, or `None` when billing decided it before the change
    /// known (an older change arriving late). A change without a Stripe customer id keeps the
    /// known one.
    pub fn after(&self, change: &AccessChange) -> Option<AccountState> {
        supersedes(self.as_of, change.since).then(|| AccountState {
            name: self.name.clone(),
            plan: change.plan.clone(),
            access: change.to,
            stripe_customer_id: change.stripe_customer_id.clone().filter(|c| !c.is_empty()).or_else(|| self.stripe_customer_id.clone()),
            as_of: Some(change.since),
        })
    }

    /// Whether the CRM would hold something else for `other`.
    pub fn differs_for_crm(&self, other: &AccountState) -> bool {
        self.name != other.name
            || self.plan != other.plan
            || self.access != other.access
            || self.stripe_customer_id != other.stripe_customer_id
    }
}

/// What crm-sync keeps current on a contact. Free text left empty is unknown and not written
/// (never "clear"); so are the typed values left `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactProps {
    /// The user's name (HubSpot's `firstname`/`lastname` are filled from it).
    pub name: String,
    pub account_id: Option<AccountId>,
    pub account_name: String,
    pub plan: String,
    pub stripe_customer_id: String,
    pub access_status: Option<AccessStatus>,
    /// The stage the contact should be at.
    pub lifecycle_stage: Option<LifecycleStage>,
}

/// The CRM contact linked to a user, and the stage crm-sync last wrote to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedContact {
    pub id: String,
    pub stage: String,
}

/// What the CRM should hold for one user, and what crm-sync knows of their contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub user_id: UserId,
    pub account_id: AccountId,
    pub email: Email,
    pub name: String,
    pub account: AccountState,
    pub contact: Option<LinkedContact>,
    /// Bumped by every change of what the contact should hold.
    pub version: i64,
    /// The `version` the CRM was last confirmed to hold.
    pub synced_version: i64,
}

impl Wanted {
    pub fn in_sync(&self) -> bool {
        self.synced_version >= self.version
    }

    pub fn stage<'a>(&self, stages: &'a Stages) -> &'a LifecycleStage {
        stages.id(Stage::for_access(self.account.access))
    }

    pub fn props(&self, stages: &Stages) -> ContactProps {
        ContactProps {
            name: self.name.clone(),
            account_id: Some(self.account_id),
            account_name: self.account.name.clone(),
            plan: self.account.plan.clone(),
            stripe_customer_id: self.account.stripe_customer_id.clone().unwrap_or_default(),
            access_status: Some(self.account.access),
            lifecycle_stage: Some(self.stage(stages).clone()),
        }
    }
}

/// A user's contact sync as operators and the portal see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactSync {
    pub user_id: UserId,
    pub account_id: AccountId,
    pub email: Email,
    pub crm_contact_id: Option<String>,
    /// The stage last written to the CRM (empty before the first write).
    pub lifecycle_stage: String,
    pub status: SyncStatus,
    /// Why the last attempt failed (empty when synced).
    pub last_error: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub synced_at: Option<DateTime<Utc>>,
}

/// A failed attempt to bring contacts up to date, as the bus reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    pub reason: String,
    /// Attempts so far (1 after the first failure).
    pub attempts: i32,
    /// When the next attempt comes; `None`: no more (the event is in the DLQ).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl FailedAttempt {
    pub fn status(&self) -> SyncStatus {
        SyncStatus::after_failure(self.next_attempt_at.is_some())
    }
}

/// How many contact book entries one listing returns: 50 unless asked, at most 500.
pub fn book_page_size(requested: i32) -> i64 {
    if requested <= 0 { 50 } else { i64::from(requested.min(500)) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stage(s: &str) -> LifecycleStage {
        LifecycleStage::parse(s).unwrap()
    }

    fn at(h: u32) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(2026, 11, 26, h, 0, 0).unwrap()
    }

    #[test]
    fn access_implies_a_stage() {
        let stages = Stages::default();
        let ids: Vec<&str> = AccessStatus::ALL.iter().map(|a| stages.id(Stage::for_access(*a)).as_str()).collect();
        assert_eq!(ids, ["lead", "lead", "customer", "customer", "other"]);
        assert!(is_contact(Role::Customer) && !is_contact(Role::Agent) && !is_contact(Role::Admin));
    }

    #[test]
    fn stage_ids_are_checked() {
        assert_eq!(stage(" Churned ").as_str(), "churned");
        assert_eq!(stage("1234567").as_str(), "1234567");
        for bad in ["", "gone away", "a-b", "lead;"] {
            assert!(LifecycleStage::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stage_moves() {
        assert!(!is_backward("", &stage("lead")));
        assert!(!is_backward("lead", &stage("customer")));
        assert!(!is_backward("customer", &stage("customer")));
        assert!(is_backward("customer", &stage("lead")));
        assert!(!is_backward("customer", &stage("other")), "other is after customer in HubSpot's order");
        assert!(is_backward("other", &stage("customer")));
        assert!(is_backward("customer", &stage("churned")), "a custom stage: clear then set to be safe");
    }

    #[test]
    fn newer_changes_win_whatever_order_they_arrive_in() {
        let change = |to, h, customer: Option<&str>| AccessChange {
            to,
            plan: "pro".into(),
            stripe_customer_id: customer.map(str::to_owned),
            since: at(h),
        };
        let known = AccountState::default();
        let paid = known.after(&change(AccessStatus::Active, 10, Some("cus_1"))).unwrap();
        assert_eq!((paid.access, paid.stripe_customer_id.as_deref(), paid.as_of), (AccessStatus::Active, Some("cus_1"), Some(at(10))));
        assert!(paid.differs_for_crm(&known));
        assert_eq!(paid.after(&change(AccessStatus::Pending, 9, None)), None, "older: ignored");
        let again = paid.after(&change(AccessStatus::Active, 10, Some("cus_1"))).unwrap();
        assert!(!again.differs_for_crm(&paid), "the same change twice changes nothing");
        let revoked = paid.after(&change(AccessStatus::Revoked, 11, None)).unwrap();
        assert_eq!(revoked.stripe_customer_id.as_deref(), Some("cus_1"), "a change without a customer id keeps the known one");

        let email = Email::parse("ada@example.com").unwrap();
        let p = Profile { email: email.clone(), name: "Ada".into(), as_of: Some(at(10)) };
        assert_eq!(p.after(&email, "Ada L", at(9)), None);
        let renamed = p.after(&email, "Ada L", at(11)).unwrap();
        assert!(renamed.differs_for_crm(&p));
        assert!(!p.after(&email, "Ada", at(12)).unwrap().differs_for_crm(&p), "newer but the same: as_of moves, nothing to push");
        assert!(supersedes(None, at(1)));
    }

    #[test]
    fn what_a_contact_should_hold() {
        let w = Wanted {
            user_id: UserId::new(),
            account_id: AccountId::new(),
            email: Email::parse("ada@example.com").unwrap(),
            name: "Ada Lovelace".into(),
            account: AccountState { name: "Engines".into(), access: AccessStatus::PastDue, ..AccountState::default() },
            contact: None,
            version: 2,
            synced_version: 1,
        };
        assert!(!w.in_sync());
        let p = w.props(&Stages::default());
        assert_eq!(p.lifecycle_stage.as_ref().map(LifecycleStage::as_str), Some("customer"));
        assert_eq!((p.access_status, p.account_id, p.stripe_customer_id.as_str()), (Some(AccessStatus::PastDue), Some(w.account_id), ""));
        let failed = FailedAttempt { reason: "CRM unavailable".into(), attempts: 4, next_attempt_at: None };
        assert_eq!(failed.status(), SyncStatus::Failed);
        assert_eq!((book_page_size(0), book_page_size(20), book_page_size(10_000)), (50, 20, 500));
    }
}
