//! The embedded engine's audit trail (table `audit`, migration 16).

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::Sqlite;
use super::connection::{unavailable, write_transaction};
use crate::queue::{AuditEntry, AuditQuery, AuditStore, NewAuditEntry, Result};

fn record(conn: &mut Connection, entry: &NewAuditEntry) -> Result<()> {
    let tx = write_transaction(conn)?;
    tx.prepare_cached(
        "INSERT INTO audit (at, actor, action, target, result) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            entry.at_ms,
            entry.actor,
            entry.action.as_str(),
            entry.target,
            entry.result
        ])
    })
    .map_err(unavailable)?;
    tx.commit().map_err(unavailable)
}

fn list(conn: &mut Connection, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
    conn.prepare_cached(
        "SELECT seq, at, actor, action, target, result FROM audit
         WHERE (?1 IS NULL OR action = ?1) AND (?2 IS NULL OR actor = ?2)
           AND (?3 IS NULL OR seq < ?3)
         ORDER BY seq DESC LIMIT ?4",
    )
    .and_then(|mut s| {
        s.query_map(
            params![
                query.action.map(|a| a.as_str()),
                query.actor,
                query.before,
                query.limit
            ],
            |r| {
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    result: r.get(5)?,
                })
            },
        )?
        .collect()
    })
    .map_err(unavailable)
}

fn prune(conn: &mut Connection, before: i64, limit: u32) -> Result<u64> {
    let tx = write_transaction(conn)?;
    let n = tx
        .prepare_cached(
            "DELETE FROM audit WHERE seq IN (
                 SELECT seq FROM audit WHERE at < ?1 ORDER BY at LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![before, limit]))
        .map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    Ok(n as u64)
}

#[async_trait]
impl AuditStore for Sqlite {
    async fn record_audit(&self, entry: NewAuditEntry) -> Result<()> {
        self.write(move |conn| record(conn, &entry)).await
    }

    async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>> {
        self.read(move |conn| list(conn, &query)).await
    }

    async fn prune_audit(&self, before_ms: i64, limit: u32) -> Result<u64> {
        self.write(move |conn| prune(conn, before_ms, limit)).await
    }
}
