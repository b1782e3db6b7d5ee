//! Billing's rules, without I/O: what a Stripe event says (as facts stamped with Stripe's time),
//! which fact is newer, and what access an account has given everything known about it.
//!
//! Stripe objects are read leniently, field by field (ids may be expanded objects; unknown fields
//! and other API versions are fine), so a webhook endpoint on a different Stripe API version than
//! the bindings' still works. Statuses are enums: a word Stripe does not use is an error, never a
//! default.

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
pub use sb_types::{AccessStatus, AccountId, Invalid, UserId};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A plan customers can buy: its Stripe price, monthly amount (minor units) and what it unlocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub price_id: String,
    pub amount: i64,
    pub entitlements: Vec<String>,
}

/// What every plan is priced in (Stripe's lower-case currency code).
pub const CURRENCY: &str = "usd";

/// The configured plans; the first is the default for checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans(pub Vec<Plan>);

pub const DEFAULT_PLANS: &str =
    "starter:price_switchboard_starter:1900:portal+support;pro:price_switchboard_pro:4900:portal+support+priority_support+ai_assist";

impl Plans {
    /// `name:price_id:amount:ent1+ent2;name2:...`
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut plans = Vec::new();
        for part in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let fields: Vec<&str> = part.split(':').map(str::trim).collect();
            let [name, price_id, amount, entitlements] = fields[..] else {
                return Err(format!("{part:?} is not name:price_id:amount:entitlement+entitlement"));
            };
            if name.is_empty() || price_id.is_empty() {
                return Err(format!("{part:?}: name and price id are required"));
            }
            let amount = amount
                .parse::<i64>()
                .ok()
                .filter(|a| *a >= 0)
                .ok_or_else(|| format!("{part:?}: amount must be a whole number of cents"))?;
            if plans.iter().any(|p: &Plan| p.name == name || p.price_id == price_id) {
                return Err(format!("{part:?}: plan name and price id must be unique"));
            }
            let entitlements = entitlements.split('+').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned).collect();
            plans.push(Plan { name: name.to_owned(), price_id: price_id.to_owned(), amount, entitlements });
        }
        if plans.is_empty() {
            return Err("at least one plan is required".into());
        }
        Ok(Self(plans))
    }

    pub fn default_plan(&self) -> &Plan {
        &self.0[0]
    }

    pub fn by_name(&self, name: &str) -> Option<&Plan> {
        self.0.iter().find(|p| p.name == name)
    }

    pub fn by_price(&self, price_id: &str) -> Option<&Plan> {
        self.0.iter().find(|p| p.price_id == price_id)
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.name.as_str()).collect()
    }

    /// The plan name for a Stripe price (an unknown price is named by its id; none is empty).
    pub fn name_for_price(&self, price_id: &str) -> String {
        if price_id.is_empty() {
            return String::new();
        }
        self.by_price(price_id).map_or_else(|| price_id.to_owned(), |p| p.name.clone())
    }

    /// Entitlements of a plan; an unknown plan still unlocks the portal itself.
    pub fn entitlements(&self, plan: &str) -> Vec<String> {
        self.by_name(plan).map_or_else(|| vec!["portal".to_owned()], |p| p.entitlements.clone())
    }

    /// What an account with `status` on `plan` may use: nothing unless the status grants access.
    pub fn granted(&self, status: AccessStatus, plan: &str) -> Vec<String> {
        if status.grants() { self.entitlements(plan) } else { Vec::new() }
    }
}

/// What a refund does to access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundPolicy {
    /// A fully refunded charge revokes access (default).
    Full,
    /// Any refund revokes access.
    Any,
    /// Refunds never change access (cancel the subscription to end it).
    Never,
}

impl FromStr for RefundPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Self::Full),
            "any" => Ok(Self::Any),
            "never" => Ok(Self::Never),
            _ => Err("expected full, any or never".into()),
        }
    }
}

/// Defines a closed set of words (Stripe's or ours) as an enum with `as_str`, `Display` and a
/// `FromStr` that refuses any other word, naming `what` it was meant to be.
macro_rules! words {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let words: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    Invalid::new($what, format!("{s:?} is not one of {}", words.join(", ")))
                })
            }
        }
    };
}

words!(
    /// A Stripe subscription's status.
    SubscriptionStatus, "subscription status", {
        Incomplete => "incomplete",
        IncompleteExpired => "incomplete_expired",
        Trialing => "trialing",
        Active => "active",
        PastDue => "past_due",
        Unpaid => "unpaid",
        Canceled => "canceled",
        Paused => "paused",
    }
);

impl SubscriptionStatus {
    /// Tie-break for facts stamped with the same Stripe second: a later stage of a subscription's
    /// life wins, so the same events in any order end in the same state.
    pub fn rank(self) -> i32 {
        match self {
            Self::Incomplete => 0,
            Self::Trialing => 1,
            Self::Active => 2,
            Self::Paused => 3,
            Self::PastDue => 4,
            Self::Unpaid => 5,
            Self::IncompleteExpired => 7,
            Self::Canceled => 8,
        }
    }

