//! A fake SMTP server for tests that speaks the real wire protocol (an RFC 5321 subset), with a
//! failure mode that can be switched while it runs.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sb_testkit::smtp::{FakeSmtp, Mode};
//! let smtp = FakeSmtp::start().await?;
//! // point the mailer at smtp.addr() ...
//! smtp.set_mode(Mode::TempFail); // the next connection gets 421 and is closed
//! # Ok(()) }
//! ```
//!
//! Supported: greeting `220`, `EHLO` (multi-line: `PIPELINING`, `AUTH PLAIN LOGIN`, `SMTPUTF8`,
//! `8BITMIME`) and `HELO`, `AUTH PLAIN` / `AUTH LOGIN` (any credentials are accepted; the user name is
//! recorded, the password never), `MAIL FROM`, `RCPT TO`, `DATA` with dot-unstuffing, `RSET`,
//! `NOOP`, `VRFY`, `QUIT`. No TLS.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

const HOSTNAME: &str = "fake-smtp.switchboard.test";
/// Longest command or data line accepted (RFC 5321 allows 512 and 1000; lettre stays within them).
const MAX_LINE: usize = 64 * 1024;

/// How the server behaves. Read at the step each mode concerns (the greeting for `TempFail` and
/// `Hang`, `AUTH` for `RejectAuth`, `RCPT` for `RejectRecipient`), so a switch also reaches
/// connections already past their greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Behave like a working server.
    #[default]
    Accept,
    /// `421` at the greeting, then close: the server is temporarily unavailable.
    TempFail,
    /// `550` at `RCPT TO`: the mailbox does not exist.
    RejectRecipient,
    /// Accept the TCP connection and never say anything.
    Hang,
    /// `535` at `AUTH`: bad credentials.
    RejectAuth,
}

/// One message accepted with `250` after `DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The `MAIL FROM` address (without `<>`).
    pub from: String,
    /// The `RCPT TO` addresses (without `<>`).
    pub to: Vec<String>,
    /// The message as sent after `DATA`: what came before the closing `<CRLF>.<CRLF>`, dot-unstuffed
    /// (for lettre, exactly the formatted message).
    pub data: String,
    /// The `Message-ID` header's value, if the message has one.
    pub message_id: Option<String>,
    /// The user name the session authenticated as, if it did.
    pub auth_user: Option<String>,
}

impl ReceivedMail {
    /// The value of the first header called `name` (case-insensitive, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.data, name)
    }

    /// Everything after the blank line that ends the headers.
    pub fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

#[derive(Default)]
struct State {
    mode: Mode,
    messages: Vec<ReceivedMail>,
    connections: usize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mode(&self) -> Mode {
        self.lock().mode
    }
}

/// The fake server, listening on `127.0.0.1:<free port>` until [`FakeSmtp::shutdown`] or drop.
pub struct FakeSmtp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
}

impl FakeSmtp {
    /// Binds `127.0.0.1:0` and starts serving in [`Mode::Accept`].
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (stop, stop_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        Ok(Self { addr, shared, stop, accept: Some(accept) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.lock().mode = mode;
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared.lock().messages.clone()
    }

    /// How many messages were accepted.
    pub fn count(&self) -> usize {
        self.shared.lock().messages.len()
    }

    /// How many TCP connections were accepted (in any mode).
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Stops listening and closes every open connection (hung ones included). The port is free
    /// once this returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

/// A `127.0.0.1` port nothing listens on (bound, then released), for "SMTP is down" tests.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("can bind 127.0.0.1:0")
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                shared.lock().connections += 1;
                let shared = shared.clone();
                let stop = stop.clone();
                sessions.spawn(async move {
                    let mut stop2 = stop.clone();
                    tokio::select! {
                        _ = stop2.wait_for(|s| *s) => {}
                        _ = session(stream, shared) => {}
                    }
                });
            }
        }
    }
    drop(listener);
    sessions.abort_all();
    while sessions.join_next().await.is_some() {}
}

/// The envelope of the transaction in progress.
#[derive(Default)]
struct Transaction {
    from: Option<String>,
    to: Vec<String>,
}

struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn reply(&mut self, text: &str) -> io::Result<()> {
        // One write per reply: split writes meet Nagle and delayed ACKs (40 ms stalls on loopback).
        self.writer.write_all(format!("{text}\r\n").as_bytes()).await?;
        self.writer.flush().await
    }

    /// Sends a `334` challenge and reads the answer.
    async fn challenge(&mut self, text: &str) -> io::Result<Option<String>> {
        self.reply(text).await?;
        self.line().await
    }

    /// One line without its line ending; `None` at end of stream.
    async fn line(&mut self) -> io::Result<Option<String>> {
        let mut buf = Vec::new();
        let n = (&mut self.reader).take(MAX_LINE as u64).read_until(b'\n', &mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() != Some(&b'\n') && n >= MAX_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }
}

