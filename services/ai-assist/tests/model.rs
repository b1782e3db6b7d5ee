//! The real async-openai adapter against the fake OpenAI-compatible server: the structured answer,
//! its token use, and every failure the ladder must see as it is (429 with Retry-After, 5xx,
//! slow answers, malformed JSON, OpenAI's error bodies).

use std::time::Duration;

use ai_assist::{
    config::ModelSettings,
    domain::{
        MessageAuthor, TicketCategory, TicketPriority,
        prompt::{self, PromptInput},
    },
    model::{Drafter, ModelError, OpenAi},
};
use sb_testkit::openai::{DEFAULT_MODEL, FakeOpenAi};
use secrecy::SecretString;

fn settings(ai: &FakeOpenAi, timeout: Duration) -> ModelSettings {
    ModelSettings {
        base_url: ai.base_url(),
        model: DEFAULT_MODEL.to_owned(),
        api_key: Some(SecretString::from(ai.key())),
        timeout,
        max_tokens: 300,
    }
}

fn prompt() -> prompt::Prompt {
    let input = PromptInput {
        subject: "Charged twice",
        thread: vec![(MessageAuthor::Customer, "My card 4242 4242 4242 4242 was charged twice, mail jane@example.com")],
        plan: Some("pro"),
        access: None,
        articles: Vec::new(),
    };
    prompt::build(&input, "Refunds are reviewed by the billing team.")
}

fn adapter(ai: &FakeOpenAi, timeout: Duration) -> OpenAi {
    OpenAi::new(&settings(ai, timeout)).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_structured_answer_is_read_with_its_tokens_and_nothing_secret_is_sent() {
    let ai = FakeOpenAi::start().await.unwrap_or_else(|e| panic!("{e}"));
    ai.reply_with(r#"{"summary":"Double charge","category":"billing","urgency":"high","reply":"Our billing team will review it."}"#);
    let a = adapter(&ai, Duration::from_secs(5)).propose(&prompt()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((a.proposal.category, a.proposal.urgency), (TicketCategory::Billing, TicketPriority::High));
    assert_eq!(a.proposal.reply, "Our billing team will review it.");
    assert!(a.usage.prompt_tokens > 0 && a.usage.completion_tokens > 0, "{:?}", a.usage);

    let reqs = ai.requests();
    assert_eq!(reqs.len(), 1, "one attempt");
    let sent = reqs[0].to_string();
    for secret in ["4242 4242 4242 4242", "jane@example.com"] {
        assert!(!sent.contains(secret), "{secret} was sent");
    }
    assert_eq!(reqs[0]["model"], DEFAULT_MODEL);
    assert_eq!(reqs[0]["response_format"]["type"], "json_schema");
    assert_eq!(reqs[0]["response_format"]["json_schema"]["strict"], true);
    assert_eq!(reqs[0]["messages"][0]["role"], "system");
    assert_eq!(reqs[0]["max_completion_tokens"], 300);
}

#[tokio::test]
async fn rate_limits_keep_their_retry_after_and_server_errors_are_transient() {
    let ai = FakeOpenAi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let model = adapter(&ai, Duration::from_secs(5));
    ai.set_retry_after(7);
    ai.fail_next(1, 429);
    match model.propose(&prompt()).await {
        Err(ModelError::Transient { retry_after, reason }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)), "{reason}");
            assert!(reason.contains("429") && reason.contains("Rate limit"), "{reason}");
        }
        other => panic!("expected transient, got {other:?}"),
    }
    for status in [500, 502, 503] {
        ai.fail_next(1, status);
        match model.propose(&prompt()).await {
            Err(ModelError::Transient { retry_after: None, reason }) => assert!(reason.contains(&status.to_string()), "{reason}"),
            other => panic!("{status}: expected transient, got {other:?}"),
        }
    }
    // One attempt each: the client itself never retried.
    assert_eq!(ai.requests().len(), 4);
}

#[tokio::test]
async fn refusals_are_permanent_and_name_openai_s_message() {
    let ai = FakeOpenAi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let mut s = settings(&ai, Duration::from_secs(5));
    s.api_key = Some(SecretString::from("sk-wrong-key-000000000000"));
    let wrong_key = OpenAi::new(&s).unwrap_or_else(|e| panic!("{e}"));
    match wrong_key.propose(&prompt()).await {
        Err(ModelError::Permanent(reason)) => {
            assert!(reason.contains("401") && reason.contains("Incorrect API key"), "{reason}");
            assert!(!reason.contains("sk-wrong-key"), "the key leaked: {reason}");
        }
        other => panic!("expected permanent, got {other:?}"),
    }
    let mut s = settings(&ai, Duration::from_secs(5));
    s.model = "gpt-nonexistent".into();
    match OpenAi::new(&s).unwrap_or_else(|e| panic!("{e}")).propose(&prompt()).await {
        Err(ModelError::Permanent(reason)) => assert!(reason.contains("404") && reason.contains("does not exist"), "{reason}"),
        other => panic!("expected permanent, got {other:?}"),
    }
}

#[tokio::test]
async fn slow_unreachable_and_malformed_answers_are_transient() {
    let ai = FakeOpenAi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let model = adapter(&ai, Duration::from_millis(300));
    ai.set_latency(Duration::from_secs(3));
    match model.propose(&prompt()).await {
        Err(ModelError::Transient { reason, .. }) => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    ai.recover();
    ai.malformed_next(1);
    match model.propose(&prompt()).await {
        Err(ModelError::Transient { reason, .. }) => assert!(reason.contains("unreadable") || reason.contains("decod"), "{reason}"),
        other => panic!("expected transient, got {other:?}"),
    }
    // Content that is not the requested JSON.
    ai.reply_with("Sure! Here is a reply: we will refund you.");
    match model.propose(&prompt()).await {
        Err(ModelError::Transient { reason, .. }) => assert!(reason.contains("not the requested JSON"), "{reason}"),
        other => panic!("expected transient, got {other:?}"),
    }
    ai.stop().await;
    match model.propose(&prompt()).await {
        Err(ModelError::Transient { reason, .. }) => assert!(reason.contains("connect"), "{reason}"),
        other => panic!("expected transient, got {other:?}"),
    }
}
