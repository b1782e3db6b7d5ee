//! The embedded mailbox: emails stored in the service database instead of sent (the default
//! outside production, and what the admin API shows).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tracing::info;
use uuid::Uuid;

use crate::{Email, MailError, Mailer, parse_recipient};

/// Stores emails in `sb_mailbox` (see the identity service's `*_create_mailbox.sql` migration).
#[derive(Debug, Clone)]
pub struct MailboxMailer {
    pool: PgPool,
}

/// An email in the mailbox, as the admin API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StoredEmail {
    pub id: Uuid,
    #[sqlx(rename = "to_address")]
    pub to: String,
    pub subject: String,
    pub text_body: String,
    pub template: String,
    pub created_at: DateTime<Utc>,
}

impl MailboxMailer {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Stores `email` on `conn` (so a caller can do it inside its own transaction). Returns whether
    /// it was new: storing the same [`Email::id`] again changes nothing and returns `false`.
    pub async fn store(conn: &mut PgConnection, email: &Email) -> Result<bool, MailError> {
        parse_recipient(&email.to)?;
        let done = sqlx::query(
            "INSERT INTO sb_mailbox (id, to_address, subject, text_body, template) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(email.id)
        .bind(email.to.trim())
        .bind(&email.subject)
        .bind(&email.text_body)
        .bind(&email.template)
        .execute(conn)
        .await
        .map_err(|e| MailError::Transient(format!("mailbox: {e}")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Up to `limit` emails, newest first, only those to `to` (exact address as stored) if given.
    pub async fn list(pool: &PgPool, limit: i64, to: Option<&str>) -> Result<Vec<StoredEmail>, sqlx::Error> {
        sqlx::query_as::<_, StoredEmail>(
            "SELECT id, to_address, subject, text_body, template, created_at FROM sb_mailbox \
             WHERE $1::text IS NULL OR to_address = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(to.map(str::trim))
        .bind(limit.max(0))
        .fetch_all(pool)
        .await
    }
}

#[async_trait::async_trait]
impl Mailer for MailboxMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let mut conn = self.pool.acquire().await.map_err(|e| MailError::Transient(format!("mailbox: {e}")))?;
        let new = Self::store(&mut conn, email).await?;
        info!(email_id = %email.id, template = %email.template, mailer = "mailbox", duplicate = !new, "email stored");
        Ok(())
    }

    fn name(&self) -> &'static str {
        "mailbox"
    }
}
