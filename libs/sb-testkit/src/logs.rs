//! Capturing what a test's services log, to search it (secrets must never appear; a request id
//! must be followable).

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

/// A log sink that keeps every byte written to it.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Installs a JSON subscriber at debug level writing here, for the whole test process
    /// (nextest runs each test in its own process). Returns the sink.
    pub fn install() -> Self {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt().json().with_max_level(tracing::Level::DEBUG).with_writer(move || writer.clone()).init();
        logs
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
