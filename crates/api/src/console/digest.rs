//! The overview's digest of the ledger: disclosures ((subject, field) pairs) per day, by field
//! and by policy version, read from the ledger as a stream. It is kept between requests and
//! read again, in the background, once the ledger has grown; a page never waits for more than
//! the first reading.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use consentry_ledger::{RawEntries, RawRecord};
use consentry_types::{Field, Instant};

use super::Console;

const DAY_MILLIS: i64 = 86_400_000;

/// Disclosures per day, as the ledger held them when it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerDigest {
    /// Records read.
    pub records: u64,
    /// (subject, field) pairs in those records.
    pub disclosures: u64,
    /// Day number (days since 1970-01-01) → pairs per field, in [`Field::ALL`] order.
    pub by_field: BTreeMap<i64, [u64; 7]>,
    /// Day number → policy version → pairs.
    pub by_version: BTreeMap<i64, BTreeMap<u32, u64>>,
    /// When the last record was made.
    pub last_at: Option<Instant>,
}

impl LedgerDigest {
    /// Reads the whole ledger in `dir` (an empty digest if there is no ledger yet).
    pub fn read(dir: &Path) -> Result<LedgerDigest, consentry_ledger::LedgerError> {
        let mut digest = LedgerDigest::default();
        if !dir.join("signing.pub").exists() {
            return Ok(digest);
        }
        let mut entries = RawEntries::open(dir)?;
        let mut record = RawRecord::default();
        while entries.next_into(&mut record)? {
            digest.add(&record);
        }
        Ok(digest)
    }

    fn add(&mut self, record: &RawRecord) {
        let day = record.at.millis().div_euclid(DAY_MILLIS);
        let fields = self.by_field.entry(day).or_insert([0; 7]);
        let mut pairs = 0u64;
        let masks = std::iter::once(record.group_fields).chain(record.members.iter().map(|(_, f)| *f));
        for mask in masks {
            for (slot, field) in Field::ALL.iter().enumerate() {
                if mask & field.bit() != 0 {
                    if let Some(n) = fields.get_mut(slot) {
                        *n += 1;
                    }
                    pairs += 1;
                }
            }
        }
        *self.by_version.entry(day).or_default().entry(record.policy_version).or_default() += pairs;
        self.records += 1;
        self.disclosures += pairs;
        self.last_at = Some(record.at);
    }

    /// The date of a day number, `YYYY-MM-DD`.
    pub fn date(day: i64) -> String {
        Instant::from_millis(day.saturating_mul(DAY_MILLIS))
            .to_string()
            .get(..10)
            .unwrap_or_default()
            .to_string()
    }

    /// The day number of an instant.
    pub fn day_of(at: Instant) -> i64 {
        at.millis().div_euclid(DAY_MILLIS)
    }
}

impl Console {
    /// The digest of the ledger in `dir` holding `records` records: the one kept if it is that
    /// recent; otherwise the one kept while a fresh one is read in the background (or, the
    /// first time, a fresh one read now).
    pub(crate) fn ledger_digest(
        self: &Arc<Self>,
        dir: &Path,
        records: Option<u64>,
    ) -> Result<Arc<LedgerDigest>, consentry_ledger::LedgerError> {
        let kept = self.digest.lock().ok().and_then(|d| d.clone());
        match kept {
            Some(digest) if records.is_none_or(|n| n == digest.records) => Ok(digest),
            Some(stale) => {
                if !self.digest_refreshing.swap(true, Ordering::SeqCst) {
                    let console = self.clone();
                    let dir = dir.to_path_buf();
                    std::thread::spawn(move || {
                        match LedgerDigest::read(&dir) {
                            Ok(fresh) => {
                                if let Ok(mut kept) = console.digest.lock() {
                                    *kept = Some(Arc::new(fresh));
                                }
                            }
                            Err(error) => tracing::error!(%error, "the console could not read the ledger"),
                        }
                        console.digest_refreshing.store(false, Ordering::SeqCst);
                    });
                }
                Ok(stale)
            }
            None => {
                let fresh = Arc::new(LedgerDigest::read(dir)?);
                if let Ok(mut kept) = self.digest.lock() {
                    *kept = Some(fresh.clone());
                }
                Ok(fresh)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_of_each_subject_counts_once_on_its_day() {
        let mut digest = LedgerDigest::default();
        let at = Instant::parse("2019-11-05T23:59:59Z").unwrap_or(Instant::from_millis(0));
        let mut record = RawRecord {
            at,
            policy_version: 2,
            group_fields: Field::GroupName.bit() | Field::GroupMemberCount.bit(),
            ..RawRecord::default()
        };
        record.members =
            vec![(1, Field::MemberName.bit() | Field::MemberPicture.bit()), (2, Field::MemberName.bit())];
        digest.add(&record);
        record.at = at.plus_secs(1);
        record.policy_version = 3;
        record.group_fields = 0;
        record.members = vec![(1, Field::MemberName.bit())];
        digest.add(&record);
        let day = LedgerDigest::day_of(at);
        assert_eq!(LedgerDigest::date(day), "2019-11-05");
        assert_eq!(digest.by_field.get(&day), Some(&[1, 1, 0, 0, 0, 2, 1]));
        assert_eq!(digest.by_field.get(&(day + 1)), Some(&[0, 0, 0, 0, 0, 1, 0]));
        assert_eq!(digest.by_version.get(&day).and_then(|v| v.get(&2)), Some(&5));
        assert_eq!(digest.by_version.get(&(day + 1)).and_then(|v| v.get(&3)), Some(&1));
        assert_eq!((digest.records, digest.disclosures), (2, 6));
    }
}
