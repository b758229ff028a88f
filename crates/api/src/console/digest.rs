//! The overview's digest of the ledger: disclosures ((subject, field) pairs) per day, by field
//! and by policy version, and records per stream (node), read from every stream of the ledger
//! merged. It is kept between requests and read again, in the background, once any stream has
//! grown; a page never waits for more than the first reading.

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
    /// Stream name (its node, or `single-node`) → records read and when the last was made.
    pub per_stream: BTreeMap<String, (u64, Instant)>,
    /// How large the ledger's segments were when it was read (see [`ledger_size`]).
    pub size: u64,
}

/// The bytes of every segment of every stream under `root`: a cheap sign that some node has
/// recorded since a digest was read (a few directory listings, no reads).
pub fn ledger_size(root: &Path) -> Result<u64, consentry_ledger::LedgerError> {
    let mut size = 0u64;
    for stream in consentry_ledger::streams(root)? {
        let Ok(files) = std::fs::read_dir(&stream.dir) else { continue };
        for file in files.flatten() {
            if file.file_name().to_string_lossy().ends_with(".seg") {
                size = size.saturating_add(file.metadata().map(|m| m.len()).unwrap_or(0));
            }
        }
    }
    Ok(size)
}

impl LedgerDigest {
    /// Reads every stream of the ledger under `root` (an empty digest if there is none yet).
    pub fn read(root: &Path) -> Result<LedgerDigest, consentry_ledger::LedgerError> {
        let mut digest = LedgerDigest { size: ledger_size(root)?, ..LedgerDigest::default() };
        let mut entries = RawEntries::open(root)?;
        let mut record = RawRecord::default();
        while entries.next_into(&mut record)? {
            let stream = entries.node().map_or_else(|| "single-node".to_string(), |n| n.to_string());
            digest.add(&stream, &record);
        }
        Ok(digest)
    }

    fn add(&mut self, stream: &str, record: &RawRecord) {
        let kept = self.per_stream.entry(stream.to_string()).or_insert((0, record.at));
        kept.0 += 1;
        kept.1 = kept.1.max(record.at);
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
        self.last_at = Some(self.last_at.map_or(record.at, |last| last.max(record.at)));
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
    /// Records the ledger holds, as best known without reading it: the kept digest's count
    /// (every stream, when it was read) or this node's own stream's, whichever is larger. A
    /// progress bar's total.
    pub(crate) fn ledger_records(&self, this_stream: Option<&consentry_ledger::Ledger>) -> u64 {
        let kept = self.digest.lock().ok().and_then(|d| d.as_ref().map(|d| d.records)).unwrap_or(0);
        kept.max(this_stream.map_or(0, |l| l.stats().records))
    }

    /// The digest of the ledger under `dir`: the one kept if no stream has grown since it was
    /// read; otherwise the one kept while a fresh one is read in the background (or, the
    /// first time, a fresh one read now).
    pub(crate) fn ledger_digest(
        self: &Arc<Self>,
        dir: &Path,
    ) -> Result<Arc<LedgerDigest>, consentry_ledger::LedgerError> {
        let kept = self.digest.lock().ok().and_then(|d| d.clone());
        match kept {
            Some(digest) if ledger_size(dir)? == digest.size => Ok(digest),
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
        digest.add("single-node", &record);
        record.at = at.plus_secs(1);
        record.policy_version = 3;
        record.group_fields = 0;
        record.members = vec![(1, Field::MemberName.bit())];
        digest.add("node-b", &record);
        let day = LedgerDigest::day_of(at);
        assert_eq!(LedgerDigest::date(day), "2019-11-05");
        assert_eq!(digest.by_field.get(&day), Some(&[1, 1, 0, 0, 0, 2, 1]));
        assert_eq!(digest.by_field.get(&(day + 1)), Some(&[0, 0, 0, 0, 0, 1, 0]));
        assert_eq!(digest.by_version.get(&day).and_then(|v| v.get(&2)), Some(&5));
        assert_eq!(digest.by_version.get(&(day + 1)).and_then(|v| v.get(&3)), Some(&1));
        assert_eq!((digest.records, digest.disclosures), (2, 6));
        assert_eq!(digest.per_stream.get("single-node"), Some(&(1, at)));
        assert_eq!(digest.per_stream.get("node-b"), Some(&(1, at.plus_secs(1))));
        assert_eq!(digest.last_at, Some(at.plus_secs(1)));
    }
}
