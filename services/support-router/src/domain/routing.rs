//! Priority and routing: which priority and queue a ticket gets, and why, in words.
//!
//! The rules, in order (every step adds a reason to the ticket's `priority_reasons`):
//!
//! 1. **Tier** from the account's plan projection: an account with access `active` or `past_due`
//!    gets its plan's tier from `SUPPORT_ROUTER_TIERS` (default `starter:standard;pro:priority`;
//!    a paid plan not listed gets `standard`); access `none`, `pending` or `revoked` is `free`; an
//!    account whose plan is not known yet is `unknown`, treated as free ("plan not known yet"):
//!    support-router saw neither its sign-up (which starts it at `none`) nor a billing change,
//!    and billing has not answered yet — or a contact form ticket from an unknown email.
//! 2. **Base priority** of the tier (`SUPPORT_ROUTER_TIER_PRIORITIES`, default
//!    `free:low;unknown:low;standard:normal;priority:high`).
//! 3. **Signals** in the subject and body: phrases matched case-insensitively on word boundaries
//!    (`SUPPORT_ROUTER_SIGNALS_LOGIN`, `_PAYMENT`, `_OUTAGE`, `_SECURITY`; defaults in
//!    [`SignalWords::default`]), plus `past_due` when the account's access is past due.
//! 4. **Priority**:
//!    - a security signal, or an outage / data-loss signal → `urgent`;
//!    - a login signal together with a payment signal or a past-due account → `urgent`;
//!    - otherwise any login, payment or past-due signal → one step above the tier's base, at
//!      most `high` (free: low → normal; standard: normal → high; priority: high stays high), so
//!      free and paid customers still get different priorities for the same non-urgent request;
//!    - otherwise the tier's base.
//! 5. **Queue**: `urgent` → `human_review` (a person decides first); else the category's queue
//!    (billing, technical, account); category `other` is inferred: payment or past-due →
//!    billing, login → account, else technical.
//!
//! Later changes ([`reroute`], after a plan change): automation may raise or lower its own
//! choices, but **never takes a ticket out of `human_review`** (nor lowers the priority of a
//! ticket in it), and never lowers a priority a person set (manual override): it may only raise
//! it, and moves it to `human_review` only when raising it to urgent.

use std::fmt::Write as _;

use sb_types::{AccessStatus, Invalid, TicketCategory, TicketPriority, TicketQueue};

use super::{PlanProjection, Tier};

/// Plan names → tiers (`starter:standard;pro:priority`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierMap(Vec<(String, Tier)>);

pub const DEFAULT_TIERS: &str = "starter:standard;pro:priority";

impl TierMap {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut map = Vec::new();
        for entry in s.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (plan, tier) = entry.split_once(':').ok_or_else(|| format!("{entry:?} is not plan:tier"))?;
            let plan = plan.trim();
            if plan.is_empty() {
                return Err(format!("{entry:?} names no plan"));
            }
            let tier: Tier = tier.trim().parse().map_err(|e: Invalid| format!("{entry:?}: {}", e.message))?;
            if tier == Tier::Unknown {
                return Err(format!("{entry:?}: unknown is not a tier a plan can have"));
            }
            map.push((plan.to_owned(), tier));
        }
        Ok(Self(map))
    }

    /// The tier of an account's plan, and why.
    pub fn tier(&self, plan: Option<&PlanProjection>) -> (Tier, String) {
        let Some(p) = plan else { return (Tier::Unknown, "tier unknown: plan not known yet (treated as free)".to_owned()) };
        let name = if p.plan.is_empty() { "none" } else { p.plan.as_str() };
        match p.status {
            AccessStatus::Active | AccessStatus::PastDue => match self.0.iter().find(|(plan, _)| *plan == p.plan) {
                Some((_, tier)) => (*tier, format!("tier {tier} (plan {name}, {})", p.status)),
                None => (Tier::Standard, format!("tier standard (plan {name}, {}; a paid plan not in the tier list)", p.status)),
            },
            AccessStatus::None | AccessStatus::Pending | AccessStatus::Revoked => {
                (Tier::Free, format!("tier free (plan {name}, {}: no paid access)", p.status))
            }
        }
    }
}

/// Base priority per tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierPriorities {
    pub free: TicketPriority,
    pub unknown: TicketPriority,
    pub standard: TicketPriority,
    pub priority: TicketPriority,
}

impl Default for TierPriorities {
    fn default() -> Self {
        Self { free: TicketPriority::Low, unknown: TicketPriority::Low, standard: TicketPriority::Normal, priority: TicketPriority::High }
    }
}

