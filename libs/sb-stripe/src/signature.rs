//! Stripe webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex hmac>[,v1=...][,v0=...]`,
//! where each `v1` is HMAC-SHA256 of `"{t}.{raw body}"` under an endpoint signing secret.
//!
//! Pure: no I/O, no parsing of the body. Accepts when any `v1` matches any configured secret
//! (several during rotation) and `t` is within the tolerance of `now` in either direction; other
//! schemes (`v0`, future ones) are ignored. Comparison is constant-time (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Stripe's own libraries use five minutes.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused: used only for the metric label, never shown to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MissingHeader,
    MalformedHeader,
    NoV1Signature,
    TimestampOutOfTolerance,
    SignatureMismatch,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_header",
            Self::MalformedHeader => "malformed_header",
            Self::NoV1Signature => "no_v1_signature",
            Self::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            Self::SignatureMismatch => "signature_mismatch",
        }
    }
}

/// The parts of a `Stripe-Signature` header this verifier uses.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    timestamp: i64,
    v1: Vec<Vec<u8>>,
}

fn parse_header(raw: &str) -> Result<Header, Rejection> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in raw.split(',') {
        let (key, value) = item.trim().split_once('=').ok_or(Rejection::MalformedHeader)?;
        match key {
            // Stripe sends one `t`; a second one makes the header ambiguous.
            "t" if timestamp.is_none() => timestamp = Some(value.parse::<i64>().map_err(|_| Rejection::MalformedHeader)?),
            "t" => return Err(Rejection::MalformedHeader),
            // A v1 that is not hex can never match; skip it rather than fail the other ones.
            "v1" => v1.extend(decode_hex(value)),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Rejection::MalformedHeader)?;
    if v1.is_empty() {
        return Err(Rejection::NoV1Signature);
    }
    Ok(Header { timestamp, v1 })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks `header` over the raw `body`; returns the signed timestamp on success.
pub fn verify(header: Option<&str>, body: &[u8], secrets: &[SecretString], now: i64) -> Result<i64, Rejection> {
    let raw = header.map(str::trim).filter(|h| !h.is_empty()).ok_or(Rejection::MissingHeader)?;
    let parsed = parse_header(raw)?;
    if (now - parsed.timestamp).abs() > TOLERANCE_SECS {
        return Err(Rejection::TimestampOutOfTolerance);
    }
    for secret in secrets {
        let expected = mac(secret.expose_secret(), parsed.timestamp, body);
        if parsed.v1.iter().any(|sig| expected.clone().verify_slice(sig).is_ok()) {
            return Ok(parsed.timestamp);
        }
    }
    Err(Rejection::SignatureMismatch)
}

/// The `v1` signature Stripe would send (for the local checkout and for tests).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    mac(secret, timestamp, body).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A whole `Stripe-Signature` header value.
pub fn header_value(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_test_1","object":"event","type":"checkout.session.completed","data":{"object":{"id":"cs_1"}}}"#;
    const T: i64 = 1_700_000_000;
    const KNOWN_V1: &str = "8eecf24c91b9ab1792dbabb4b673ae13b83587cf704e52509d82e6df98df3eb7";

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter().map(|s| SecretString::from(*s)).collect()
    }

    #[test]
    fn known_answer_vector() {
        assert_eq!(sign("whsec_test_secret", T, BODY), KNOWN_V1);
        let header = format!("t={T},v1={KNOWN_V1}");
        assert_eq!(verify(Some(&header), BODY, &secrets(&["whsec_test_secret"]), T), Ok(T));
    }

    #[test]
    fn rejections() {
        let s = secrets(&["whsec_test_secret"]);
        let good = format!("t={T},v1={KNOWN_V1}");
        let mut tampered = BODY.to_vec();
        tampered[10] ^= 1;
        assert_eq!(verify(Some(&good), &tampered, &s, T), Err(Rejection::SignatureMismatch));
        assert_eq!(verify(None, BODY, &s, T), Err(Rejection::MissingHeader));
        assert_eq!(verify(Some("  "), BODY, &s, T), Err(Rejection::MissingHeader));
        for bad in ["garbage", "t=abc,v1=00", "v1=00", &format!("t={T},t={T},v1={KNOWN_V1}")] {
            assert_eq!(verify(Some(bad), BODY, &s, T), Err(Rejection::MalformedHeader), "{bad}");
        }
        assert_eq!(verify(Some(&format!("t={T},v0={KNOWN_V1}")), BODY, &s, T), Err(Rejection::NoV1Signature));
        assert_eq!(verify(Some(&format!("t={T},v1=zz")), BODY, &s, T), Err(Rejection::NoV1Signature));
        assert_eq!(verify(Some(&good), BODY, &secrets(&["whsec_other"]), T), Err(Rejection::SignatureMismatch));
        assert_eq!(verify(Some(&good), BODY, &s, T + 301), Err(Rejection::TimestampOutOfTolerance));
        assert_eq!(verify(Some(&good), BODY, &s, T - 301), Err(Rejection::TimestampOutOfTolerance));
        assert_eq!(verify(Some(&good), BODY, &s, T + 300), Ok(T));
        assert_eq!(verify(Some(&good), BODY, &s, T - 300), Ok(T));
    }

    #[test]
    fn rotation_accepts_either_secret_and_any_v1() {
        let old = sign("whsec_old", T, BODY);
        let new = sign("whsec_new", T, BODY);
        let both = format!("t={T},v1={old},v1={new},v0=ignored");
        assert_eq!(verify(Some(&both), BODY, &secrets(&["whsec_new"]), T), Ok(T));
        assert_eq!(verify(Some(&both), BODY, &secrets(&["whsec_old"]), T), Ok(T));
        let only_new = header_value("whsec_new", T, BODY);
        assert_eq!(verify(Some(&only_new), BODY, &secrets(&["whsec_old", "whsec_new"]), T), Ok(T));
        assert_eq!(verify(Some(&only_new), BODY, &secrets(&["whsec_old"]), T), Err(Rejection::SignatureMismatch));
    }
}
