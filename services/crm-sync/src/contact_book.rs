//! The embedded CRM: a contact book in crm-sync's own database (the `contact_book` table), used
//! when no HubSpot token is configured. HubSpot's rules hold: one contact per email, compared
//! case-insensitively (a unique index, so concurrent creates end in one contact without a lock),
//! and a create that meets an existing contact makes it hold the given properties. Staff read it
//! through the gateway ([`list`]).
//!
//! Every call takes one pooled connection for one statement: it counts as the CRM, so it runs
//! outside any transaction of crm-sync's.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::crm::{Contact, ContactProps, Crm, CrmError};

pub struct ContactBook {
    pool: PgPool,
}

impl ContactBook {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn unavailable(e: sqlx::Error) -> CrmError {
    CrmError::Transient { reason: format!("contact book: {e}"), retry_after: None }
}

/// The properties as the book's text columns (empty = unknown: the stored value stays).
struct Columns {
    account_id: String,
    access_status: &'static str,
    lifecycle_stage: String,
}

fn columns(p: &ContactProps) -> Columns {
    Columns {
        account_id: p.account_id.map(|a| a.to_string()).unwrap_or_default(),
        access_status: p.access_status.map_or("", |a| a.as_str()),
        lifecycle_stage: p.lifecycle_stage.as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
    }
}

#[async_trait]
impl Crm for ContactBook {
    fn name(&self) -> &'static str {
        "contact_book"
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<Contact>, CrmError> {
        let row: Option<(i64, String, String)> =
            sqlx::query_as("SELECT id, email, lifecycle_stage FROM contact_book WHERE email = lower(trim($1))")
                .bind(email)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(row.map(|(id, email, lifecycle_stage)| Contact { id: id.to_string(), email, lifecycle_stage }))
    }

    async fn create(&self, email: &str, p: &ContactProps) -> Result<Contact, CrmError> {
        let c = columns(p);
        // Like HubSpot's 409 on an existing email, then an update: the existing contact is the
        // answer, holding these properties.
        let (id, email, stage): (i64, String, String) = sqlx::query_as(
            "INSERT INTO contact_book (email, name, account_id, account_name, plan, stripe_customer_id, access_status, lifecycle_stage)
             VALUES (lower(trim($1)), $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (email) DO UPDATE SET
                 name = COALESCE(NULLIF(EXCLUDED.name, ''), contact_book.name),
                 account_id = COALESCE(NULLIF(EXCLUDED.account_id, ''), contact_book.account_id),
                 account_name = COALESCE(NULLIF(EXCLUDED.account_name, ''), contact_book.account_name),
                 plan = COALESCE(NULLIF(EXCLUDED.plan, ''), contact_book.plan),
                 stripe_customer_id = COALESCE(NULLIF(EXCLUDED.stripe_customer_id, ''), contact_book.stripe_customer_id),
                 access_status = COALESCE(NULLIF(EXCLUDED.access_status, ''), contact_book.access_status),
                 lifecycle_stage = COALESCE(NULLIF(EXCLUDED.lifecycle_stage, ''), contact_book.lifecycle_stage),
                 updated_at = now()
             RETURNING id, email, lifecycle_stage",
        )
        .bind(email)
        .bind(&p.name)
        .bind(&c.account_id)
        .bind(&p.account_name)
        .bind(&p.plan)
        .bind(&p.stripe_customer_id)
        .bind(c.access_status)
        .bind(&c.lifecycle_stage)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(Contact { id: id.to_string(), email, lifecycle_stage: stage })
    }

    async fn update(&self, contact: &Contact, p: &ContactProps) -> Result<Contact, CrmError> {
        let id: i64 = contact.id.parse().map_err(|_| CrmError::Permanent(format!("contact book: no contact {:?}", contact.id)))?;
        let c = columns(p);
        let row: Option<(String, String)> = sqlx::query_as(
            "UPDATE contact_book SET
                 name = COALESCE(NULLIF($2, ''), name), account_id = COALESCE(NULLIF($3, ''), account_id),
                 account_name = COALESCE(NULLIF($4, ''), account_name), plan = COALESCE(NULLIF($5, ''), plan),
                 stripe_customer_id = COALESCE(NULLIF($6, ''), stripe_customer_id),
                 access_status = COALESCE(NULLIF($7, ''), access_status),
                 lifecycle_stage = COALESCE(NULLIF($8, ''), lifecycle_stage), updated_at = now()
             WHERE id = $1 RETURNING email, lifecycle_stage",
        )
        .bind(id)
        .bind(&p.name)
        .bind(&c.account_id)
        .bind(&p.account_name)
        .bind(&p.plan)
        .bind(&p.stripe_customer_id)
        .bind(c.access_status)
        .bind(&c.lifecycle_stage)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let (email, lifecycle_stage) = row.ok_or_else(|| CrmError::Permanent(format!("contact book: no contact {id}")))?;
        Ok(Contact { id: contact.id.clone(), email, lifecycle_stage })
    }
}

/// A contact of the embedded contact book, for staff.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BookContact {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub account_id: String,
    pub account_name: String,
    pub plan: String,
    pub stripe_customer_id: String,
    pub access_status: String,
    pub lifecycle_stage: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Contacts whose email, name or account name contain `query` (all when empty), newest first.
pub async fn list(conn: &mut PgConnection, query: &str, limit: i64) -> sqlx::Result<Vec<BookContact>> {
    sqlx::query_as(
        "SELECT id, email, name, account_id, account_name, plan, stripe_customer_id, access_status, lifecycle_stage, created_at, updated_at
         FROM contact_book
         WHERE $1 = '' OR email ILIKE '%' || $1 || '%' OR name ILIKE '%' || $1 || '%' OR account_name ILIKE '%' || $1 || '%'
         ORDER BY id DESC LIMIT $2",
    )
    .bind(query)
    .bind(limit)
    .fetch_all(conn)
    .await
}
