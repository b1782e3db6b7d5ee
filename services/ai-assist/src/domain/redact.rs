//! Redaction: what may identify a person or unlock something is replaced by a placeholder before
//! any text leaves for a model. Each kind has its own placeholder (`[email]`, `[card]`, ...) so a
//! draft that echoes one can be caught, and the counts go to the audit and the metrics.
//!
//! Checked numbers are redacted only when they check: a card number must pass Luhn and an IBAN
//! mod-97, so order numbers, invoice totals and dates stay as written.

use std::{collections::BTreeMap, sync::LazyLock};

use regex::{Captures, Regex};

/// What was found, by kind (`card`, `email`, ...).
pub type Found = BTreeMap<&'static str, usize>;

/// Text with what must not leave replaced by placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    pub found: Found,
}

/// Every placeholder [`redact`] writes (a draft containing one is refused).
pub const PLACEHOLDERS: &[&str] = &["[email]", "[phone]", "[card]", "[iban]", "[secret]", "[token]", "[address]", "[id]"];

#[allow(clippy::expect_used)] // the patterns are constants, checked by the tests below
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a redaction pattern compiles")
}

/// JSON Web Tokens (three base64url parts, the first a JSON header).
static JWT: LazyLock<Regex> = LazyLock::new(|| re(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"));
/// `Authorization: Bearer ...` and the like.
static BEARER: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b(bearer|token|basic)(\s*[:=]?\s+)([A-Za-z0-9._~+/=-]{12,})"));
/// Provider keys by prefix: Stripe (`sk_`, `rk_`, `pk_`, `whsec_`), OpenAI (`sk-`), GitHub,
/// Slack, AWS access keys, HubSpot private apps (`pat-`), Google API keys.
static KEY: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"\b(?:(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}|whsec_[A-Za-z0-9+/=]{8,}|sk-[A-Za-z0-9_-]{16,}",
        r"|gh[pousr]_[A-Za-z0-9]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|pat-[a-z]{2,4}\d?-[0-9a-f-]{20,}",
        r"|AIza[0-9A-Za-z_-]{30,})"
    ))
});
/// `password: ...`, `api_key=...`, `secret ...` followed by a value.
static LABELLED: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)\b(password|passwd|pwd|api[ _-]?key|secret|client[ _-]?secret|access[ _-]?key)(\s*(?:is|[:=])\s*)(\S{6,})"));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b[A-Z0-9._%+-]+@[A-Z0-9-]+(?:\.[A-Z0-9-]+)*\.[A-Z]{2,}\b"));
static IBAN: LazyLock<Regex> = LazyLock::new(|| re(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,30}\b"));
/// 13 to 19 digits, optionally grouped by spaces or dashes.
static CARD: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d(?:[ -]?\d){12,18}\b"));
/// A phone number: a leading `+` or `(`, or digits grouped by separators; 9 to 15 digits.
static PHONE: LazyLock<Regex> = LazyLock::new(|| re(r"(?:\+|\(|\b)\d[\d ().-]{6,20}\d\b"));
static ISO_DATE: LazyLock<Regex> = LazyLock::new(|| re(r"^\d{4}-\d{2}-\d{2}$"));
/// A street address: a house number, one to four capitalised words and a street type.
static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"\b\d{1,5}[A-Za-z]?\s+(?:[A-Z][A-Za-z'-]+\s+){1,4}",
        r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Square|Sq|Strasse|Straße|Close|Crescent|Highway|Hwy)\b\.?"
    ))
});
/// Ids of objects in our systems or Stripe's (`cus_...`, `ch_...`) and UUIDs: never sent.
static ID: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"(?i)\b(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        r"|(?:cus|ch|in|pi|py|sub|si|price|prod|cs|evt|re|src|pm|seti|card|ba|acct|txn|ii|il|po|bpc|bps)_[A-Za-z0-9]{8,})\b"
    ))
});
/// A long run of token characters: redacted when it looks random (see [`looks_random`]).
static BLOB: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Za-z0-9_+/=.~-]{20,}"));

fn count(found: &mut Found, kind: &'static str) -> String {
    *found.entry(kind).or_default() += 1;
    format!("[{kind}]")
}

