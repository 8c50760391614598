//! Stored templates, the suppression list and the fingerprints of recent sends in
//! the PostgreSQL engine: each change is one statement; lists of addresses and
//! fingerprints go as arrays, so a bulk upsert or lookup is one round trip per chunk.

use std::collections::HashSet;

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{Postgres, db, parse_channel};
use crate::domain::{Channel, now_ms};
use crate::queue::{
    Error, RecordStore, Result, StoredTemplate, Suppression, Unacked, parse_providers,
    providers_json, suppression_ranges,
};

/// Addresses or fingerprints looked up per statement: one round trip each, and a bounded message
/// size however many recipients a batch has.
const LOOKUP_CHUNK: usize = 50_000;

/// Both take the template as `$1`…`$5`, the time as `$6`, and return the stored
/// version and creation time, or no row (create: the id is taken; replace: there is
/// no such template).
pub(super) const CREATE_TEMPLATE: &str = "
INSERT INTO {s}.templates (id, channel, subject, body, providers, version, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, 1, $6, $6)
ON CONFLICT (id) DO NOTHING
RETURNING version, created_at";

pub(super) const REPLACE_TEMPLATE: &str = "
UPDATE {s}.templates SET channel = $2, subject = $3, body = $4, providers = $5,
    version = version + 1, updated_at = $6
WHERE id = $1
RETURNING version, created_at";

/// What `{template}` stands for in the statements that read templates.
pub(super) const SELECT_TEMPLATE: &str = "SELECT id, channel, subject, body, providers, version, created_at, updated_at FROM {s}.templates";

pub(super) const TEMPLATE: &str = "{template} WHERE id = $1";

pub(super) const TEMPLATES: &str = "{template} ORDER BY id LIMIT $1";

pub(super) const TEMPLATES_AFTER: &str = "{template} WHERE id > $1 ORDER BY id LIMIT $2";

pub(super) const DELETE_TEMPLATE: &str = "DELETE FROM {s}.templates WHERE id = $1";

/// Upserts the entries `($1, $2, $3)[i]` (no two alike) and counts the new ones:
/// a row whose `xmax` is 0 was inserted by this statement, not updated. A reason
/// that did not change is not rewritten.
pub(super) const SUPPRESS: &str = "
WITH upserted AS (
    INSERT INTO {s}.suppressions AS x (channel, address, reason, created_at)
    SELECT e.channel, e.address, e.reason, $4
    FROM UNNEST($1::text[], $2::text[], $3::text[]) AS e(channel, address, reason)
    ON CONFLICT (channel, address) DO UPDATE SET reason = EXCLUDED.reason
        WHERE x.reason <> EXCLUDED.reason
    RETURNING x.xmax = 0 AS new
)
SELECT COUNT(*) FILTER (WHERE new) FROM upserted";

pub(super) const UNSUPPRESS: &str =
    "DELETE FROM {s}.suppressions WHERE channel = $1 AND address = ANY($2::text[])";

pub(super) const ANY_SUPPRESSED: &str =
    "SELECT EXISTS (SELECT 1 FROM {s}.suppressions WHERE channel = $1)";

pub(super) const SUPPRESSED: &str =
    "SELECT address FROM {s}.suppressions WHERE channel = $1 AND address = ANY($2::text[])";

pub(super) const SUPPRESSIONS: &str = "
SELECT address, reason, created_at FROM {s}.suppressions
WHERE channel = $1
ORDER BY address LIMIT $2";

pub(super) const SUPPRESSIONS_AFTER: &str = "
SELECT address, reason, created_at FROM {s}.suppressions
WHERE channel = $1 AND address > $2
ORDER BY address LIMIT $3";

/// Upserts the fingerprints `$2` (no two alike) of channel `$1` at `$3`; one already
/// there keeps the later time, and is not rewritten when that is its own.
pub(super) const REMEMBER_SENDS: &str = "
INSERT INTO {s}.send_fingerprints AS x (channel, fingerprint, at)
SELECT $1, f, $3 FROM UNNEST($2::text[]) AS f
ON CONFLICT (channel, fingerprint) DO UPDATE SET at = EXCLUDED.at
    WHERE x.at < EXCLUDED.at";

pub(super) const ANY_RECENTLY_SENT: &str =
    "SELECT EXISTS (SELECT 1 FROM {s}.send_fingerprints WHERE channel = $1 AND at >= $2)";

pub(super) const RECENTLY_SENT: &str = "
SELECT fingerprint FROM {s}.send_fingerprints
WHERE channel = $1 AND at >= $2 AND fingerprint = ANY($3::text[])";

