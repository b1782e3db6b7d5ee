//! The embedded CRM: a contact book in crm-sync's own database, with HubSpot's rules (one contact
//! per email, compared case-insensitively; the stage moves backwards only by clearing it first,
//! which `update` does like the HubSpot adapter). Staff read it through the gateway.

use async_trait::async_trait;
use sqlx::PgPool;

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

#[async_trait]
impl Crm for ContactBook {
    fn name(&self) -> &'static str {
        "contact_book"
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<Contact>, CrmError> {
        let row: Option<(i64, String, String)> =
            sqlx::query_as("SELECT id, email, lifecycle_stage FROM contact_book WHERE email = lower($1)")
                .bind(email)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(row.map(|(id, email, lifecycle_stage)| Contact { id: id.to_string(), email, lifecycle_stage }))
    }

    async fn create(&self, email: &str, p: &ContactProps) -> Result<Contact, CrmError> {
        // Like HubSpot's 409 on an existing email: the existing contact is the answer.
        let (id, email, stage): (i64, String, String) = sqlx::query_as(
            "INSERT INTO contact_book (email, name, account_id, account_name, plan, stripe_customer_id, access_status, lifecycle_stage)
             VALUES (lower($1), $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (email) DO UPDATE SET updated_at = contact_book.updated_at
             RETURNING id, email, lifecycle_stage",
        )
        .bind(email)
        .bind(&p.name)
        .bind(&p.account_id)
        .bind(&p.account_name)
        .bind(&p.plan)
        .bind(&p.stripe_customer_id)
        .bind(&p.access_status)
        .bind(&p.lifecycle_stage)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(Contact { id: id.to_string(), email, lifecycle_stage: stage })
    }

    async fn update(&self, contact: &Contact, p: &ContactProps) -> Result<Contact, CrmError> {
        let id: i64 = contact.id.parse().map_err(|_| CrmError::Permanent(format!("contact book: no contact {:?}", contact.id)))?;
        // Empty = unknown: keep what is stored.
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
        .bind(&p.account_id)
        .bind(&p.account_name)
        .bind(&p.plan)
        .bind(&p.stripe_customer_id)
        .bind(&p.access_status)
        .bind(&p.lifecycle_stage)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let (email, lifecycle_stage) = row.ok_or_else(|| CrmError::Permanent(format!("contact book: no contact {id}")))?;
        Ok(Contact { id: contact.id.clone(), email, lifecycle_stage })
    }
}