/// Luhn's check over the digits of `s` (what card numbers carry).
pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 13 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 { d - 9 } else { d }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The IBAN check (ISO 13616: move the first four characters to the end, letters to numbers,
/// the remainder by 97 is 1).
pub fn iban_checks(s: &str) -> bool {
    let s: String = s.chars().filter(char::is_ascii_alphanumeric).collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let rearranged = s[4..].chars().chain(s[..4].chars());
    let mut rem: u32 = 0;
    for c in rearranged {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

/// Shannon entropy (bits per character) of `s`.
fn entropy(s: &str) -> f64 {
    let mut counts = [0usize; 128];
    let mut n = 0usize;
    for b in s.bytes().filter(u8::is_ascii) {
        counts[b as usize] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / n as f64).map(|p| -p * p.log2()).sum()
}

/// A string that looks like a key or a token rather than words: long, mixing digits with letters
/// (or cases), and with the spread of characters of random data. URLs and paths are left alone
/// (links are checked separately), and so are words joined by dashes.
pub fn looks_random(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let upper = s.bytes().filter(u8::is_ascii_uppercase).count();
    let lower = s.bytes().filter(u8::is_ascii_lowercase).count();
    let classes = [digits, upper, lower].iter().filter(|&&c| c > 0).count();
    let mixed = classes >= 3 || (classes == 2 && digits >= 4);
    s.len() >= 20 && mixed && entropy(s) >= 3.5 && !s.contains("://")
}

/// Redacts `text` (see the module's docs). Idempotent: redacting redacted text changes nothing.
pub fn redact(text: &str) -> Redacted {
    let mut found = Found::new();
    // Tokens first (they may contain what looks like other things), emails before phones.
    let s = JWT.replace_all(text, |_: &Captures| count(&mut found, "token"));
    let s = BEARER.replace_all(&s, |c: &Captures| format!("{}{}{}", &c[1], &c[2], count(&mut found, "token")));
    let s = KEY.replace_all(&s, |_: &Captures| count(&mut found, "secret"));
    let s = LABELLED.replace_all(&s, |c: &Captures| {
        if c[3].starts_with('[') { c[0].to_owned() } else { format!("{}{}{}", &c[1], &c[2], count(&mut found, "secret")) }
    });
    let s = EMAIL.replace_all(&s, |_: &Captures| count(&mut found, "email"));
    // An IBAN-shaped reference that fails the check is kept whole (set aside until the end, so
    // the phone and card passes do not take its digit groups).
    let mut kept: Vec<String> = Vec::new();
    let s = IBAN.replace_all(&s, |c: &Captures| {
        if iban_checks(&c[0]) {
            count(&mut found, "iban")
        } else {
            kept.push(c[0].to_owned());
            format!("\u{E000}{}\u{E001}", kept.len() - 1)
        }
    });
    let s = CARD.replace_all(&s, |c: &Captures| if luhn(&c[0]) { count(&mut found, "card") } else { c[0].to_owned() });
    let s = ID.replace_all(&s, |_: &Captures| count(&mut found, "id"));
    let s = PHONE.replace_all(&s, |c: &Captures| {
        let m = c[0].trim();
        let digits = m.chars().filter(char::is_ascii_digit).count();
        let grouped = m.starts_with('+') || m.starts_with('(') || m.contains([' ', '-', '.', ')']);
        // Amounts (1,234.56) never match (no comma); dates and plain numbers are left.
        if (9..=15).contains(&digits) && grouped && !ISO_DATE.is_match(m) && !m.contains("..") {
            count(&mut found, "phone")
        } else {
            c[0].to_owned()
        }
    });
    let s = ADDRESS.replace_all(&s, |_: &Captures| count(&mut found, "address"));
    let s = BLOB.replace_all(&s, |c: &Captures| if looks_random(&c[0]) { count(&mut found, "secret") } else { c[0].to_owned() });
    let mut text = s.into_owned();
    for (i, k) in kept.iter().enumerate() {
        text = text.replace(&format!("\u{E000}{i}\u{E001}"), k);
    }
    Redacted { text, found }
}

/// The placeholders `text` contains.
pub fn placeholders_in(text: &str) -> Vec<&'static str> {
    PLACEHOLDERS.iter().copied().filter(|p| text.contains(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        assert!(luhn("4242 4242 4242 4242"));
        assert!(!luhn("4242 4242 4242 4241"));
        assert!(iban_checks("GB82 WEST 1234 5698 7654 32"));
        assert!(iban_checks("DE89370400440532013000"));
        assert!(!iban_checks("GB82 WEST 1234 5698 7654 33"));
    }

    #[test]
    fn redacting_twice_changes_nothing() {
        let once = redact("mail jane@example.com, card 4242-4242-4242-4242, key sk_live_51Habcdefghijkl");
        assert_eq!(redact(&once.text).text, once.text);
        assert!(redact(&once.text).found.is_empty());
    }
}