    /// Over for good: nothing left to cancel.
    pub fn ended(self) -> bool {
        match self {
            Self::Canceled | Self::IncompleteExpired => true,
            Self::Incomplete | Self::Trialing | Self::Active | Self::PastDue | Self::Unpaid | Self::Paused => false,
        }
    }
}

words!(
    /// A Stripe invoice's status.
    InvoiceStatus, "invoice status", {
        Draft => "draft",
        Open => "open",
        Paid => "paid",
        Uncollectible => "uncollectible",
        Void => "void",
    }
);

impl InvoiceStatus {
    /// Tie-break for invoice facts of the same second: the later stage wins (paid and void are final).
    pub fn rank(self) -> i32 {
        match self {
            Self::Draft => 0,
            Self::Open => 1,
            Self::Uncollectible => 2,
            Self::Paid | Self::Void => 3,
        }
    }
}

words!(
    /// A checkout session this service started. Stored as open or complete; an open one past its
    /// expiry reads as expired.
    CheckoutStatus, "checkout status", {
        Open => "open",
        Complete => "complete",
        Expired => "expired",
    }
);

words!(
    /// What became of a Stripe event (stored with it; a duplicate is never stored again).
    EventOutcome, "event outcome", {
        Applied => "applied",
        /// Seen before (same event id, or Stripe's duplicate Event object for the same change).
        Duplicate => "duplicate",
        /// Not something billing acts on.
        Ignored => "ignored",
        /// Recorded, but no account is known for its customer yet; counts once one is.
        Unlinked => "unlinked",
    }
);

words!(
    /// Where a refund billing was asked to issue stands: `requested` until Stripe answered (the
    /// intent is recorded first), then Stripe's refund status.
    RefundStatus, "refund status", {
        Requested => "requested",
        Pending => "pending",
        RequiresAction => "requires_action",
        Succeeded => "succeeded",
        Failed => "failed",
        Canceled => "canceled",
    }
);

impl RefundStatus {
    /// Whether the refund takes (or may still take) money back, so counts against what is left
    /// to refund of its payment.
    pub fn counts(self) -> bool {
        match self {
            Self::Requested | Self::Pending | Self::RequiresAction | Self::Succeeded => true,
            Self::Failed | Self::Canceled => false,
        }
    }
}

/// The longest reason an admin may give for a refund (Stripe's limit for a metadata value).
pub const REFUND_REASON_MAX: usize = 500;
/// The longest idempotency key a refund request may carry (Stripe's limit).
pub const IDEMPOTENCY_KEY_MAX: usize = 255;

/// An admin's request for a refund, as checked: the reason is kept in the audit log, with the
/// refund and in Stripe's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAsk {
    pub account: AccountId,
    pub invoice_id: String,
    /// Minor units; `None` refunds what is left of the payment.
    pub amount: Option<i64>,
    pub reason: String,
    pub idempotency_key: String,
    pub requested_by: UserId,
}

impl RefundAsk {
    /// Checks each field, naming the first that breaks a rule.
    pub fn new(
        account: AccountId,
        invoice_id: &str,
        amount: i64,
        reason: &str,
        idempotency_key: &str,
        requested_by: UserId,
    ) -> Result<Self, Invalid> {
        let invoice_id = invoice_id.trim();
        if !invoice_id.starts_with("in_") || invoice_id.len() > 255 || invoice_id.chars().any(|c| !c.is_ascii_alphanumeric() && c != '_') {
            return Err(Invalid::new("invoice_id", "must be a Stripe invoice id (in_...)"));
        }
        let amount = match amount {
            0 => None,
            a if a > 0 => Some(a),
            _ => return Err(Invalid::new("amount", "must be a positive number of cents (or 0 for what is left)")),
        };
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(Invalid::new("reason", "say why the payment is refunded (kept in the audit log)"));
        }
        if reason.chars().count() > REFUND_REASON_MAX {
            return Err(Invalid::new("reason", format!("at most {REFUND_REASON_MAX} characters")));
        }
        let key = idempotency_key.trim();
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Invalid::new("idempotency_key", format!("1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters")));
        }
        Ok(Self {
            account,
            invoice_id: invoice_id.to_owned(),
            amount,
            reason: reason.to_owned(),
            idempotency_key: key.to_owned(),
            requested_by,
        })
    }
}

/// A refund billing was asked to issue, and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundRequest {
    /// Also the `Idempotency-Key` Stripe gets, so asking Stripe again never refunds twice.
    pub id: uuid::Uuid,
    pub idempotency_key: String,
    pub account_id: AccountId,
    pub invoice_id: String,
    pub amount: i64,
    pub currency: String,
    pub reason: String,
    pub requested_by: UserId,
    pub status: RefundStatus,
    /// Stripe's refund (`re_...`), once Stripe answered.
    pub stripe_refund_id: Option<String>,
    pub charge_id: Option<String>,
    /// Why Stripe refused, in Stripe's words.
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RefundRequest {
    /// Whether `ask` is this request again (same key, same refund), rather than a different
    /// refund reusing its key.
    pub fn repeats(&self, ask: &RefundAsk) -> bool {
        self.account_id == ask.account && self.invoice_id == ask.invoice_id && ask.amount.is_none_or(|a| a == self.amount)
    }
}

