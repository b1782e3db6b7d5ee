//! The guardrail corpora: what redaction must remove and must leave, what the injection check must
//! flag and must let pass, and what the output guard must refuse and must offer. Each case is
//! asserted on its own, so a failure names it.

use sb_testkit::ai_corpus::{INJECTIONS, MUST_GO, MUST_STAY};

use ai_assist::domain::{
    AccessStatus, MessageAuthor, TicketCategory,
    guard::{self, ReplyPolicy, Rules},
    injection::detect,
    prompt::{self, HelpArticle, PromptInput},
    redact::redact,
};

#[test]
fn redaction_removes_what_it_must() {
    for (text, secret, placeholder) in MUST_GO {
        let r = redact(text);
        assert!(!r.text.contains(secret), "{text:?} kept {secret:?}: {:?}", r.text);
        assert!(r.text.contains(placeholder), "{text:?} → {:?} lacks {placeholder}", r.text);
        assert!(!r.found.is_empty(), "{text:?}");
    }
}

#[test]
fn redaction_leaves_look_alikes() {
    for text in MUST_STAY {
        let r = redact(text);
        assert_eq!(r.text, *text, "{text:?} changed: {:?} ({:?})", r.text, r.found);
    }
}

#[test]
fn injection_attempts_are_flagged() {
    assert!(INJECTIONS.len() >= 30);
    for text in INJECTIONS {
        assert!(!detect(text).is_empty(), "not flagged: {text:?}");
    }
}

#[test]
fn ordinary_requests_are_not_flagged() {
    for text in [
        "I was charged twice and can't log in",
        "How do I export my invoices to a spreadsheet?",
        "Please ignore my previous message, I found the invoice.",
        "Our admin left the company, how do we change the account owner?",
        "The system is slow since this morning.",
        "Can you show me how to update my card?",
        "I'd like a refund for the duplicate charge please.",
        "Where are my notes from the onboarding call?",
    ] {
        assert!(detect(text).is_empty(), "flagged: {text:?} {:?}", detect(text));
    }
}

fn rules() -> (ReplyPolicy, Rules) {
    let p = ReplyPolicy::default();
    let r = Rules::compile(&p).unwrap_or_else(|e| panic!("{e}"));
    (p, r)
}

#[test]
fn the_guard_refuses_what_no_reply_may_say() {
    let (p, r) = rules();
    for (reply, rule) in [
        ("We have refunded the duplicate charge.", "promise"),
        ("I've issued a full refund of $49.", "promise"),
        ("You will receive a refund within 3 days.", "promise"),
        ("Your refund has been processed.", "promise"),
        ("As a thank you, enjoy a free month on us.", "promise"),
        ("I have upgraded your plan to Pro.", "promise"),
        ("We guarantee this will never happen again.", "promise"),
        ("Your data is completely safe, we were not hacked.", "promise"),
        ("We are fully compliant with GDPR.", "promise"),
        ("Per the internal notes, this customer is difficult.", "internal"),
        ("Another customer had the same issue last week.", "other_customers"),
        ("Your email [email] is on file.", "placeholder"),
        ("Your card 4242 4242 4242 4242 was charged.", "private_data"),
        ("Contact jane@othercorp.com for help.", "private_data"),
        ("See https://evil.example.net/login to fix it.", "link"),
        ("Visit bit.ly/refund-now", "link"),
        ("", "empty"),
    ] {
        let hits = guard::check(reply, &p, &r, &[]);
        assert!(hits.iter().any(|h| h.rule == rule), "{reply:?}: expected {rule}, got {hits:?}");
    }
}

#[test]
fn the_guard_offers_replies_within_policy() {
    let (p, r) = rules();
    for reply in [
        "Thanks for letting us know. I have passed the duplicate charge to our billing team, who will review it and get back to you here.",
        "You can update your card under Billing: https://help.switchboard.example/billing/payment-method",
        "Please use Forgot password on the sign-in page. Write to support@switchboard.example if the link does not arrive.",
        "Refund requests are reviewed by our billing team; they will confirm the outcome by email.",
    ] {
        let hits = guard::check(reply, &p, &r, &[]);
        assert!(hits.is_empty(), "{reply:?}: {hits:?}");
    }
}

#[test]
fn the_prompt_holds_only_allow_listed_redacted_fields() {
    let article = HelpArticle {
        title: "Refunds".into(),
        url: "https://help.switchboard.example/billing/refunds".into(),
        categories: vec![TicketCategory::Billing],
        keywords: vec!["refund".into()],
        body: "Refund requests are reviewed by our billing team.".into(),
    };
    let input = PromptInput {
        subject: "Charged twice, card 4242 4242 4242 4242",
        thread: vec![(MessageAuthor::Customer, "Mail me at jane@example.com, key sk_live_51H8xYzAbCdEfGhIjKlMnOp")],
        plan: Some("pro"),
        access: Some(AccessStatus::Active),
        articles: vec![&article],
    };
    let p = prompt::build(&input, "Refunds are reviewed by the billing team.");
    for secret in ["4242 4242 4242 4242", "jane@example.com", "sk_live_51H8xYzAbCdEfGhIjKlMnOp"] {
        assert!(!p.user.contains(secret) && !p.system.contains(secret), "{secret} reached the prompt");
    }
    let v: serde_json::Value = serde_json::from_str(&p.user).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&String> = v.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    assert_eq!(keys, ["account", "help_articles", "ticket"]);
    assert_eq!(v["account"]["plan"], "pro");
    assert_eq!(p.redacted.values().sum::<usize>(), 3);
}
