//! The check every draft passes before anyone sees it. A draft with any hit is kept for audit,
//! marked failed with its hits, and never offered as a reply.
//!
//! Checks: no redaction placeholder or anything redaction would remove (a secret, a card, an
//! email or phone other than the company's own); no ids; nothing that speaks of internal notes,
//! internal policy or other customers; no promise outside the configured policy (refunds, credits,
//! plan changes, legal or security claims); links only to allowed domains; not empty, not huge.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{injection::fold, redact};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// The rule (`placeholder`, `private_data`, `internal`, `other_customers`, `promise`, `link`,
    /// `empty`, `too_long`).
    pub rule: String,
    /// What matched, for the audit (itself redacted).
    pub detail: String,
}

/// What replies may promise and link to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyPolicy {
    /// The customer-facing policy text given to the model (e.g. how refunds are handled).
    pub statement: String,
    /// Hosts links may point to (a subdomain of one counts).
    pub link_domains: Vec<String>,
    /// Email addresses a reply may name (the support address).
    pub allowed_emails: Vec<String>,
    /// Commitments a reply must not make, as (name, pattern over folded text).
    pub forbidden: Vec<(String, String)>,
    pub max_reply_chars: usize,
}

/// The default forbidden commitments (patterns over folded text: lowercase, single spaces).
pub const DEFAULT_FORBIDDEN: &[(&str, &str)] = &[
    (
        "refund_promise",
        r"\b(we|i|i ve|we ve|we ll|i ll|we have|i have|we will|i will|we can|i can|we are going to|we re going to) (fully |gladly |happily |now |also |immediately |just |already )?(refund|refunded|reimburse|reimbursed|credit|credited)\b",
    ),
    (
        "refund_promise",
        r"\byou (will|ll|are going to|re going to) (get|receive|see) (a |an |your )?(full |partial )?(refund|credit|reimbursement|money back)\b",
    ),
    (
        "refund_promise",
        r"\b(refund|credit|reimbursement) (is|has been|was|will be) (issued|processed|approved|on its way|sent|granted|applied)\b|\b(has|have) been (refunded|credited|reimbursed)\b",
    ),
    (
        "refund_promise",
        r"\b(issued|processed|approved|granted|sent) (you )?(a |an |the |your )?(full |partial )?(refund|credit|reimbursement)\b",
    ),
    (
        "credit_promise",
        r"\b(free (month|months|upgrade|plan)|complimentary|discount (of|for you)|\d+ ?% off|credit (of|to|on) your (account|card|invoice))\b",
    ),
    (
        "plan_change",
        r"\b(we|i|we ve|i ve|we ll|i ll|we have|i have|we will|i will|we can|i can) (now |also |just |already )?(upgraded|downgraded|cancelled|canceled|changed|switched|upgrade|downgrade|cancel|change|switch|extended|extend) your (plan|subscription|trial)\b",
    ),
    (
        "legal_claim",
        r"\b(legal(ly)?|lawsuit|liable|liability|attorney|lawyer|court|indemnif\w*|we guarantee|guaranteed|warranty|compensat\w+)\b",
    ),
    (
        "security_claim",
        r"\b(your (data|account|information) (is|was|are|remains) (completely |totally |100 |fully )?(safe|secure|protected|not affected)|no (data|information) (was|has been) (lost|accessed|leaked|breached|exposed)|(were|have) not been (hacked|breached|compromised)|(gdpr|hipaa|pci|soc 2|soc2|iso 27001) (compliant|certified)|fully compliant|unhackable)\b",
    ),
];

impl Default for ReplyPolicy {
    fn default() -> Self {
        Self {
            statement: DEFAULT_STATEMENT.to_owned(),
            link_domains: vec!["help.switchboard.example".into()],
            allowed_emails: vec!["support@switchboard.example".into()],
            forbidden: DEFAULT_FORBIDDEN.iter().map(|(n, p)| ((*n).to_owned(), (*p).to_owned())).collect(),
            max_reply_chars: 4000,
        }
    }
}