/// Which kind of source stated a subscription's status: at equal time and status, the
/// subscription object itself is the most direct witness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Checkout = 0,
    Invoice = 1,
    Subscription = 2,
}

/// The full tie-break of a fact (after its time): status stage first, then its source, so the
/// same facts in any order leave the same row, cause included.
pub fn fact_rank(status: SubscriptionStatus, source: Source) -> i32 {
    status.rank() * 10 + source as i32
}

/// Facts read back from Stripe's API describe the present; they outrank any event of the same second.
pub const REFETCHED_RANK: i32 = 1000;

/// A received Stripe event, with the fields billing uses.
#[derive(Debug, Clone)]
pub struct StripeEvent {
    pub id: String,
    pub event_type: String,
    pub created: DateTime<Utc>,
    pub livemode: bool,
    /// `data.object`: the Stripe object the event is about.
    pub object: Value,
}

impl StripeEvent {
    /// An event from its checked head (the bus payload's typed fields) and its object.
    pub fn new(id: String, event_type: String, created: i64, livemode: bool, object: Map<String, Value>) -> Result<Self, Invalid> {
        let created = timestamp(created).ok_or_else(|| Invalid::new("created", "is not a time Stripe could have sent"))?;
        Ok(Self { id, event_type, created, livemode, object: Value::Object(object) })
    }

    pub fn object_id(&self) -> String {
        id_at(&self.object, "/id").unwrap_or_default()
    }

    /// Two events with the same key are the same change. Events that happen once per object key on
    /// (object, type); repeatable ones add a digest of the object, so Stripe's duplicate Event
    /// objects for one change collapse while a later, different update still applies.
    pub fn dedupe_key(&self) -> String {
        let once = matches!(
            self.event_type.as_str(),
            "checkout.session.completed" | "customer.subscription.created" | "customer.subscription.deleted" | "invoice.paid"
        );
        if once {
            format!("{}|{}", self.object_id(), self.event_type)
        } else {
            let digest = Sha256::digest(self.object.to_string().as_bytes());
            let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!("{}|{}|{hex}", self.object_id(), self.event_type)
        }
    }
}

pub fn timestamp(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs, 0).single()
}