impl TierPriorities {
    /// `tier:priority;...` over the defaults (tiers not named keep theirs).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for entry in s.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (tier, priority) = entry.split_once(':').ok_or_else(|| format!("{entry:?} is not tier:priority"))?;
            let tier: Tier = tier.trim().parse().map_err(|e: Invalid| format!("{entry:?}: {}", e.message))?;
            let priority: TicketPriority = priority.trim().parse().map_err(|e: Invalid| format!("{entry:?}: {}", e.message))?;
            *out.get_mut(tier) = priority;
        }
        Ok(out)
    }

    pub fn of(&self, tier: Tier) -> TicketPriority {
        match tier {
            Tier::Free => self.free,
            Tier::Unknown => self.unknown,
            Tier::Standard => self.standard,
            Tier::Priority => self.priority,
        }
    }

    fn get_mut(&mut self, tier: Tier) -> &mut TicketPriority {
        match tier {
            Tier::Free => &mut self.free,
            Tier::Unknown => &mut self.unknown,
            Tier::Standard => &mut self.standard,
            Tier::Priority => &mut self.priority,
        }
    }
}

/// An urgency signal found in a ticket (or, for `PastDue`, in the account's plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Login,
    Payment,
    Outage,
    Security,
    PastDue,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Login => "login",
            Signal::Payment => "payment",
            Signal::Outage => "outage",
            Signal::Security => "security",
            Signal::PastDue => "past_due",
        }
    }
}

/// The phrases each text signal is recognised by (lower case, matched on word boundaries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalWords {
    pub login: Vec<String>,
    pub payment: Vec<String>,
    pub outage: Vec<String>,
    pub security: Vec<String>,
}

fn phrases(list: &[&str]) -> Vec<String> {
    list.iter().map(|p| normalise(p)).collect()
}

impl Default for SignalWords {
    fn default() -> Self {
        Self {
            login: phrases(&[
                "can't log in",
                "cannot log in",
                "can not log in",
                "cant log in",
                "can't login",
                "cannot login",
                "unable to log in",
                "unable to login",
                "can't sign in",
                "cannot sign in",
                "unable to sign in",
                "locked out",
                "password reset",
                "reset my password",
                "forgot my password",
                "two-factor",
                "2fa",
            ]),
            payment: phrases(&[
                "charged twice",
                "charged me twice",
                "double charged",
                "double charge",
                "payment failed",
                "payment declined",
                "card declined",
                "card was declined",
                "overcharged",
                "refund",
                "refunded",
            ]),
            outage: phrases(&[
                "is down",
                "are down",
                "outage",
                "not loading",
                "won't load",
                "data loss",
                "lost my data",
                "lost data",
                "deleted",
                "disappeared",
            ]),
            security: phrases(&[
                "hacked",
                "account takeover",
                "taken over",
                "someone else logged in",
                "someone logged into my account",
                "unauthorized",
                "unauthorised",
                "phishing",
                "breach",
                "compromised",
                "suspicious login",
            ]),
        }
    }
}

/// Lower case, typographic apostrophes as `'`, runs of whitespace as one space.
fn normalise(s: &str) -> String {
    let lowered = s.to_lowercase().replace(['\u{2019}', '\u{2018}', '\u{02bc}'], "'");
    lowered.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `phrase` occurs in `text` with no letter or digit right before or after it.
fn contains_phrase(text: &str, phrase: &str) -> bool {
    if phrase.is_empty() {
        return false;
    }
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    text.match_indices(phrase).any(|(at, _)| !word(text[..at].chars().next_back()) && !word(text[at + phrase.len()..].chars().next()))
}

/// A comma-separated phrase list setting (`can't log in, locked out`).
pub fn parse_phrases(s: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = s.split(',').map(normalise).filter(|p| !p.is_empty()).collect();
    if list.is_empty() { Err("lists no phrase".into()) } else { Ok(list) }
}

impl SignalWords {
    /// The text signals in `text`, each with the first phrase that matched.
    pub fn find(&self, text: &str) -> Vec<(Signal, String)> {
        let text = normalise(text);
        [(Signal::Security, &self.security), (Signal::Outage, &self.outage), (Signal::Login, &self.login), (Signal::Payment, &self.payment)]
            .into_iter()
            .filter_map(|(signal, list)| list.iter().find(|p| contains_phrase(&text, p)).map(|p| (signal, p.clone())))
            .collect()
    }
}

/// Everything routing is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub tiers: TierMap,
    pub base: TierPriorities,
    pub words: SignalWords,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            tiers: TierMap::parse(DEFAULT_TIERS).unwrap_or(TierMap(Vec::new())),
            base: TierPriorities::default(),
            words: SignalWords::default(),
        }
    }
}

