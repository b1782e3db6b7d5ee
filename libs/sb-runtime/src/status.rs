//! Failures as gRPC statuses, the same way in every service: an outage (database down, a pool or
//! lock wait over its limit, an upstream not answering) is UNAVAILABLE with a retry hint the
//! gateway turns into `503` + `Retry-After`; anything else unexpected is INTERNAL, logged here with
//! its cause and sent without it.

use tonic::Status;
use tracing::warn;

/// Metadata key carrying how many seconds to wait before retrying (RESOURCE_EXHAUSTED, UNAVAILABLE).
pub const RETRY_AFTER: &str = "retry-after-seconds";

/// How long clients are told to wait when a dependency is down.
pub const OUTAGE_RETRY_SECS: u64 = 2;

/// `status` with a retry hint of `secs`.
pub fn with_retry_after(mut status: Status, secs: u64) -> Status {
    if let Ok(v) = secs.max(1).to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER, v);
    }
    status
}

/// A dependency is down: UNAVAILABLE, retry shortly. `what` is safe to show ("database unavailable").
pub fn unavailable(what: &str) -> Status {
    with_retry_after(Status::unavailable(what), OUTAGE_RETRY_SECS)
}

/// A bug or an unexpected state: logged with its cause, sent without it.
pub fn internal(cause: impl std::fmt::Display) -> Status {
    warn!(error = %cause, "internal error");
    Status::internal("internal error")
}

/// A database error: UNAVAILABLE when the database is down or overloaded (see
/// [`crate::db::is_unavailable`]), else INTERNAL.
pub fn database(e: &sqlx::Error) -> Status {
    if crate::db::is_unavailable(e) {
        warn!(error = %e, "database unavailable");
        unavailable("database unavailable; try again shortly")
    } else {
        internal(e)
    }
}