/// An id at `ptr`: Stripe sends ids either as strings or, when expanded, as objects with `id`.
pub fn id_at(v: &Value, ptr: &str) -> Option<String> {
    match v.pointer(ptr)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The Switchboard account an object names: `client_reference_id` (checkout) or
/// `metadata.account_id` (set on the checkout session, its subscription and its customer).
pub fn account_hint(object: &Value) -> Option<AccountId> {
    [
        "/client_reference_id",
        "/metadata/account_id",
        "/parent/subscription_details/metadata/account_id",
        "/subscription_details/metadata/account_id",
    ]
    .iter()
    .filter_map(|p| str_at(object, p))
    .find_map(|s| s.parse().ok())
}

/// The account id in a Stripe object's metadata (a customer's, a subscription's), if it is one.
pub fn metadata_account(metadata: &HashMap<String, String>) -> Option<AccountId> {
    metadata.get("account_id").and_then(|a| a.parse().ok())
}

/// The newest known state of one subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionFact {
    pub id: String,
    pub customer: String,
    pub status: SubscriptionStatus,
    /// Empty while unknown (an invoice event names no price).
    pub price_id: String,
    pub current_period_end: Option<DateTime<Utc>>,
    pub as_of: DateTime<Utc>,
    pub rank: i32,
    /// Set when this fact is a payment (checkout paid, invoice paid).
    pub paid_at: Option<DateTime<Utc>>,
    pub cause_event_id: String,
    pub cause_event_type: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceFact {
    pub id: String,
    pub customer: String,
    pub subscription_id: Option<String>,
    pub status: InvoiceStatus,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub currency: String,
    pub attempt_count: i64,
    pub next_payment_attempt: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RefundFact {
    pub charge_id: String,
    pub customer: String,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub as_of: DateTime<Utc>,
    pub cause_event_id: String,
}

impl RefundFact {
    pub fn full(&self) -> bool {
        self.amount_refunded >= self.amount
    }
}

/// What one Stripe event tells billing.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// A checkout finished: links the customer to the account; paid subscription checkouts
    /// also make the subscription active.
    CheckoutCompleted {
        session_id: String,
        customer: String,
        account: Option<AccountId>,
        subscription: Option<SubscriptionFact>,
    },
    Subscription(SubscriptionFact),
    /// An invoice changed; paid / failed ones move their subscription too.
    Invoice {
        invoice: InvoiceFact,
        subscription: Option<SubscriptionFact>,
        failed: bool,
    },
    Refund(RefundFact),
    /// Not something billing acts on (other types, one-off payments, objects without a customer).
    Ignored(&'static str),
}

impl Fact {
    /// The Stripe customer the fact is about and the account its object names, if any; or why
    /// billing ignores it.
    pub fn about<'a>(&'a self, ev: &StripeEvent) -> Result<(&'a str, Option<AccountId>), &'static str> {
        match self {
            Fact::CheckoutCompleted { customer, account, .. } => Ok((customer, *account)),
            Fact::Subscription(f) => Ok((&f.customer, account_hint(&ev.object))),
            Fact::Invoice { invoice, .. } => Ok((&invoice.customer, account_hint(&ev.object))),
            Fact::Refund(r) => Ok((&r.customer, None)),
            Fact::Ignored(why) => Err(why),
        }
    }

    /// The subscription the fact moves, whose present state Stripe can be asked for.
    pub fn subscription(&self) -> Option<&SubscriptionFact> {
        match self {
            Fact::CheckoutCompleted { subscription, .. } | Fact::Invoice { subscription, .. } => subscription.as_ref(),
            Fact::Subscription(f) => Some(f),
            Fact::Refund(_) | Fact::Ignored(_) => None,
        }
    }
}

fn object_field(what: &'static str) -> impl Fn(Invalid) -> Invalid {
    move |e| Invalid::new(what, e.message)
}

/// Reads a Stripe subscription object into a fact.
pub fn subscription_fact(o: &Value, ev: &StripeEvent, deleted: bool) -> Result<SubscriptionFact, Invalid> {
    let id = id_at(o, "/id").ok_or_else(|| Invalid::new("data.object.id", "a subscription needs its id"))?;
    let customer = id_at(o, "/customer").ok_or_else(|| Invalid::new("data.object.customer", "a subscription needs its customer"))?;
    let status = match str_at(o, "/status") {
        _ if deleted => SubscriptionStatus::Canceled,
        Some(s) => s.parse().map_err(object_field("data.object.status"))?,
        None => return Err(Invalid::new("data.object.status", "a subscription needs its status")),
    };
    let price_id = id_at(o, "/items/data/0/price").or_else(|| id_at(o, "/plan")).unwrap_or_default();
    let period_end =
        o.pointer("/items/data/0/current_period_end").or_else(|| o.get("current_period_end")).and_then(Value::as_i64).and_then(timestamp);
    Ok(SubscriptionFact {
        id,
        customer,
        status,
        price_id,
        current_period_end: period_end,
        as_of: ev.created,
        rank: fact_rank(status, Source::Subscription),
        paid_at: None,
        cause_event_id: ev.id.clone(),
        cause_event_type: ev.event_type.clone(),
    })
}

/// Reads an event into the fact it states.
pub fn read(ev: &StripeEvent) -> Result<Fact, Invalid> {
    let o = &ev.object;
    let fact_for = |sub: &str, customer: &str, status: SubscriptionStatus, paid: bool, source: Source| SubscriptionFact {
        id: sub.to_owned(),
        customer: customer.to_owned(),
        status,
        price_id: String::new(),
        current_period_end: None,
        as_of: ev.created,
        rank: fact_rank(status, source),
        paid_at: paid.then_some(ev.created),
        cause_event_id: ev.id.clone(),
        cause_event_type: ev.event_type.clone(),
    };
    let missing = |what: &'static str, message: &str| Invalid::new(what, message);
    Ok(match ev.event_type.as_str() {
        "checkout.session.completed" => {
            let Some(customer) = id_at(o, "/customer") else { return Ok(Fact::Ignored("checkout without a customer")) };
            let session_id = id_at(o, "/id").ok_or_else(|| missing("data.object.id", "a checkout session needs its id"))?;
            let subscription_mode = str_at(o, "/mode") == Some("subscription");
            let paid = matches!(str_at(o, "/payment_status"), Some("paid" | "no_payment_required"));
            let status = if paid { SubscriptionStatus::Active } else { SubscriptionStatus::Incomplete };
            let subscription = id_at(o, "/subscription")
                .filter(|_| subscription_mode)
                .map(|sub| fact_for(&sub, &customer, status, paid, Source::Checkout));
            Fact::CheckoutCompleted { session_id, customer, account: account_hint(o), subscription }
        }
        "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
            Fact::Subscription(subscription_fact(o, ev, ev.event_type == "customer.subscription.deleted")?)
        }
        "invoice.paid" | "invoice.payment_failed" | "invoice.payment_succeeded" => {
            let Some(customer) = id_at(o, "/customer") else { return Ok(Fact::Ignored("invoice without a customer")) };
            let failed = ev.event_type == "invoice.payment_failed";
            let subscription_id = id_at(o, "/parent/subscription_details/subscription").or_else(|| id_at(o, "/subscription"));
            let status = match str_at(o, "/status") {
                Some(s) => s.parse().map_err(object_field("data.object.status"))?,
                None if failed => InvoiceStatus::Open,
                None => InvoiceStatus::Paid,
            };
            let invoice = InvoiceFact {
                id: id_at(o, "/id").ok_or_else(|| missing("data.object.id", "an invoice needs its id"))?,
                customer: customer.clone(),
                subscription_id: subscription_id.clone(),
                status,
                amount_due: o.get("amount_due").and_then(Value::as_i64).unwrap_or(0),
                amount_paid: o.get("amount_paid").and_then(Value::as_i64).unwrap_or(0),
                currency: str_at(o, "/currency").unwrap_or("").to_owned(),
                attempt_count: o.get("attempt_count").and_then(Value::as_i64).unwrap_or(0),
                next_payment_attempt: o.get("next_payment_attempt").and_then(Value::as_i64).and_then(timestamp),
            };
            let moved = if failed { SubscriptionStatus::PastDue } else { SubscriptionStatus::Active };
            // The price the subscription bills, from the invoice's line (today's
            // `pricing.price_details.price`, or the older `price`), so that an invoice applied
            // before its subscription's own event still names the plan.
            let price_id =
                id_at(o, "/lines/data/0/pricing/price_details/price").or_else(|| id_at(o, "/lines/data/0/price")).unwrap_or_default();
            let subscription = subscription_id
                .filter(|_| ev.event_type != "invoice.payment_succeeded")
                .map(|sub| SubscriptionFact { price_id, ..fact_for(&sub, &customer, moved, !failed, Source::Invoice) });
            Fact::Invoice { invoice, subscription, failed }
        }
        "charge.refunded" => {
            let Some(customer) = id_at(o, "/customer") else { return Ok(Fact::Ignored("charge without a customer")) };
            Fact::Refund(RefundFact {
                charge_id: id_at(o, "/id").ok_or_else(|| missing("data.object.id", "a charge needs its id"))?,
                customer,
                amount: o.get("amount").and_then(Value::as_i64).unwrap_or(0),
                amount_refunded: o.get("amount_refunded").and_then(Value::as_i64).unwrap_or(0),
                currency: str_at(o, "/currency").unwrap_or("").to_owned(),
                as_of: ev.created,
                cause_event_id: ev.id.clone(),
            })
        }
        _ => Fact::Ignored("event type billing does not handle"),
    })
}

/// A subscription as stored, with the time of its newest payment.
#[derive(Debug, Clone)]
pub struct StoredSubscription {
    pub fact: SubscriptionFact,
    pub plan: String,
    pub last_paid_at: Option<DateTime<Utc>>,
    /// Start of the current past_due spell.
    pub past_due_since: Option<DateTime<Utc>>,
}

/// Everything known about one account, for [`derive`].
#[derive(Debug, Clone, Default)]
pub struct AccountFacts {
    pub subscriptions: Vec<StoredSubscription>,
    pub refunds: Vec<RefundFact>,
    /// The newest open checkout this service started, if it has not expired.
    pub open_checkout: Option<(String, DateTime<Utc>)>,
}

/// An account's access as derived from its facts.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub status: AccessStatus,
    pub plan: String,
    pub reason: String,
    pub cause_event_id: String,
    pub cause_event_type: String,
    pub grace_until: Option<DateTime<Utc>>,
}