/// What the rules decided for a ticket, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub tier: Tier,
    pub priority: TicketPriority,
    pub queue: TicketQueue,
    pub reasons: Vec<String>,
}

fn one_step_up(p: TicketPriority) -> TicketPriority {
    match p {
        TicketPriority::Low => TicketPriority::Normal,
        TicketPriority::Normal | TicketPriority::High | TicketPriority::Urgent => TicketPriority::High,
    }
}

impl Rules {
    /// Priority and queue for a ticket with this subject, body and category from an account
    /// with this plan (see the module's rules).
    pub fn decide(&self, subject: &str, body: &str, category: TicketCategory, plan: Option<&PlanProjection>) -> Decision {
        let (tier, tier_reason) = self.tiers.tier(plan);
        let base = self.base.of(tier);
        let mut reasons = vec![tier_reason, format!("base priority {base} for tier {tier}")];
        let mut signals = self.words.find(&format!("{subject}\n{body}"));
        for (signal, phrase) in &signals {
            reasons.push(format!("signal {}: \"{phrase}\"", signal.as_str()));
        }
        if plan.is_some_and(|p| p.status == AccessStatus::PastDue) {
            signals.push((Signal::PastDue, String::new()));
            reasons.push("signal past_due: account past due".to_owned());
        }
        let has = |s: Signal| signals.iter().any(|(found, _)| *found == s);
        let priority = if has(Signal::Security) {
            reasons.push("urgent: a security signal".to_owned());
            TicketPriority::Urgent
        } else if has(Signal::Outage) {
            reasons.push("urgent: an outage or data-loss signal".to_owned());
            TicketPriority::Urgent
        } else if has(Signal::Login) && (has(Signal::Payment) || has(Signal::PastDue)) {
            let with = if has(Signal::Payment) { "a payment problem" } else { "a past-due account" };
            reasons.push(format!("urgent: a login problem together with {with}"));
            TicketPriority::Urgent
        } else if let Some(s) = [Signal::Login, Signal::Payment, Signal::PastDue].into_iter().find(|s| has(*s)) {
            let raised = one_step_up(base).max(base);
            let mut why = format!("priority {raised}: one step above the base for a {} signal", s.as_str());
            if raised == base {
                let _ = write!(why, " (at most high without an urgent signal)");
            }
            reasons.push(why);
            raised
        } else {
            reasons.push(format!("priority {base}: the tier's base (no urgency signal)"));
            base
        };
        let queue = if priority == TicketPriority::Urgent {
            reasons.push("queue human_review: urgent tickets go to a person first".to_owned());
            TicketQueue::HumanReview
        } else {
            let (queue, why) = match category {
                TicketCategory::Billing => (TicketQueue::Billing, "category billing"),
                TicketCategory::Technical => (TicketQueue::Technical, "category technical"),
                TicketCategory::Account => (TicketQueue::Account, "category account"),
                TicketCategory::Other if has(Signal::Payment) || has(Signal::PastDue) => {
                    (TicketQueue::Billing, "category other with a payment or past-due signal")
                }
                TicketCategory::Other if has(Signal::Login) => (TicketQueue::Account, "category other with a login signal"),
                TicketCategory::Other => (TicketQueue::Technical, "category other"),
            };
            reasons.push(format!("queue {queue}: {why}"));
            queue
        };
        Decision { tier, priority, queue, reasons }
    }
}

/// A ticket's routing as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current<'a> {
    pub priority: TicketPriority,
    pub queue: TicketQueue,
    /// The reason a person gave when they set the priority or queue (manual override), if they did.
    pub manual_reason: Option<&'a str>,
}