/// The customer-facing policy the default drafts follow.
pub const DEFAULT_STATEMENT: &str = "Refunds, credits and plan changes are decided by our billing team after review, never in a reply; \
     say the request has been passed to the team and that the customer will hear back. Do not make legal statements or claims \
     about security beyond pointing to the help articles.";

#[allow(clippy::expect_used)] // constant patterns, exercised by the tests
static URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(?:https?://|www\.)[^\s<>()\[\]{}'\x22]+").expect("the link pattern compiles"));
#[allow(clippy::expect_used)]
static BARE_DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|io|co|ai|app|dev|info|biz|xyz|me|ly|gl|link|click|top|ru|cn|tk)\b(?:/\S*)?",
    )
    .expect("the domain pattern compiles")
});
#[allow(clippy::expect_used)]
static INTERNAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(internal (note|notes|policy|policies|memo|comment|comments|process|guidelines|document)|staff only|agent notes?|per our notes|my (system )?(instructions|prompt)|system prompt)\b")
        .expect("the internal pattern compiles")
});
#[allow(clippy::expect_used)]
static OTHERS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(another|other|different) (customer|customers|user|users|account|accounts|client|clients)\b")
        .expect("the others pattern compiles")
});

/// Compiled [`ReplyPolicy::forbidden`] rules.
#[derive(Debug, Clone)]
pub struct Rules {
    forbidden: Vec<(String, Regex)>,
}

impl Rules {
    pub fn compile(policy: &ReplyPolicy) -> Result<Self, String> {
        let forbidden = policy
            .forbidden
            .iter()
            .map(|(name, p)| Regex::new(p).map(|re| (name.clone(), re)).map_err(|e| format!("rule {name}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { forbidden })
    }
}

fn host_allowed(url: &str, domains: &[String]) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#', ':']).next().unwrap_or_default().trim_end_matches('.').to_lowercase();
    domains.iter().any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// Every rule `reply` breaks (empty: it may be offered). `articles` are the approved links.
pub fn check(reply: &str, policy: &ReplyPolicy, rules: &Rules, article_urls: &[&str]) -> Vec<Hit> {
    let mut hits = Vec::new();
    let mut hit = |rule: &str, detail: String| hits.push(Hit { rule: rule.to_owned(), detail });
    if reply.trim().is_empty() {
        hit("empty", "the reply is empty".into());
    }
    let len = reply.chars().count();
    if len > policy.max_reply_chars {
        hit("too_long", format!("{len} characters, at most {}", policy.max_reply_chars));
    }
    for p in redact::placeholders_in(reply) {
        hit("placeholder", format!("repeats the placeholder {p}"));
    }
    // What redaction would remove must not be in a reply (the company's own addresses aside).
    let mut own = reply.to_owned();
    for e in &policy.allowed_emails {
        own = own.replace(e.as_str(), "");
    }
    for (kind, n) in redact::redact(&own).found {
        hit("private_data", format!("{n} × {kind}"));
    }
    let folded = fold(reply);
    if let Some(m) = INTERNAL.find(&folded) {
        hit("internal", format!("speaks of \"{}\"", m.as_str()));
    }
    if let Some(m) = OTHERS.find(&folded) {
        hit("other_customers", format!("speaks of \"{}\"", m.as_str()));
    }
    for (name, re) in &rules.forbidden {
        if let Some(m) = re.find(&folded) {
            hit("promise", format!("{name}: \"{}\"", m.as_str()));
        }
    }
    let mut links: Vec<&str> = URL.find_iter(reply).map(|m| m.as_str().trim_end_matches(['.', ',', ';', ':', '!', '?'])).collect();
    let bare: Vec<&str> = BARE_DOMAIN.find_iter(reply).map(|m| m.as_str()).filter(|d| !links.iter().any(|l| l.contains(d))).collect();
    links.extend(bare);
    for link in links {
        let approved = article_urls.iter().any(|a| a.trim_end_matches('/') == link.trim_end_matches('/'));
        if !approved && !host_allowed(link, &policy.link_domains) && !policy.allowed_emails.iter().any(|e| e.ends_with(link)) {
            hit("link", format!("links to {}", redact::redact(link).text));
        }
    }
    hits
}
