//! `[retention]` and `[audit]`: how long the ledger and the audit trail are kept
//! before the background pruner removes them (see [`crate::queue::prune`]).

use std::time::Duration;

use serde::Deserialize;

/// How long finished batches are kept when nothing says.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// How long audit entries are kept when nothing says.
pub const DEFAULT_AUDIT_DAYS: u32 = 365;

/// How long the ledger is kept (`[retention]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days a finished batch (its messages, receipts, replies and webhook
    /// deliveries alike) is kept after it last changed; 0 keeps everything. When
    /// unset: a PostgreSQL store URL's `retention_days` (the older spelling), else
    /// 30.
    pub days: Option<u32>,
}

/// How long the audit trail is kept (`[audit]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Days an audit entry is kept; 0 keeps every entry. At least the ledger's.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: DEFAULT_AUDIT_DAYS,
        }
    }
}

/// `days` as an age; 0 is forever (`None`).
fn age(days: u32) -> Option<Duration> {
    (days > 0).then(|| Duration::from_secs(u64::from(days) * 86_400))
}

impl RetentionConfig {
    /// The ledger's days: `days`, else `url_days` (what the store URL says in
    /// the older spelling), else the default.
    pub fn effective_days(&self, url_days: Option<u32>) -> u32 {
        self.days.or(url_days).unwrap_or(DEFAULT_RETENTION_DAYS)
    }

    /// The ledger's age (`None`: kept forever), as [`Self::effective_days`] reads.
    pub fn age(&self, url_days: Option<u32>) -> Option<Duration> {
        age(self.effective_days(url_days))
    }
}

impl AuditConfig {
    /// The audit trail's age (`None`: kept forever).
    pub fn age(&self) -> Option<Duration> {
        age(self.retention_days)
    }

    /// The trail must outlive the ledger it tells about: refuses a shorter age
    /// than `ledger_days` (0 being forever), naming both keys.
    pub fn validate(&self, ledger_days: u32) -> Result<(), String> {
        let shorter = match (self.retention_days, ledger_days) {
            (0, _) => false,
            (_, 0) => true,
            (audit, ledger) => audit < ledger,
        };
        if shorter {
            return Err(format!(
                "[audit] retention_days ({}) must be at least [retention] days ({ledger_days}, 0 meaning forever): \
                 the audit trail is kept longer than the ledger",
                self.retention_days
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_key_wins_over_the_url_and_the_url_over_the_default() {
        let unset = RetentionConfig::default();
        assert_eq!(unset.effective_days(None), 30);
        assert_eq!(unset.effective_days(Some(7)), 7);
        let set = RetentionConfig { days: Some(90) };
        assert_eq!(set.effective_days(Some(7)), 90);
        assert_eq!(RetentionConfig { days: Some(0) }.age(None), None);
        assert_eq!(set.age(None), Some(Duration::from_secs(90 * 86_400)));
    }

    #[test]
    fn an_audit_age_shorter_than_the_ledgers_is_refused() {
        let audit = |days| AuditConfig {
            retention_days: days,
        };
        assert!(audit(365).validate(30).is_ok());
        assert!(audit(0).validate(0).is_ok());
        assert!(audit(30).validate(30).is_ok());
        let err = audit(10).validate(30).unwrap_err();
        assert!(
            err.contains("[audit] retention_days") && err.contains("[retention] days"),
            "{err}"
        );
        assert!(audit(365).validate(0).is_err());
    }
}