/// What automation may do to a ticket's routing given a fresh decision (see the module's rules).
/// Returns the new priority, queue and reasons.
pub fn reroute(current: &Current<'_>, computed: Decision) -> (TicketPriority, TicketQueue, Vec<String>) {
    let in_review = current.queue == TicketQueue::HumanReview;
    let mut reasons = Vec::new();
    if let Some(why) = current.manual_reason {
        reasons.push(format!("set by a person: {why}"));
    }
    let held = current.manual_reason.is_some() || in_review;
    let priority = if held { computed.priority.max(current.priority) } else { computed.priority };
    let queue = if in_review {
        TicketQueue::HumanReview
    } else if current.manual_reason.is_some() {
        if priority == TicketPriority::Urgent && current.priority != TicketPriority::Urgent {
            TicketQueue::HumanReview
        } else {
            current.queue
        }
    } else {
        computed.queue
    };
    reasons.extend(computed.reasons);
    if in_review {
        reasons.push("kept in human_review: only a person takes a ticket out of it".to_owned());
    } else if current.manual_reason.is_some() {
        reasons.push("kept where a person put it: automation may raise, never lower, their priority".to_owned());
    }
    if priority != computed.priority {
        reasons.push(format!("priority stays {priority} (not lowered by automation)"));
    }
    (priority, queue, reasons)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use TicketCategory as C;
    use TicketPriority as P;
    use TicketQueue as Q;
    use chrono::Utc;

    use super::*;

    fn plan(name: &str, status: AccessStatus) -> PlanProjection {
        PlanProjection { plan: name.into(), status, since: Utc::now() }
    }

    fn decide(subject: &str, body: &str, category: TicketCategory, p: Option<&PlanProjection>) -> Decision {
        Rules::default().decide(subject, body, category, p)
    }

    #[test]
    fn tiers_come_from_the_plan() {
        let t = TierMap::parse(DEFAULT_TIERS).unwrap();
        assert_eq!(t.tier(Some(&plan("pro", AccessStatus::Active))), (Tier::Priority, "tier priority (plan pro, active)".to_owned()));
        assert_eq!(t.tier(Some(&plan("starter", AccessStatus::PastDue))).0, Tier::Standard);
        assert_eq!(t.tier(Some(&plan("pro", AccessStatus::Revoked))).0, Tier::Free);
        assert_eq!(t.tier(Some(&plan("", AccessStatus::None))).0, Tier::Free);
        assert_eq!(t.tier(Some(&plan("pro", AccessStatus::Pending))).0, Tier::Free);
        assert_eq!(t.tier(Some(&plan("enterprise", AccessStatus::Active))).0, Tier::Standard);
        let (tier, why) = t.tier(None);
        assert_eq!(tier, Tier::Unknown);
        assert!(why.contains("plan not known yet"), "{why}");
        assert!(TierMap::parse("pro").is_err() && TierMap::parse("pro:gold").is_err() && TierMap::parse("pro:unknown").is_err());
        assert_eq!(TierPriorities::parse("free:normal").unwrap().of(Tier::Free), P::Normal);
        assert!(TierPriorities::parse("free:asap").is_err());
    }

    #[test]
    fn free_and_paid_customers_get_different_priorities_for_the_same_request() {
        let free = plan("", AccessStatus::None);
        let starter = plan("starter", AccessStatus::Active);
        let pro = plan("pro", AccessStatus::Active);
        for (subject, body) in [
            ("Export question", "How do I export my invoices as CSV?"),
            ("Login", "I can't log in since this morning"),
            ("Refund", "Please refund last month"),
        ] {
            let f = decide(subject, body, C::Other, Some(&free)).priority;
            let s = decide(subject, body, C::Other, Some(&starter)).priority;
            let p = decide(subject, body, C::Other, Some(&pro)).priority;
            assert!(f < s && s <= p && f < p, "{subject}: free {f}, starter {s}, pro {p}");
        }
        assert_eq!(decide("Export", "How do I export?", C::Technical, Some(&free)).priority, P::Low);
        assert_eq!(decide("Export", "How do I export?", C::Technical, Some(&pro)).priority, P::High);
        assert_eq!(decide("Export", "How do I export?", C::Technical, None).priority, P::Low);
    }

    #[test]
    fn charged_twice_and_cannot_log_in_is_urgent_for_a_person_from_any_plan() {
        for p in
            [None, Some(plan("", AccessStatus::None)), Some(plan("starter", AccessStatus::Active)), Some(plan("pro", AccessStatus::Active))]
        {
            let d = decide("Help", "I was charged twice and can't log in", C::Billing, p.as_ref());
            assert_eq!((d.priority, d.queue), (P::Urgent, Q::HumanReview), "{p:?}: {:?}", d.reasons);
            assert!(d.reasons.contains(&"signal payment: \"charged twice\"".to_owned()), "{:?}", d.reasons);
            assert!(d.reasons.contains(&"signal login: \"can't log in\"".to_owned()), "{:?}", d.reasons);
        }
        let d = decide("Help", "I was charged twice and can't log in", C::Billing, Some(&plan("pro", AccessStatus::Active)));
        assert_eq!(d.reasons[0], "tier priority (plan pro, active)");
    }

    #[test]
    fn signals_match_whole_words_case_insensitively() {
        let w = SignalWords::default();
        assert_eq!(w.find("Someone HACKED my account"), vec![(Signal::Security, "hacked".to_owned())]);
        assert_eq!(w.find("I can\u{2019}t  log in"), vec![(Signal::Login, "can't log in".to_owned())]);
        assert!(w.find("The undeleted items").is_empty(), "a phrase inside a word is no match");
        assert!(w.find("refundable?").is_empty());
        assert_eq!(w.find("Refund, please!"), vec![(Signal::Payment, "refund".to_owned())]);
        assert_eq!(parse_phrases(" Blocked ,  ,locked   OUT ").unwrap(), ["blocked", "locked out"]);
        assert!(parse_phrases(" , ").is_err());
    }

    #[test]
    fn urgent_rules_and_queues() {
        let pro = plan("pro", AccessStatus::Active);
        let d = decide("Site is down", "nothing works", C::Technical, Some(&plan("", AccessStatus::None)));
        assert_eq!((d.priority, d.queue), (P::Urgent, Q::HumanReview));
        let d = decide("Phishing email", "got a phishing mail", C::Other, None);
        assert_eq!(d.priority, P::Urgent);
        // One non-urgent signal: one step up, at most high.
        let d = decide("Locked out", "help", C::Other, Some(&plan("", AccessStatus::None)));
        assert_eq!((d.priority, d.queue), (P::Normal, Q::Account));
        let d = decide("Locked out", "help", C::Other, Some(&pro));
        assert_eq!((d.priority, d.queue), (P::High, Q::Account));
        let d = decide("Card declined", "why?", C::Other, Some(&plan("starter", AccessStatus::Active)));
        assert_eq!((d.priority, d.queue), (P::High, Q::Billing));
        let d = decide("A question", "about reports", C::Other, Some(&pro));
        assert_eq!((d.priority, d.queue), (P::High, Q::Technical));
        // Past due: a signal of its own; with a login problem, urgent.
        let past_due = plan("starter", AccessStatus::PastDue);
        let d = decide("A question", "about reports", C::Other, Some(&past_due));
        assert_eq!((d.priority, d.queue), (P::High, Q::Billing));
        assert!(d.reasons.contains(&"signal past_due: account past due".to_owned()));
        let d = decide("Locked out", "help", C::Account, Some(&past_due));
        assert_eq!((d.priority, d.queue), (P::Urgent, Q::HumanReview));
        // The category wins over inference when given.
        let d = decide("Refund", "please", C::Technical, None);
        assert_eq!(d.queue, Q::Technical);
    }

    #[test]
    fn automation_never_leaves_human_review_nor_lowers_a_person_s_choice() {
        let rules = Rules::default();
        let free = plan("", AccessStatus::None);
        let pro = plan("pro", AccessStatus::Active);
        // Free → pro: raised.
        let computed = rules.decide("Export", "How?", C::Technical, Some(&pro));
        let (p, q, _) = reroute(&Current { priority: P::Low, queue: Q::Technical, manual_reason: None }, computed);
        assert_eq!((p, q), (P::High, Q::Technical));
        // Pro → free: automation lowers its own choice.
        let computed = rules.decide("Export", "How?", C::Technical, Some(&free));
        let (p, _, _) = reroute(&Current { priority: P::High, queue: Q::Technical, manual_reason: None }, computed.clone());
        assert_eq!(p, P::Low);
        // ... but never a person's.
        let (p, q, reasons) = reroute(&Current { priority: P::High, queue: Q::Account, manual_reason: Some("VIP") }, computed.clone());
        assert_eq!((p, q), (P::High, Q::Account));
        assert_eq!(reasons[0], "set by a person: VIP");
        // Human review stays human review, at its priority.
        let (p, q, reasons) = reroute(&Current { priority: P::Urgent, queue: Q::HumanReview, manual_reason: None }, computed);
        assert_eq!((p, q), (P::Urgent, Q::HumanReview));
        assert!(reasons.iter().any(|r| r.starts_with("kept in human_review")));
        // A person's low ticket that turns urgent goes to a person.
        let urgent = rules.decide("Locked out", "help", C::Account, Some(&plan("starter", AccessStatus::PastDue)));
        let (p, q, _) = reroute(&Current { priority: P::Low, queue: Q::Account, manual_reason: Some("known issue") }, urgent);
        assert_eq!((p, q), (P::Urgent, Q::HumanReview));
    }
}
