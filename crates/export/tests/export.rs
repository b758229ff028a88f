//! The Parquet export holds every disclosure of the ledger exactly once.

use std::collections::HashMap;

use consentry_export::export_parquet;
use consentry_ledger::{Ledger, LedgerOptions};
use consentry_types::{
    AppId, DeveloperId, Disclosure, DisclosureRecord, Field, FieldSet, GroupId, Instant, MemberId, Subject,
};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::RowAccessor;

#[test]
fn every_disclosure_is_exported_once_partitioned_by_day() {
    let base = std::env::temp_dir().join(format!("consentry-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let ledger = Ledger::open(&base.join("ledger"), LedgerOptions { segment_bytes: 4_000 })
        .unwrap_or_else(|e| unreachable!("{e}"));
    let mut expected: HashMap<(i64, String, String), usize> = HashMap::new();
    let profile: FieldSet = [Field::MemberName, Field::MemberPicture].into_iter().collect();
    for i in 0..120i64 {
        let group = GroupId::parse(&format!("g{}", i % 4)).unwrap_or_else(|e| unreachable!("{e}"));
        let mut disclosures: Vec<Disclosure> = (0..(i % 7))
            .map(|m| Disclosure {
                subject: Subject::Member(
                    MemberId::parse(&format!("m{}", (i + m) % 50)).unwrap_or_else(|e| unreachable!("{e}")),
                ),
                fields: if m % 2 == 0 { profile } else { [Field::PostContent].into_iter().collect() },
            })
            .collect();
        disclosures.sort_by(|a, b| format!("{:?}", a.subject).cmp(&format!("{:?}", b.subject)));
        disclosures.dedup_by(|a, b| a.subject == b.subject);
        if i % 10 == 0 {
            disclosures.push(Disclosure {
                subject: Subject::Group(group.clone()),
                fields: [Field::GroupName].into_iter().collect(),
            });
        }
        for d in &disclosures {
            let subject = match &d.subject {
                Subject::Member(m) => m.to_string(),
                Subject::Group(g) => format!("group:{g}"),
            };
            for field in d.fields.iter() {
                *expected.entry((i + 1, subject.clone(), field.as_str().to_string())).or_default() += 1;
            }
        }
        let record = DisclosureRecord {
            // Six hours apart: the ledger spans several days.
            at: Instant::from_millis(1_572_912_000_000 + i * 6 * 3_600_000),
            request_id: format!("{i:016x}"),
            app: AppId::parse(&format!("app-{}", i % 3)).unwrap_or_else(|e| unreachable!("{e}")),
            developer: DeveloperId::parse("dev").unwrap_or_else(|e| unreachable!("{e}")),
            group,
            token_hash: "ab".repeat(32),
            policy_version: 2,
            route: "GET /v1/groups/{id}/members".into(),
            disclosures,
        };
        ledger.append(&record).unwrap_or_else(|e| unreachable!("{e}"));
    }
    drop(ledger);
    let summary =
        export_parquet(&base.join("ledger"), &base.join("export")).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(summary.records, 120);
    assert_eq!(summary.rows as usize, expected.values().sum::<usize>());
    assert_eq!(summary.files.len(), 30, "120 records six hours apart span 30 days");
    let mut found: HashMap<(i64, String, String), usize> = HashMap::new();
    for path in &summary.files {
        let day = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let reader =
            SerializedFileReader::new(std::fs::File::open(path).unwrap_or_else(|e| unreachable!("{e}")))
                .unwrap_or_else(|e| unreachable!("{e}"));
        for row in reader.get_row_iter(None).unwrap_or_else(|e| unreachable!("{e}")) {
            let row = row.unwrap_or_else(|e| unreachable!("{e}"));
            let instant = Instant::from_millis(row.get_timestamp_millis(0).unwrap_or_default());
            assert_eq!(
                format!("day={}", &instant.to_string()[..10]),
                day,
                "each row is in its day's partition"
            );
            let key = (
                row.get_long(1).unwrap_or_default(),
                row.get_string(9).cloned().unwrap_or_default(),
                row.get_string(10).cloned().unwrap_or_default(),
            );
            assert!(row.get_string(5).is_ok_and(|s| s.contains('@')));
            assert_eq!(row.get_int(6).ok(), Some(2));
            *found.entry(key).or_default() += 1;
        }
    }
    assert_eq!(found, expected, "every disclosure exactly once");
    let _ = std::fs::remove_dir_all(&base);
}
