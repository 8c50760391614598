//! Stored templates, the suppression list and the fingerprints of recent sends in
//! the embedded engine. Lists of addresses and fingerprints go to SQLite as one JSON array per statement (`json_each`), so a
//! lookup of many addresses is one statement walking the primary key.

use std::collections::HashSet;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::Sqlite;
use super::connection::{unavailable, write_transaction};
use super::schema::parse_channel;
use crate::domain::{Channel, now_ms};
use crate::queue::{
    Error, RecordStore, Result, StoredTemplate, Suppression, Unacked, parse_providers,
    providers_json, suppression_ranges,
};

/// Addresses or fingerprints looked up per read: large enough that a lookup is a handful of
/// statements, small enough that ledger reads get the reader between them.
const LOOKUP_CHUNK: usize = 20_000;

const TEMPLATE: &str =
    "SELECT id, channel, subject, body, providers, version, created_at, updated_at
                        FROM templates";

/// Both take the template as `?1`…`?5`, the time as `?6`, and return the stored
/// version and creation time, or no row (create: the id is taken; replace: there is
/// no such template).
const CREATE_TEMPLATE: &str = "
INSERT INTO templates (id, channel, subject, body, providers, version, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)
ON CONFLICT (id) DO NOTHING
RETURNING version, created_at";

const REPLACE_TEMPLATE: &str = "
UPDATE templates SET channel = ?2, subject = ?3, body = ?4, providers = ?5,
    version = version + 1, updated_at = ?6
WHERE id = ?1
RETURNING version, created_at";

type TemplateRow = (
    String,
    String,
    Option<String>,
    String,
    String,
    u32,
    i64,
    i64,
);

fn template_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TemplateRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn to_template(
    (id, channel, subject, body, providers, version, created_at_ms, updated_at_ms): TemplateRow,
) -> Result<StoredTemplate> {
    Ok(StoredTemplate {
        id,
        channel: parse_channel(channel)?,
        subject,
        body,
        providers: parse_providers(&providers)?,
        version,
        created_at_ms,
        updated_at_ms,
    })
}