impl Derived {
    fn none() -> Self {
        Self {
            status: AccessStatus::None,
            plan: String::new(),
            reason: String::new(),
            cause_event_id: String::new(),
            cause_event_type: String::new(),
            grace_until: None,
        }
    }
}

/// The access an account has now. Depends only on the stored facts (not on the order they
/// arrived in), so the same events delivered in any order end in the same access.
pub fn derive(facts: &AccountFacts, now: DateTime<Utc>, grace: Duration, refunds: RefundPolicy) -> Derived {
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::days(7));
    let mut best: Option<(u8, DateTime<Utc>, Derived)> = None;
    for sub in &facts.subscriptions {
        let f = &sub.fact;
        let from_sub = |status: AccessStatus, reason: &str| Derived {
            status,
            plan: sub.plan.clone(),
            reason: reason.to_owned(),
            cause_event_id: f.cause_event_id.clone(),
            cause_event_type: f.cause_event_type.clone(),
            grace_until: None,
        };
        // A refund taken after the newest payment ends what that payment bought.
        let refund = facts.refunds.iter().filter(|r| r.customer == f.customer).find(|r| {
            let revokes = match refunds {
                RefundPolicy::Full => r.amount_refunded >= r.amount && r.amount > 0,
                RefundPolicy::Any => r.amount_refunded > 0,
                RefundPolicy::Never => false,
            };
            revokes && sub.last_paid_at.is_none_or(|paid| r.as_of >= paid)
        });
        let (priority, derived) = if let Some(r) = refund {
            (
                1,
                Derived {
                    reason: "charge refunded".into(),
                    cause_event_id: r.cause_event_id.clone(),
                    cause_event_type: "charge.refunded".into(),
                    ..from_sub(AccessStatus::Revoked, "")
                },
            )
        } else {
            match f.status {
                SubscriptionStatus::Active | SubscriptionStatus::Trialing => (4, from_sub(AccessStatus::Active, "subscription active")),
                SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid => {
                    let until = sub.past_due_since.unwrap_or(f.as_of) + grace;
                    if now >= until {
                        (1, from_sub(AccessStatus::Revoked, "grace period ended"))
                    } else {
                        (3, Derived { grace_until: Some(until), ..from_sub(AccessStatus::PastDue, "payment failed") })
                    }
                }
                SubscriptionStatus::Incomplete => (2, from_sub(AccessStatus::Pending, "payment not confirmed yet")),
                SubscriptionStatus::Paused => (1, from_sub(AccessStatus::Revoked, "subscription paused")),
                SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired => {
                    (1, from_sub(AccessStatus::Revoked, "subscription canceled"))
                }
            }
        };
        let better = best.as_ref().is_none_or(|(p, at, _)| (priority, f.as_of) > (*p, *at));
        if better {
            best = Some((priority, f.as_of, derived));
        }
    }
    match (best, &facts.open_checkout) {
        // An open checkout means a new purchase is under way; say so instead of "revoked".
        (Some((1, _, _)) | None, Some((session, _))) => {
            Derived { status: AccessStatus::Pending, reason: format!("checkout started ({session})"), ..Derived::none() }
        }
        (Some((_, _, d)), _) => d,
        (None, None) => Derived::none(),
    }
}