async fn session(stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, writer) = stream.into_split();
    let mut c = Conn { reader: BufReader::new(read), writer };
    match shared.mode() {
        Mode::Hang => {
            // Keep the socket open and silent until the client gives up or the server stops.
            let mut sink = Vec::new();
            let _ = c.reader.read_to_end(&mut sink).await;
            return Ok(());
        }
        Mode::TempFail => {
            c.reply("421 4.3.2 Service not available, closing transmission channel").await?;
            return c.writer.shutdown().await;
        }
        _ => c.reply(&format!("220 {HOSTNAME} ESMTP fake ready")).await?,
    }

    let mut tx = Transaction::default();
    let mut auth_user: Option<String> = None;
    while let Some(line) = c.line().await? {
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
            None => (line.trim().to_ascii_uppercase(), String::new()),
        };
        match verb.as_str() {
            "EHLO" => {
                tx = Transaction::default();
                c.reply(&format!("250-{HOSTNAME} greets {arg}\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250-SMTPUTF8\r\n250 8BITMIME"))
                    .await?;
            }
            "HELO" => {
                tx = Transaction::default();
                c.reply(&format!("250 {HOSTNAME}")).await?;
            }
            "AUTH" => {
                if auth_user.is_some() {
                    c.reply("503 5.5.1 Already authenticated").await?;
                    continue;
                }
                match authenticate(&mut c, &arg).await? {
                    AuthOutcome::User(user) => {
                        if shared.mode() == Mode::RejectAuth {
                            c.reply("535 5.7.8 Authentication credentials invalid").await?;
                        } else {
                            auth_user = Some(user);
                            c.reply("235 2.7.0 Authentication successful").await?;
                        }
                    }
                    AuthOutcome::Reply(r) => c.reply(r).await?,
                    AuthOutcome::Closed => return Ok(()),
                }
            }
            "MAIL" => match path_arg(&arg, "FROM:") {
                _ if tx.from.is_some() => c.reply("503 5.5.1 Nested MAIL command").await?,
                Some(from) => {
                    tx.from = Some(from);
                    c.reply("250 2.1.0 Ok").await?;
                }
                None => c.reply("501 5.5.4 Syntax: MAIL FROM:<address>").await?,
            },
            "RCPT" => match path_arg(&arg, "TO:") {
                _ if tx.from.is_none() => c.reply("503 5.5.1 Need MAIL before RCPT").await?,
                Some(to) if shared.mode() == Mode::RejectRecipient => {
                    c.reply(&format!("550 5.1.1 <{to}>: Recipient address rejected: mailbox unavailable")).await?;
                }
                Some(to) if !to.is_empty() => {
                    tx.to.push(to);
                    c.reply("250 2.1.5 Ok").await?;
                }
                _ => c.reply("501 5.5.4 Syntax: RCPT TO:<address>").await?,
            },
            "DATA" => {
                if tx.from.is_none() || tx.to.is_empty() {
                    c.reply("503 5.5.1 Need MAIL and RCPT before DATA").await?;
                    continue;
                }
                c.reply("354 End data with <CR><LF>.<CR><LF>").await?;
                let Some(data) = read_data(&mut c).await? else { return Ok(()) };
                let tx = std::mem::take(&mut tx);
                let mail = ReceivedMail {
                    from: tx.from.unwrap_or_default(),
                    to: tx.to,
                    message_id: header_value(&data, "Message-ID"),
                    data,
                    auth_user: auth_user.clone(),
                };
                let n = {
                    let mut st = shared.lock();
                    st.messages.push(mail);
                    st.messages.len()
                };
                c.reply(&format!("250 2.0.0 Ok: queued as FAKE{n}")).await?;
            }
            "RSET" => {
                tx = Transaction::default();
                c.reply("250 2.0.0 Ok").await?;
            }
            "NOOP" => c.reply("250 2.0.0 Ok").await?,
            "VRFY" => c.reply("252 2.0.0 Cannot VRFY user").await?,
            "QUIT" => {
                c.reply("221 2.0.0 Bye").await?;
                return c.writer.shutdown().await;
            }
            _ => c.reply("500 5.5.2 Command not recognized").await?,
        }
    }
    Ok(())
}