/// Runs [`CREATE_TEMPLATE`] or [`REPLACE_TEMPLATE`].
fn save_template(
    conn: &Connection,
    sql: &str,
    template: StoredTemplate,
) -> Result<Option<StoredTemplate>> {
    let now = now_ms();
    let stored: Option<(u32, i64)> = conn
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.query_row(
                params![
                    template.id,
                    template.channel.as_str(),
                    template.subject,
                    template.body,
                    providers_json(&template.providers),
                    now,
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .map_err(unavailable)?;
    Ok(stored.map(|(version, created_at_ms)| StoredTemplate {
        version,
        created_at_ms,
        updated_at_ms: now,
        ..template
    }))
}

/// Up to `limit` suppressions of `channel` after `after` (from the first: `None`).
fn suppressions_of(
    conn: &Connection,
    channel: Channel,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Suppression>> {
    const PAGE: &str = "SELECT address, reason, created_at FROM suppressions WHERE channel = ?1";
    let row = |r: &rusqlite::Row<'_>| {
        Ok(Suppression {
            channel,
            address: r.get(0)?,
            reason: r.get(1)?,
            created_at_ms: r.get(2)?,
        })
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    match after {
        None => conn
            .prepare_cached(&format!("{PAGE} ORDER BY address LIMIT ?2"))
            .and_then(|mut s| {
                s.query_map(params![channel.as_str(), limit], row)?
                    .collect()
            }),
        Some(after) => conn
            .prepare_cached(&format!(
                "{PAGE} AND address > ?2 ORDER BY address LIMIT ?3"
            ))
            .and_then(|mut s| {
                s.query_map(params![channel.as_str(), after, limit], row)?
                    .collect()
            }),
    }
    .map_err(unavailable)
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Corrupt(e.to_string()))
}

#[async_trait]
impl RecordStore for Sqlite {
    async fn create_template(&self, template: StoredTemplate) -> Result<Option<StoredTemplate>> {
        self.write(move |conn| save_template(conn, CREATE_TEMPLATE, template))
            .await
    }

    async fn replace_template(&self, template: StoredTemplate) -> Result<Option<StoredTemplate>> {
        self.write(move |conn| save_template(conn, REPLACE_TEMPLATE, template))
            .await
    }

    async fn template(&self, id: &str) -> Result<Option<StoredTemplate>> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(&format!("{TEMPLATE} WHERE id = ?1"))
                .and_then(|mut s| s.query_row([&id], template_row).optional())
                .map_err(unavailable)?
                .map(to_template)
                .transpose()
        })
        .await
    }

    async fn templates(&self, after: Option<String>, limit: u32) -> Result<Vec<StoredTemplate>> {
        self.read(move |conn| {
            let rows = match &after {
                None => conn
                    .prepare_cached(&format!("{TEMPLATE} ORDER BY id LIMIT ?1"))
                    .and_then(|mut s| s.query_map([limit], template_row)?.collect()),
                Some(after) => conn
                    .prepare_cached(&format!("{TEMPLATE} WHERE id > ?1 ORDER BY id LIMIT ?2"))
                    .and_then(|mut s| s.query_map(params![after, limit], template_row)?.collect()),
            };
            let rows: Vec<TemplateRow> = rows.map_err(unavailable)?;
            rows.into_iter().map(to_template).collect()
        })
        .await
    }

    async fn delete_template(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM templates WHERE id = ?1")
                .and_then(|mut s| s.execute([&id]))
                .map_err(unavailable)?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn suppress(&self, entries: Vec<Suppression>) -> Result<usize> {
        let entries = json(
            &entries
                .iter()
                .map(|e| (e.channel.as_str(), &e.address, &e.reason))
                .collect::<Vec<_>>(),
        )?;
        self.write(move |conn| {
            let tx = write_transaction(conn)?;
            // Counted first, under the write lock: the upsert's change count cannot
            // tell an insert from an update.
            let new: i64 = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM json_each(?1) e
                     WHERE NOT EXISTS (SELECT 1 FROM suppressions s
                                       WHERE s.channel = e.value ->> 0 AND s.address = e.value ->> 1)",
                )
                .and_then(|mut s| s.query_row([&entries], |r| r.get(0)))
                .map_err(unavailable)?;
            // `WHERE true` tells the parser that ON CONFLICT belongs to the INSERT.
            tx.prepare_cached(
                "INSERT INTO suppressions (channel, address, reason, created_at)
                 SELECT value ->> 0, value ->> 1, value ->> 2, ?2 FROM json_each(?1) WHERE true
                 ON CONFLICT (channel, address) DO UPDATE SET reason = excluded.reason
                     WHERE reason <> excluded.reason",
            )
            .and_then(|mut s| s.execute(params![entries, now_ms()]))
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(usize::try_from(new).expect("a count is not negative"))
        })
        .await
    }

    async fn unsuppress(&self, channel: Channel, addresses: Vec<String>) -> Result<usize> {
        let addresses = json(&addresses)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM suppressions
                 WHERE channel = ?1 AND address IN (SELECT value FROM json_each(?2))",
            )
            .and_then(|mut s| s.execute(params![channel.as_str(), addresses]))
            .map_err(unavailable)
        })
        .await
    }

    async fn suppressed(&self, channel: Channel, addresses: &[&str]) -> Result<HashSet<String>> {
        // A list no longer than the addresses is read whole, in key order, and
        // matched here: cheaper than a probe per address. Reading stops one past
        // that length, so a long list costs no more than the probes it avoids.
        let most = addresses.len() + 1;
        let listed: Vec<String> = self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT address FROM suppressions WHERE channel = ?1 ORDER BY address LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![channel.as_str(), most as i64], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()
                })
                .map_err(unavailable)
            })
            .await?;
        if listed.len() < most {
            let listed: HashSet<String> = listed.into_iter().collect();
            return Ok(addresses
                .iter()
                .filter(|a| listed.contains(**a))
                .map(|a| (*a).to_owned())
                .collect());
        }
        let mut found = HashSet::new();
        for chunk in addresses.chunks(LOOKUP_CHUNK) {
            let chunk = json(chunk)?;
            let rows = self
                .read(move |conn| {
                    conn.prepare_cached(
                        "SELECT value FROM json_each(?2)
                         WHERE EXISTS (SELECT 1 FROM suppressions WHERE channel = ?1 AND address = value)",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![channel.as_str(), chunk], |r| r.get(0))?
                            .collect::<rusqlite::Result<Vec<String>>>()
                    })
                    .map_err(unavailable)
                })
                .await?;
            found.extend(rows);
        }
        Ok(found)
    }

    async fn suppressions(
        &self,
        channel: Option<Channel>,
        after: Option<(Channel, String)>,
        limit: u32,
    ) -> Result<Vec<Suppression>> {
        let ranges = suppression_ranges(channel, after);
        self.read(move |conn| {
            let limit = limit as usize;
            let mut page = Vec::new();
            for (channel, after) in ranges {
                if page.len() >= limit {
                    break;
                }
                page.extend(suppressions_of(
                    conn,
                    channel,
                    after.as_deref(),
                    limit - page.len(),
                )?);
            }
            Ok(page)
        })
        .await
    }

    async fn remember_sends(
        &self,
        channel: Channel,
        fingerprints: Vec<String>,
        at_ms: i64,
    ) -> Result<()> {
        let fingerprints = json(&fingerprints)?;
        self.write(move |conn| {
            // `WHERE true` tells the parser that ON CONFLICT belongs to the INSERT.
            conn.prepare_cached(
                "INSERT INTO send_fingerprints (channel, fingerprint, at)
                 SELECT ?1, value, ?3 FROM json_each(?2) WHERE true
                 ON CONFLICT (channel, fingerprint) DO UPDATE SET at = excluded.at
                     WHERE at < excluded.at",
            )
            .and_then(|mut s| s.execute(params![channel.as_str(), fingerprints, at_ms]))
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn recently_sent(
        &self,
        channel: Channel,
        fingerprints: Vec<String>,
        since_ms: i64,
    ) -> Result<HashSet<String>> {
        let mut found = HashSet::new();
        let any = self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM send_fingerprints WHERE channel = ?1 AND at >= ?2)",
                )
                .and_then(|mut s| {
                    s.query_row(params![channel.as_str(), since_ms], |r| r.get::<_, bool>(0))
                })
                .map_err(unavailable)
            })
            .await?;
        if !any {
            return Ok(found);
        }
        for chunk in fingerprints.chunks(LOOKUP_CHUNK) {
            let chunk = json(chunk)?;
            let rows = self
                .read(move |conn| {
                    conn.prepare_cached(
                        "SELECT value FROM json_each(?3)
                         WHERE EXISTS (SELECT 1 FROM send_fingerprints
                                       WHERE channel = ?1 AND fingerprint = value AND at >= ?2)",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![channel.as_str(), since_ms, chunk], |r| r.get(0))?
                            .collect::<rusqlite::Result<Vec<String>>>()
                    })
                    .map_err(unavailable)
                })
                .await?;
            found.extend(rows);
        }
        Ok(found)
    }

    async fn forget_sends(&self, channel: Channel, before_ms: i64, limit: u32) -> Result<u64> {
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM send_fingerprints WHERE channel = ?1 AND fingerprint IN (
                         SELECT fingerprint FROM send_fingerprints
                         WHERE channel = ?1 AND at < ?2 LIMIT ?3)",
                )
                .and_then(|mut s| s.execute(params![channel.as_str(), before_ms, limit]))
                .map_err(unavailable)?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn mark_unacked(&self, marker: &Unacked, at_ms: i64, stale_before_ms: i64) -> Result<()> {
        let Unacked { source, hash, key } = marker.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM ingest_unacked WHERE rowid IN
                     (SELECT rowid FROM ingest_unacked WHERE at < ?1 LIMIT 100)",
            )
            .and_then(|mut s| s.execute(params![stale_before_ms]))
            .and_then(|_| {
                conn.prepare_cached(
                    "INSERT INTO ingest_unacked (source, hash, key, at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                )
            })
            .and_then(|mut s| s.execute(params![source, hash, key, at_ms]))
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn unacked(
        &self,
        source: &str,
        hash: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<String>> {
        let (source, hash) = (source.to_owned(), hash.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT key FROM ingest_unacked WHERE source = ?1 AND hash = ?2 AND at >= ?3
                 ORDER BY at, key LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(params![source, hash, since_ms, limit], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .map_err(unavailable)
        })
        .await
    }

    async fn unmark_unacked(&self, marker: &Unacked) -> Result<()> {
        let Unacked { source, hash, key } = marker.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM ingest_unacked WHERE source = ?1 AND hash = ?2 AND key = ?3",
            )
            .and_then(|mut s| s.execute(params![source, hash, key]))
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}