/// Stripe metadata carrying the account id on objects billing creates.
pub fn account_metadata(account: AccountId) -> HashMap<String, String> {
    HashMap::from([("account_id".to_owned(), account.to_string())])
}

/// An account's access as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub account_id: AccountId,
    pub status: AccessStatus,
    pub plan: String,
    pub since: DateTime<Utc>,
    pub reason: String,
    pub cause_event_id: String,
    pub cause_event_type: String,
    pub grace_until: Option<DateTime<Utc>>,
}

/// One move of an account's access, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessChange {
    pub from: AccessStatus,
    pub to: AccessStatus,
    pub plan: String,
    pub reason: String,
    pub cause_event_id: String,
    pub cause_event_type: String,
    pub at: DateTime<Utc>,
}

/// An invoice as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoice {
    pub id: String,
    pub subscription_id: Option<String>,
    pub status: InvoiceStatus,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub currency: String,
    pub as_of: DateTime<Utc>,
}

/// A checkout session this service started (Stripe's or a local one).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkout {
    pub session_id: String,
    pub account_id: AccountId,
    pub plan: String,
    pub price_id: String,
    pub amount: i64,
    pub currency: String,
    pub url: String,
    /// Made by the embedded local checkout (not Stripe).
    pub local: bool,
    pub status: CheckoutStatus,
    pub success_url: String,
    pub cancel_url: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Checkout {
    /// Its status at `now`: an open session past its expiry has expired.
    pub fn status_at(&self, now: DateTime<Utc>) -> CheckoutStatus {
        match self.status {
            CheckoutStatus::Open if self.expires_at <= now => CheckoutStatus::Expired,
            other => other,
        }
    }
}

/// A Stripe-shaped webhook the embedded local checkout is to deliver; its event id makes it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWebhook {
    pub event_id: String,
    /// The Stripe `event` object, as JSON.
    pub body: String,
}