enum AuthOutcome {
    User(String),
    Reply(&'static str),
    Closed,
}

/// Runs an `AUTH PLAIN` or `AUTH LOGIN` exchange and returns the user name (the password is read
/// and dropped).
async fn authenticate(c: &mut Conn, arg: &str) -> io::Result<AuthOutcome> {
    let (mechanism, initial) = match arg.split_once(' ') {
        Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_string())),
        None => (arg.to_ascii_uppercase(), None),
    };
    match mechanism.as_str() {
        "PLAIN" => {
            let token = match initial {
                Some(t) => t,
                None => match c.challenge("334 ").await? {
                    Some(t) => t,
                    None => return Ok(AuthOutcome::Closed),
                },
            };
            if token == "*" {
                return Ok(AuthOutcome::Reply("501 5.0.0 Authentication cancelled"));
            }
            // authzid \0 authcid \0 password
            let Some(decoded) = base64_decode(&token) else {
                return Ok(AuthOutcome::Reply("501 5.5.2 Cannot decode the AUTH PLAIN response"));
            };
            let mut parts = decoded.split(|b| *b == 0);
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(_authz), Some(user), Some(_password), None) => Ok(AuthOutcome::User(String::from_utf8_lossy(user).into_owned())),
                _ => Ok(AuthOutcome::Reply("501 5.5.2 Malformed AUTH PLAIN response")),
            }
        }
        "LOGIN" => {
            let user = match initial {
                Some(u) => u,
                None => match c.challenge("334 VXNlcm5hbWU6").await? {
                    Some(u) => u,
                    None => return Ok(AuthOutcome::Closed),
                },
            };
            if user == "*" {
                return Ok(AuthOutcome::Reply("501 5.0.0 Authentication cancelled"));
            }
            let Some(user) = base64_decode(&user) else {
                return Ok(AuthOutcome::Reply("501 5.5.2 Cannot decode the user name"));
            };
            match c.challenge("334 UGFzc3dvcmQ6").await? {
                None => Ok(AuthOutcome::Closed),
                Some(p) if p == "*" => Ok(AuthOutcome::Reply("501 5.0.0 Authentication cancelled")),
                Some(_password) => Ok(AuthOutcome::User(String::from_utf8_lossy(&user).into_owned())),
            }
        }
        _ => Ok(AuthOutcome::Reply("504 5.5.4 Unrecognized authentication mechanism")),
    }
}

/// `FROM:<a@b> SIZE=..` → `a@b` (also without `<>`, and with a space after the colon).
fn path_arg(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let path = match rest.strip_prefix('<') {
        Some(r) => r.split_once('>')?.0,
        None => rest.split_whitespace().next().unwrap_or(""),
    };
    Some(path.to_string())
}

/// Reads the lines after `354` up to the lone `.`, undoing dot-stuffing. `None` if the client went
/// away first.
async fn read_data(c: &mut Conn) -> io::Result<Option<String>> {
    let mut lines: Vec<String> = Vec::new();
    loop {
        let Some(line) = c.line().await? else { return Ok(None) };
        if line == "." {
            return Ok(Some(lines.join("\r\n")));
        }
        lines.push(line.strip_prefix('.').map(str::to_string).unwrap_or(line));
    }
}

/// The first header `name` of a message (case-insensitive, folded lines joined).
fn header_value(data: &str, name: &str) -> Option<String> {
    let headers = data.split("\r\n\r\n").next().unwrap_or("");
    let mut found: Option<String> = None;
    for line in headers.split("\r\n") {
        if let Some(v) = found.as_mut() {
            if line.starts_with([' ', '\t']) {
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for ch in s.trim().bytes() {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("AHVzZXIAcGFzcw==").as_deref(), Some(&b"\0user\0pass"[..]));
        assert_eq!(base64_decode("Zm9vYmFy").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(base64_decode("Zg==").as_deref(), Some(&b"f"[..]));
        assert!(base64_decode("!!").is_none());
    }

    #[test]
    fn parses_paths_and_headers() {
        assert_eq!(path_arg("FROM:<a@b.c> BODY=8BITMIME", "FROM:").as_deref(), Some("a@b.c"));
        assert_eq!(path_arg("to: <x@y>", "TO:").as_deref(), Some("x@y"));
        assert_eq!(path_arg("FROM:<>", "FROM:").as_deref(), Some(""));
        assert_eq!(path_arg("TO:<x@y>", "FROM:"), None);
        let data = "Subject: hi\r\nMessage-ID:\r\n <id@h>\r\nX: y\r\n\r\nbody";
        assert_eq!(header_value(data, "message-id").as_deref(), Some("<id@h>"));
        assert_eq!(header_value(data, "subject").as_deref(), Some("hi"));
        assert_eq!(header_value(data, "missing"), None);
    }
}
