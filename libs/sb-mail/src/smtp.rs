//! Sending over plain SMTP with lettre, and classifying what went wrong.

use std::{fmt, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::authentication::Credentials,
};
use secrecy::{ExposeSecret, SecretString};
use tracing::{info, warn};

use crate::{Email, MailError, Mailer, parse_recipient};

/// The port used when a URL names none.
pub const DEFAULT_PORT: u16 = 25;
/// How long one send may take, connecting included, unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The sender used when none is configured.
pub const DEFAULT_FROM: &str = "Switchboard <noreply@localhost>";

/// A bad SMTP configuration. Never contains the password (nor any other part of a URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid SMTP URL: {0} (expected smtp://[user:password@]host[:port])")]
    Url(&'static str),
    #[error("SMTP over TLS (smtps://, STARTTLS) is not supported yet; use smtp:// to a local server or a relay on a trusted network")]
    TlsUnsupported,
    #[error("invalid SMTP from address {address:?}: {reason}")]
    From { address: String, reason: String },
    #[error("invalid SMTP config: {0}")]
    Invalid(&'static str),
}

/// Where and how to send. `Debug` shows the password as `***`.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// The `From` of every email, `noreply@example.com` or `Name <noreply@example.com>`.
    pub from: String,
    /// Connect timeout and deadline for a whole send (connect, greeting, AUTH, MAIL, RCPT, DATA).
    pub timeout: Duration,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SmtpConfig {
    /// No credentials, [`DEFAULT_TIMEOUT`].
    pub fn new(host: impl Into<String>, port: u16, from: impl Into<String>) -> Self {
        Self { host: host.into(), port, username: None, password: None, from: from.into(), timeout: DEFAULT_TIMEOUT }
    }

    /// Parses `smtp://[user[:password]@]host[:port]` (port 25 by default; user and password
    /// percent-decoded). `from` is [`DEFAULT_FROM`] and `timeout` [`DEFAULT_TIMEOUT`]: set them with
    /// [`Self::with_from`] and [`Self::with_timeout`]. Errors never echo any part of the URL.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(ConfigError::Url("missing smtp:// scheme"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "smtp" => {}
            "smtps" | "smtp+tls" | "smtp+starttls" | "submission" | "submissions" => {
                return Err(ConfigError::TlsUnsupported);
            }
            _ => return Err(ConfigError::Url("the scheme must be smtp://")),
        }
        // The host part follows the last '@', so a password may contain a raw '@', ':', '/' or '?'.
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let hostport = hostport.strip_suffix('/').unwrap_or(hostport);
        if hostport.contains(['/', '?', '#']) {
            return Err(ConfigError::Url("a path, query or fragment is not allowed"));
        }
        let (host, port) = split_host_port(hostport)?;

        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) =
                    info.split_once(':').ok_or(ConfigError::Url("a user name needs a password (smtp://user:password@host)"))?;
                let user = percent_decode(user).ok_or(ConfigError::Url("the user name is not valid percent-encoded UTF-8"))?;
                let pass = percent_decode(pass)
                    .ok_or(ConfigError::Url("the password is not valid percent-encoded UTF-8 (write a literal % as %25)"))?;
                if user.is_empty() {
                    return Err(ConfigError::Url("the user name is empty"));
                }
                (Some(user), Some(SecretString::from(pass)))
            }
        };
        Ok(Self { host, port, username, password, from: DEFAULT_FROM.into(), timeout: DEFAULT_TIMEOUT })
    }

    pub fn with_from(mut self, from: impl Into<String>) -> Self {
        self.from = from.into();
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_credentials(mut self, username: impl Into<String>, password: SecretString) -> Self {
        self.username = Some(username.into());
        self.password = Some(password);
        self
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), ConfigError> {
    let (host, port) = if let Some(after) = hostport.strip_prefix('[') {
        // [IPv6]:port
        let (host, tail) = after.split_once(']').ok_or(ConfigError::Url("unclosed '[' in the host"))?;
        match tail {
            "" => (host, None),
            t => (host, Some(t.strip_prefix(':').ok_or(ConfigError::Url("unexpected text after the host"))?)),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(ConfigError::Url("the host is empty"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '@' || (c == ':' && !hostport.starts_with('['))) {
        return Err(ConfigError::Url("the host contains invalid characters"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(ConfigError::Url("the port must be a number from 1 to 65535")),
        },
    };
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Sends over plain SMTP (no TLS), one connection per email.
///
/// At-least-once, not exactly-once: if the connection fails or the timeout strikes after the server
/// received the final `.` but before its `250` arrived, the send reports `Transient` and the retry
/// delivers a second copy. Both carry the same `Message-ID` ([`SmtpMailer::message_id`]), which is
/// what lets a relay or the recipient's client recognise the duplicate.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
    timeout: Duration,
    /// Forms of the password that could appear in a server's reply, scrubbed from every error.
    secrets: Vec<String>,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    pub fn new(config: SmtpConfig) -> Result<Self, ConfigError> {
        let SmtpConfig { host, port, username, password, from, timeout } = config;
        if host.trim().is_empty() {
            return Err(ConfigError::Invalid("the host is empty"));
        }
        if port == 0 {
            return Err(ConfigError::Invalid("the port must be from 1 to 65535"));
        }
        if timeout.is_zero() {
            return Err(ConfigError::Invalid("the timeout must be positive"));
        }
        let from_box = from.trim().parse::<Mailbox>().map_err(|e| ConfigError::From { address: from.clone(), reason: e.to_string() })?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone()).port(port).timeout(Some(timeout));
        let mut secrets = Vec::new();
        match (username, password) {
            (Some(user), Some(pass)) => {
                let p = pass.expose_secret();
                if !p.is_empty() {
                    secrets.push(p.to_string());
                    secrets.push(base64(p.as_bytes()));
                    secrets.push(base64(format!("\0{user}\0{p}").as_bytes()));
                }
                builder = builder.credentials(Credentials::new(user, p.to_string()));
            }
            (None, None) => {}
            (Some(_), None) => return Err(ConfigError::Invalid("a user name is set without a password")),
            (None, Some(_)) => return Err(ConfigError::Invalid("a password is set without a user name")),
        }
        // Longest first, so a secret containing another is scrubbed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(Self { transport: builder.build(), from: from_box, host, port, timeout, secrets })
    }

    /// The `Message-ID` an email is sent with: derived from its id, so a retry carries the same one.
    pub fn message_id(email: &Email) -> String {
        format!("<{}@switchboard>", email.id)
    }

    fn build_message(&self, email: &Email) -> Result<Message, MailError> {
        let to = parse_recipient(&email.to)?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.as_str())
            .message_id(Some(Self::message_id(email)))
            .header(ContentType::TEXT_PLAIN)
            .body(email.text_body.clone())
            .map_err(|e| MailError::Permanent(format!("cannot build the message: {e}")))
    }

    fn scrub(&self, mut s: String) -> String {
        for secret in &self.secrets {
            if s.contains(secret.as_str()) {
                s = s.replace(secret.as_str(), "***");
            }
        }
        s
    }

    fn classify(&self, e: &lettre::transport::smtp::Error) -> MailError {
        let msg = self.scrub(format!("SMTP {}:{}: {e}", self.host, self.port));
        if let Some(code) = e.status() {
            let code = u16::from(code);
            return match code {
                // Authentication failures are our configuration, not the email's fault: retried,
                // so that fixing the credentials lets the queued mail through.
                530 | 534 | 535 | 538 => MailError::Transient(msg),
                400..=499 => MailError::Transient(msg),
                _ => MailError::Permanent(msg),
            };
        }
        if e.is_client() {
            // Lettre refused before talking (e.g. non-ASCII address without SMTPUTF8).
            return MailError::Permanent(msg);
        }
        // Network, connection, timeout, unparseable reply, shutdown: the server may come back.
        MailError::Transient(msg)
    }
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = self.build_message(email)?;
        let result = match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => Err(MailError::Transient(format!("SMTP {}:{}: no answer within {:?}", self.host, self.port, self.timeout))),
        };
        match &result {
            Ok(()) => info!(email_id = %email.id, template = %email.template, mailer = "smtp", "email sent"),
            Err(e) => {
                warn!(email_id = %email.id, template = %email.template, mailer = "smtp", error = %e, "email not sent")
            }
        }
        result
    }

    fn name(&self) -> &'static str {
        "smtp"
    }
}

/// Standard base64 with padding (only used to recognise encoded secrets in server replies).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b%3Ac").as_deref(), Some("a@b:c"));
        assert_eq!(percent_decode("100%"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
    }
}