/// Deletes up to `$3` fingerprints of channel `$1` remembered before `$2`. One
/// upserted meanwhile has a new row version, which the `ctid` no longer matches.
pub(super) const FORGET_SENDS: &str = "
DELETE FROM {s}.send_fingerprints WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {s}.send_fingerprints WHERE channel = $1 AND at < $2 LIMIT $3))";

/// Deletes up to 100 markers marked before `$1`.
pub(super) const EXPIRE_UNACKED: &str = "
DELETE FROM {s}.ingest_unacked WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {s}.ingest_unacked WHERE at < $1 LIMIT 100))";

pub(super) const MARK_UNACKED: &str = "
INSERT INTO {s}.ingest_unacked (source, hash, key, at) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING";

pub(super) const UNACKED: &str = "
SELECT key FROM {s}.ingest_unacked WHERE source = $1 AND hash = $2 AND at >= $3
ORDER BY at, key LIMIT $4";

pub(super) const UNMARK_UNACKED: &str =
    "DELETE FROM {s}.ingest_unacked WHERE source = $1 AND hash = $2 AND key = $3";

fn template(row: &Row) -> Result<StoredTemplate> {
    Ok(StoredTemplate {
        id: row.get(0),
        channel: parse_channel(row.get(1))?,
        subject: row.get(2),
        body: row.get(3),
        providers: parse_providers(row.get(4))?,
        version: version(row.get(5))?,
        created_at_ms: row.get(6),
        updated_at_ms: row.get(7),
    })
}

fn version(n: i32) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Corrupt(format!("negative template version {n}")))
}

impl Postgres {
    /// Runs the create or replace statement `sql` (see `sql::CREATE_TEMPLATE`).
    async fn save_template(
        &self,
        sql: &str,
        template: StoredTemplate,
    ) -> Result<Option<StoredTemplate>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(db)?;
        let now = now_ms();
        let Some(row) = client
            .query_opt(
                &stmt,
                &[
                    &template.id,
                    &template.channel.as_str(),
                    &template.subject,
                    &template.body,
                    &providers_json(&template.providers),
                    &now,
                ],
            )
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        Ok(Some(StoredTemplate {
            version: version(row.get(0))?,
            created_at_ms: row.get(1),
            updated_at_ms: now,
            ..template
        }))
    }
}

#[async_trait]
impl RecordStore for Postgres {
    async fn create_template(&self, template: StoredTemplate) -> Result<Option<StoredTemplate>> {
        self.save_template(&self.sql.create_template, template)
            .await
    }

    async fn replace_template(&self, template: StoredTemplate) -> Result<Option<StoredTemplate>> {
        self.save_template(&self.sql.replace_template, template)
            .await
    }

