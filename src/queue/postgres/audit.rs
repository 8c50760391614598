//! The PostgreSQL engine's audit trail (table `audit`, migration 16).

use async_trait::async_trait;

use super::{Postgres, db};
use crate::queue::{AuditEntry, AuditQuery, AuditStore, NewAuditEntry, Result};

/// The statements, with the schema filled in.
pub(super) struct AuditSql {
    insert: String,
    page: String,
    prune: String,
}

impl AuditSql {
    pub(super) fn new(fill: &dyn Fn(&str) -> String) -> AuditSql {
        AuditSql {
            insert: fill(
                "INSERT INTO {s}.audit (at, actor, action, target, result)
                 VALUES ($1, $2, $3, $4, $5)",
            ),
            page: fill(
                "SELECT seq, at, actor, action, target, result FROM {s}.audit
                 WHERE ($1::text IS NULL OR action = $1) AND ($2::text IS NULL OR actor = $2)
                   AND ($3::bigint IS NULL OR seq < $3)
                 ORDER BY seq DESC LIMIT $4",
            ),
            prune: fill(
                "DELETE FROM {s}.audit WHERE seq = ANY(ARRAY(
                     SELECT seq FROM {s}.audit WHERE at < $1 ORDER BY at LIMIT $2))",
            ),
        }
    }
}

#[async_trait]
impl AuditStore for Postgres {
    async fn record_audit(&self, entry: NewAuditEntry) -> Result<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql.audit.insert)
            .await
            .map_err(db)?;
        client
            .execute(
                &statement,
                &[
                    &entry.at_ms,
                    &entry.actor,
                    &entry.action.as_str(),
                    &entry.target,
                    &entry.result,
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql.audit.page)
            .await
            .map_err(db)?;
        let rows = client
            .query(
                &statement,
                &[
                    &query.action.map(|a| a.as_str()),
                    &query.actor,
                    &query.before,
                    &i64::from(query.limit),
                ],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                seq: r.get(0),
                at_ms: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                target: r.get(4),
                result: r.get(5),
            })
            .collect())
    }

    async fn prune_audit(&self, before_ms: i64, limit: u32) -> Result<u64> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql.audit.prune)
            .await
            .map_err(db)?;
        client
            .execute(&statement, &[&before_ms, &i64::from(limit)])
            .await
            .map_err(db)
    }
}