/// A queued local webhook, claimed for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueWebhook {
    pub id: i64,
    pub body: String,
    /// Failed deliveries so far.
    pub attempts: i32,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use sb_stripe::objects::{self, CheckoutSpec, InvoiceSpec, SubscriptionSpec};

    use super::*;

    fn plans() -> Plans {
        Plans::parse(DEFAULT_PLANS).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ev(id: &str, ty: &str, created: i64, object: Value) -> StripeEvent {
        StripeEvent::new(id.into(), ty.into(), created, false, object.as_object().cloned().unwrap()).unwrap()
    }

    #[test]
    fn plans_parse_and_reject_bad_lists() {
        let p = plans();
        assert_eq!(p.default_plan().name, "starter");
        assert_eq!(p.name_for_price("price_switchboard_pro"), "pro");
        assert_eq!(p.name_for_price("price_other"), "price_other");
        assert_eq!(p.name_for_price(""), "");
        assert!(p.entitlements("pro").contains(&"ai_assist".to_owned()));
        assert!(p.granted(AccessStatus::Revoked, "pro").is_empty());
        for bad in ["", "a:b:c", "a:b:x:portal", "a:b:-5:portal", "a:p:1:x;a:q:1:y", ":p:1:x"] {
            assert!(Plans::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_are_stripes_words_and_nothing_else() {
        for s in SubscriptionStatus::ALL {
            assert_eq!(s.as_str().parse::<SubscriptionStatus>().unwrap(), *s);
        }
        for s in InvoiceStatus::ALL {
            assert_eq!(s.as_str().parse::<InvoiceStatus>().unwrap(), *s);
        }
        let e = "exploded".parse::<SubscriptionStatus>().unwrap_err();
        assert_eq!(e.what, "subscription status");
        assert!(e.message.contains("\"exploded\""), "{e}");
        assert!("".parse::<CheckoutStatus>().is_err() && "Open".parse::<CheckoutStatus>().is_err());
        assert!(StripeEvent::new("evt_1".into(), "x".into(), i64::MAX, false, Map::new()).is_err_and(|e| e.what == "created"));
    }

    #[test]
    fn reads_stripe_shaped_events() {
        let account = AccountId::new();
        let a = account.to_string();
        let cs = objects::checkout_session(&CheckoutSpec {
            id: "cs_1",
            account_id: &a,
            customer: "cus_1",
            subscription: "sub_1",
            created: 10,
            ..Default::default()
        });
        let Fact::CheckoutCompleted { customer, account: hint, subscription: Some(sub), .. } =
            read(&ev("evt_1", "checkout.session.completed", 10, cs)).unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("not a checkout fact")
        };
        assert_eq!(
            (customer.as_str(), hint, sub.status, sub.paid_at.is_some()),
            ("cus_1", Some(account), SubscriptionStatus::Active, true)
        );

        let so = objects::subscription(&SubscriptionSpec {
            id: "sub_1",
            customer: "cus_1",
            status: "past_due",
            price: "price_switchboard_pro",
            created: 5,
            period_end: 99,
            account_id: &a,
        });
        let event = ev("evt_2", "customer.subscription.updated", 20, so.clone());
        let fact = read(&event).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fact.about(&event), Ok(("cus_1", Some(account))));
        let Fact::Subscription(f) = fact else { panic!() };
        assert_eq!((f.status, f.price_id.as_str(), f.rank), (SubscriptionStatus::PastDue, "price_switchboard_pro", 42));
        assert_eq!(f.current_period_end, timestamp(99));
        let Fact::Subscription(f) = read(&ev("evt_3", "customer.subscription.deleted", 30, so)).unwrap_or_else(|e| panic!("{e}")) else {
            panic!()
        };
        assert_eq!(f.status, SubscriptionStatus::Canceled);

        let inv = objects::invoice(&InvoiceSpec {
            id: "in_1",
            customer: "cus_1",
            subscription: "sub_1",
            account_id: "",
            status: "open",
            created: 40,
            amount: 900,
            attempt_count: 1,
            price: "price_switchboard_pro",
        });
        let Fact::Invoice { invoice, subscription: Some(s), failed: true } =
            read(&ev("evt_4", "invoice.payment_failed", 40, inv)).unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!()
        };
        assert_eq!(
            (s.status, invoice.status, invoice.subscription_id.as_deref()),
            (SubscriptionStatus::PastDue, InvoiceStatus::Open, Some("sub_1"))
        );
        assert_eq!(s.price_id, "price_switchboard_pro", "the invoice's line names the subscription's price");
        let bad = objects::with(
            objects::subscription(&SubscriptionSpec { id: "sub_1", customer: "cus_1", status: "active", ..Default::default() }),
            serde_json::json!({"status": "bogus"}),
        );
        let e = read(&ev("evt_5", "customer.subscription.updated", 1, bad)).unwrap_err();
        assert_eq!(e.what, "data.object.status", "{e}");
        let refund = read(&ev("evt_6", "charge.refunded", 1, objects::charge("ch_1", "cus_1", 900, 900, 1))).unwrap();
        assert!(matches!(&refund, Fact::Refund(r) if r.full()) && refund.subscription().is_none());
        assert_eq!(
            read(&ev("evt_7", "customer.created", 1, serde_json::json!({"id": "cus_1"}))).unwrap(),
            Fact::Ignored("event type billing does not handle")
        );
    }

    #[test]
    fn dedupe_keys_collapse_double_events_but_not_later_updates() {
        let so = |status| objects::subscription(&SubscriptionSpec { id: "sub_1", customer: "cus_1", status, ..Default::default() });
        let a = ev("evt_a", "customer.subscription.updated", 1, so("active"));
        let b = ev("evt_b", "customer.subscription.updated", 1, so("active"));
        let c = ev("evt_c", "customer.subscription.updated", 2, so("past_due"));
        assert_eq!(a.dedupe_key(), b.dedupe_key());
        assert_ne!(a.dedupe_key(), c.dedupe_key());
        let p1 = ev("evt_p1", "invoice.paid", 1, serde_json::json!({"id": "in_1"}));
        let p2 = ev("evt_p2", "invoice.paid", 9, serde_json::json!({"id": "in_1", "x": 1}));
        assert_eq!(p1.dedupe_key(), p2.dedupe_key());
    }

    fn stored(status: SubscriptionStatus, as_of: i64, paid: Option<i64>) -> StoredSubscription {
        StoredSubscription {
            fact: SubscriptionFact {
                id: "sub_1".into(),
                customer: "cus_1".into(),
                status,
                price_id: "price_switchboard_pro".into(),
                current_period_end: None,
                as_of: timestamp(as_of).unwrap_or_default(),
                rank: status.rank(),
                paid_at: None,
                cause_event_id: format!("evt_{as_of}"),
                cause_event_type: "customer.subscription.updated".into(),
            },
            plan: "pro".into(),
            last_paid_at: paid.and_then(timestamp),
            past_due_since: None,
        }
    }

    #[test]
    fn derive_access() {
        use SubscriptionStatus::{Active, Canceled, PastDue};
        let now = timestamp(1_000).unwrap_or_default();
        let week = Duration::from_secs(7 * 86_400);
        let d = |facts: &AccountFacts| derive(facts, now, week, RefundPolicy::Full);
        assert_eq!(d(&AccountFacts::default()).status, AccessStatus::None);
        let pending = AccountFacts { open_checkout: Some(("cs_1".into(), now)), ..Default::default() };
        assert_eq!(d(&pending).status, AccessStatus::Pending);
        let active = AccountFacts { subscriptions: vec![stored(Active, 10, Some(10))], ..Default::default() };
        assert_eq!((d(&active).status, d(&active).plan.as_str()), (AccessStatus::Active, "pro"));
        let past_due = AccountFacts { subscriptions: vec![stored(PastDue, 900, Some(10))], ..Default::default() };
        let got = d(&past_due);
        assert_eq!((got.status, got.grace_until), (AccessStatus::PastDue, timestamp(900 + 7 * 86_400)));
        let expired = derive(&past_due, timestamp(900 + 7 * 86_400).unwrap_or_default(), week, RefundPolicy::Full);
        // Later retry failures do not move the deadline: it counts from the spell's first failure.
        let mut spell = past_due.clone();
        spell.subscriptions[0].past_due_since = timestamp(500);
        assert_eq!(d(&spell).grace_until, timestamp(500 + 7 * 86_400));
        assert_eq!((expired.status, expired.reason.as_str()), (AccessStatus::Revoked, "grace period ended"));
        let canceled = AccountFacts { subscriptions: vec![stored(Canceled, 10, Some(5))], ..Default::default() };
        assert_eq!(d(&canceled).status, AccessStatus::Revoked);
        // A new checkout over an ended subscription reads as pending.
        let again = AccountFacts { open_checkout: Some(("cs_2".into(), now)), ..canceled };
        assert_eq!((d(&again).status, d(&again).reason.as_str()), (AccessStatus::Pending, "checkout started (cs_2)"));

        let refund = |amount_refunded, at| RefundFact {
            charge_id: "ch_1".into(),
            customer: "cus_1".into(),
            amount: 900,
            amount_refunded,
            currency: "usd".into(),
            as_of: timestamp(at).unwrap_or_default(),
            cause_event_id: "evt_r".into(),
        };
        let full = AccountFacts { subscriptions: vec![stored(Active, 10, Some(10))], refunds: vec![refund(900, 20)], ..Default::default() };
        assert_eq!((d(&full).status, d(&full).cause_event_type.as_str()), (AccessStatus::Revoked, "charge.refunded"));
        assert_eq!(derive(&full, now, week, RefundPolicy::Never).status, AccessStatus::Active);
        let partial = AccountFacts { refunds: vec![refund(100, 20)], ..full.clone() };
        assert_eq!(d(&partial).status, AccessStatus::Active);
        assert_eq!(derive(&partial, now, week, RefundPolicy::Any).status, AccessStatus::Revoked);
        // A later update without a new payment does not undo the refund; a new payment does.
        let later_update = AccountFacts { subscriptions: vec![stored(Active, 30, Some(10))], ..full.clone() };
        assert_eq!(d(&later_update).status, AccessStatus::Revoked);
        let repaid = AccountFacts { subscriptions: vec![stored(Active, 30, Some(30))], ..full };
        assert_eq!(d(&repaid).status, AccessStatus::Active);
    }

    #[test]
    fn checkouts_expire_while_open_only() {
        let now = timestamp(100).unwrap();
        let c = Checkout {
            session_id: "cs_1".into(),
            account_id: AccountId::new(),
            plan: "pro".into(),
            price_id: "price_switchboard_pro".into(),
            amount: 4900,
            currency: "usd".into(),
            url: String::new(),
            local: true,
            status: CheckoutStatus::Open,
            success_url: String::new(),
            cancel_url: String::new(),
            created_at: now,
            expires_at: now,
        };
        assert_eq!(c.status_at(timestamp(99).unwrap()), CheckoutStatus::Open);
        assert_eq!(c.status_at(now), CheckoutStatus::Expired);
        assert_eq!(Checkout { status: CheckoutStatus::Complete, ..c }.status_at(now), CheckoutStatus::Complete);
    }
}