    async fn template(&self, id: &str) -> Result<Option<StoredTemplate>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.template)
            .await
            .map_err(db)?;
        client
            .query_opt(&stmt, &[&id])
            .await
            .map_err(db)?
            .as_ref()
            .map(template)
            .transpose()
    }

    async fn templates(&self, after: Option<String>, limit: u32) -> Result<Vec<StoredTemplate>> {
        let client = self.client().await?;
        let limit = i64::from(limit);
        let rows = match &after {
            None => {
                let stmt = client
                    .prepare_cached(&self.sql.templates)
                    .await
                    .map_err(db)?;
                client.query(&stmt, &[&limit]).await
            }
            Some(after) => {
                let stmt = client
                    .prepare_cached(&self.sql.templates_after)
                    .await
                    .map_err(db)?;
                client.query(&stmt, &[after, &limit]).await
            }
        }
        .map_err(db)?;
        rows.iter().map(template).collect()
    }

    async fn delete_template(&self, id: &str) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.delete_template)
            .await
            .map_err(db)?;
        Ok(client.execute(&stmt, &[&id]).await.map_err(db)? > 0)
    }

    async fn suppress(&self, entries: Vec<Suppression>) -> Result<usize> {
        let channels: Vec<&str> = entries.iter().map(|e| e.channel.as_str()).collect();
        let addresses: Vec<&str> = entries.iter().map(|e| e.address.as_str()).collect();
        let reasons: Vec<&str> = entries.iter().map(|e| e.reason.as_str()).collect();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.suppress)
            .await
            .map_err(db)?;
        let new: i64 = client
            .query_one(&stmt, &[&channels, &addresses, &reasons, &now_ms()])
            .await
            .map_err(db)?
            .get(0);
        Ok(usize::try_from(new).expect("a count is not negative"))
    }

    async fn unsuppress(&self, channel: Channel, addresses: Vec<String>) -> Result<usize> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.unsuppress)
            .await
            .map_err(db)?;
        let removed = client
            .execute(&stmt, &[&channel.as_str(), &addresses])
            .await
            .map_err(db)?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    async fn suppressed(&self, channel: Channel, addresses: &[&str]) -> Result<HashSet<String>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.suppressed)
            .await
            .map_err(db)?;
        let mut found = HashSet::new();
        // Most channels' lists are empty: one indexed probe saves the lookup.
        let any = client
            .prepare_cached(&self.sql.any_suppressed)
            .await
            .map_err(db)?;
        let listed: bool = client
            .query_one(&any, &[&channel.as_str()])
            .await
            .map_err(db)?
            .get(0);
        if !listed {
            return Ok(found);
        }
        for chunk in addresses.chunks(LOOKUP_CHUNK) {
            let rows = client
                .query(&stmt, &[&channel.as_str(), &chunk])
                .await
                .map_err(db)?;
            found.extend(rows.iter().map(|r| r.get::<_, String>(0)));
        }
        Ok(found)
    }

    async fn suppressions(
        &self,
        channel: Option<Channel>,
        after: Option<(Channel, String)>,
        limit: u32,
    ) -> Result<Vec<Suppression>> {
        let client = self.client().await?;
        let from_start = client
            .prepare_cached(&self.sql.suppressions)
            .await
            .map_err(db)?;
        let from_after = client
            .prepare_cached(&self.sql.suppressions_after)
            .await
            .map_err(db)?;
        let mut page = Vec::new();
        for (channel, after) in suppression_ranges(channel, after) {
            let want = i64::from(limit) - page.len() as i64;
            if want <= 0 {
                break;
            }
            let rows = match &after {
                None => client.query(&from_start, &[&channel.as_str(), &want]).await,
                Some(after) => {
                    client
                        .query(&from_after, &[&channel.as_str(), after, &want])
                        .await
                }
            }
            .map_err(db)?;
            page.extend(rows.iter().map(|r| Suppression {
                channel,
                address: r.get(0),
                reason: r.get(1),
                created_at_ms: r.get(2),
            }));
        }
        Ok(page)
    }

    async fn remember_sends(
        &self,
        channel: Channel,
        fingerprints: Vec<String>,
        at_ms: i64,
    ) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.remember_sends)
            .await
            .map_err(db)?;
        client
            .execute(&stmt, &[&channel.as_str(), &fingerprints, &at_ms])
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn recently_sent(
        &self,
        channel: Channel,
        fingerprints: Vec<String>,
        since_ms: i64,
    ) -> Result<HashSet<String>> {
        let client = self.client().await?;
        let any = client
            .prepare_cached(&self.sql.any_recently_sent)
            .await
            .map_err(db)?;
        let mut found = HashSet::new();
        let recent: bool = client
            .query_one(&any, &[&channel.as_str(), &since_ms])
            .await
            .map_err(db)?
            .get(0);
        if !recent {
            return Ok(found);
        }
        let stmt = client
            .prepare_cached(&self.sql.recently_sent)
            .await
            .map_err(db)?;
        for chunk in fingerprints.chunks(LOOKUP_CHUNK) {
            let rows = client
                .query(&stmt, &[&channel.as_str(), &since_ms, &chunk])
                .await
                .map_err(db)?;
            found.extend(rows.iter().map(|r| r.get::<_, String>(0)));
        }
        Ok(found)
    }

    async fn forget_sends(&self, channel: Channel, before_ms: i64, limit: u32) -> Result<u64> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.forget_sends)
            .await
            .map_err(db)?;
        client
            .execute(&stmt, &[&channel.as_str(), &before_ms, &i64::from(limit)])
            .await
            .map_err(db)
    }

    async fn mark_unacked(&self, marker: &Unacked, at_ms: i64, stale_before_ms: i64) -> Result<()> {
        let client = self.client().await?;
        let expire = client
            .prepare_cached(&self.sql.expire_unacked)
            .await
            .map_err(db)?;
        client
            .execute(&expire, &[&stale_before_ms])
            .await
            .map_err(db)?;
        let mark = client
            .prepare_cached(&self.sql.mark_unacked)
            .await
            .map_err(db)?;
        client
            .execute(&mark, &[&marker.source, &marker.hash, &marker.key, &at_ms])
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn unacked(
        &self,
        source: &str,
        hash: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<String>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.unacked).await.map_err(db)?;
        let rows = client
            .query(&stmt, &[&source, &hash, &since_ms, &i64::from(limit)])
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn unmark_unacked(&self, marker: &Unacked) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.unmark_unacked)
            .await
            .map_err(db)?;
        client
            .execute(&stmt, &[&marker.source, &marker.hash, &marker.key])
            .await
            .map_err(db)?;
        Ok(())
    }
}
