//! The local drafter: deterministic rules and templates, used when no model is configured, so the
//! whole flow runs with no account. It reads the same allow-listed input as a model would and its
//! drafts pass the same guard.

use super::{
    AccessStatus, MessageAuthor, Proposal, TicketCategory, TicketPriority, clip,
    injection::fold,
    prompt::{HelpArticle, PromptInput},
    redact::redact,
};

const BILLING: &[&str] =
    &["charge", "charged", "invoice", "refund", "payment", "card", "billing", "price", "receipt", "subscription", "plan"];
const ACCOUNT: &[&str] = &["log in", "login", "password", "sign in", "locked", "2fa", "email change", "account", "username"];
const TECHNICAL: &[&str] =
    &["error", "bug", "crash", "api", "export", "import", "slow", "broken", "integration", "doesn t work", "not working"];
const URGENT: &[&str] = &[
    "charged twice",
    "double charged",
    "can t log in",
    "cannot log in",
    "locked out",
    "hacked",
    "account takeover",
    "data loss",
    "lost data",
    "deleted",
    "outage",
    "is down",
    "security",
];
const HIGH: &[&str] = &["payment failed", "card declined", "past due", "not working", "urgent", "asap"];

fn hits(text: &str, words: &[&str]) -> usize {
    words.iter().filter(|w| text.contains(*w)).count()
}

/// The ticket's category and urgency from its words and the account's access.
pub fn classify(text: &str, fallback: TicketCategory, access: Option<AccessStatus>) -> (TicketCategory, TicketPriority) {
    let t = fold(text);
    let scores = [
        (TicketCategory::Billing, hits(&t, BILLING)),
        (TicketCategory::Account, hits(&t, ACCOUNT)),
        (TicketCategory::Technical, hits(&t, TECHNICAL)),
    ];
    let best = scores.iter().max_by_key(|(_, n)| *n).filter(|(_, n)| *n > 0).map_or(fallback, |(c, _)| *c);
    let urgency = if hits(&t, URGENT) > 0 {
        TicketPriority::Urgent
    } else if hits(&t, HIGH) > 0 || access == Some(AccessStatus::PastDue) {
        TicketPriority::High
    } else {
        TicketPriority::Normal
    };
    (best, urgency)
}

fn opening(category: TicketCategory) -> &'static str {
    match category {
        TicketCategory::Billing => {
            "Thanks for getting in touch about billing. I have passed the details to our billing team, who review every charge \
             question and will get back to you here."
        }
        TicketCategory::Account => {
            "Thanks for letting us know about the trouble with your account. For your security, a member of our team checks \
             account access requests personally and will follow up here."
        }
        TicketCategory::Technical => "Thanks for the report. We are looking into it and will follow up here with what we find.",
        TicketCategory::Other => "Thanks for your message. A member of our team will follow up here.",
    }
}

/// Drafts from `input` alone.
pub fn draft(input: &PromptInput<'_>, fallback: TicketCategory, articles: &[&HelpArticle]) -> Proposal {
    let customer: Vec<String> = input.thread.iter().filter(|(a, _)| *a == MessageAuthor::Customer).map(|(_, t)| redact(t).text).collect();
    let last = customer.last().cloned().unwrap_or_default();
    let all = format!("{} {}", input.subject, customer.join(" "));
    let (category, urgency) = classify(&all, fallback, input.access);
    let subject = redact(input.subject).text;
    let plan = input.plan.unwrap_or("unknown");
    let access = input.access.map_or("unknown", AccessStatus::as_str);
    let summary = format!(
        "{} request ({} urgency) from a customer on the {plan} plan (access {access}): \"{}\" — {}",
        category,
        urgency,
        clip(&subject, 80),
        clip(last.split_terminator(['.', '?', '!', '\n']).next().unwrap_or_default().trim(), 160)
    );
    let mut reply = format!("Hello,\n\n{}", opening(category));
    if let Some(a) = articles.first() {
        reply.push_str(&format!("\n\nIn the meantime, this article may help: {} ({})", a.title, a.url));
    }
    reply.push_str("\n\nBest regards,\nThe support team");
    Proposal { summary, category, urgency, reply }
}
