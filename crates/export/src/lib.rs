//! Exports the disclosure ledger to Parquet: one row per (record, subject, field), in
//! Hive-style day partitions (`day=2019-11-04/part-00000.parquet`), so that DuckDB, Spark,
//! Trino or pyarrow can read it. Reads the ledger as a stream; memory is bounded by one
//! row group per open day. Rows carry the node whose ledger stream holds the record (`seq`
//! numbers records within a stream).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use consentry_ledger::{Entries, LedgerEntry};
use consentry_types::Subject;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::Type;

/// The columns of an exported disclosure.
pub const SCHEMA: &str = "message disclosure {
  required int64 instant (TIMESTAMP(MILLIS,true));
  required int64 seq;
  required binary request_id (STRING);
  required binary app (STRING);
  required binary developer (STRING);
  required binary installation (STRING);
  required int32 policy_version;
  required binary route (STRING);
  required binary resource (STRING);
  required binary subject (STRING);
  required binary field (STRING);
  required binary node (STRING);
}";

const ROW_GROUP: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Ledger(#[from] consentry_ledger::LedgerError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub records: u64,
    pub rows: u64,
    pub files: Vec<PathBuf>,
}

#[derive(Default)]
struct Columns {
    instant: Vec<i64>,
    seq: Vec<i64>,
    request_id: Vec<ByteArray>,
    app: Vec<ByteArray>,
    developer: Vec<ByteArray>,
    installation: Vec<ByteArray>,
    policy_version: Vec<i32>,
    route: Vec<ByteArray>,
    resource: Vec<ByteArray>,
    subject: Vec<ByteArray>,
    field: Vec<ByteArray>,
    /// The stream the record is in (its node; `seq` counts within it).
    node: Vec<ByteArray>,
}

impl Columns {
    fn len(&self) -> usize {
        self.seq.len()
    }
}

struct DayFile {
    writer: SerializedFileWriter<File>,
    columns: Columns,
}

fn text(value: &str) -> ByteArray {
    ByteArray::from(value.as_bytes().to_vec())
}

// `Field as usize` is its position in `Field::ALL`.
const _: () = assert!(consentry_types::Field::MemberPicture as usize == 6);

fn write_row_group(day: &mut DayFile) -> Result<(), ExportError> {
    if day.columns.len() == 0 {
        return Ok(());
    }
    let columns = std::mem::take(&mut day.columns);
    let mut group = day.writer.next_row_group()?;
    let mut index = 0;
    while let Some(mut column) = group.next_column()? {
        match index {
            0 => column.typed::<Int64Type>().write_batch(&columns.instant, None, None).map(|_| ())?,
            1 => column.typed::<Int64Type>().write_batch(&columns.seq, None, None).map(|_| ())?,
            6 => column.typed::<Int32Type>().write_batch(&columns.policy_version, None, None).map(|_| ())?,
            _ => {
                let values = match index {
                    2 => &columns.request_id,
                    3 => &columns.app,
                    4 => &columns.developer,
                    5 => &columns.installation,
                    7 => &columns.route,
                    8 => &columns.resource,
                    9 => &columns.subject,
                    11 => &columns.node,
                    _ => &columns.field,
                };
                column.typed::<ByteArrayType>().write_batch(values, None, None).map(|_| ())?
            }
        }
        column.close()?;
        index += 1;
    }
    group.close()?;
    Ok(())
}

fn schema() -> Result<Arc<Type>, ExportError> {
    Ok(Arc::new(parse_message_type(SCHEMA)?))
}

/// Exports every record of the ledger in `ledger_dir` into `out`.
pub fn export_parquet(ledger_dir: &Path, out: &Path) -> Result<ExportSummary, ExportError> {
    std::fs::create_dir_all(out).map_err(|source| ExportError::Io { path: out.to_path_buf(), source })?;
    let schema = schema()?;
    let properties = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let mut days: BTreeMap<String, DayFile> = BTreeMap::new();
    let mut parts: BTreeMap<String, usize> = BTreeMap::new();
    let mut summary = ExportSummary::default();
    let field_names: Vec<ByteArray> = consentry_types::Field::ALL.iter().map(|f| text(f.as_str())).collect();
    for entry in Entries::open(ledger_dir)? {
        let LedgerEntry { node, seq, record } = entry?;
        let node = text(node.as_ref().map_or("single-node", |n| n.as_str()));
        summary.records += 1;
        let instant = record.at.to_string();
        let day = instant.get(..10).unwrap_or("unknown").to_string();
        if !days.contains_key(&day) {
            // Records come in time order: a day that has ended can be closed.
            let ended: Vec<String> = days.keys().filter(|d| **d < day).cloned().collect();
            for old in ended {
                if let Some(mut file) = days.remove(&old) {
                    write_row_group(&mut file)?;
                    file.writer.close()?;
                }
            }
            let part = parts.entry(day.clone()).or_insert(0);
            let dir = out.join(format!("day={day}"));
            std::fs::create_dir_all(&dir).map_err(|source| ExportError::Io { path: dir.clone(), source })?;
            let path = dir.join(format!("part-{:05}.parquet", *part));
            *part += 1;
            let file =
                File::create(&path).map_err(|source| ExportError::Io { path: path.clone(), source })?;
            summary.files.push(path);
            let writer = SerializedFileWriter::new(file, schema.clone(), properties.clone())?;
            days.insert(day.clone(), DayFile { writer, columns: Columns::default() });
        }
        let Some(file) = days.get_mut(&day) else { continue };
        // One value per record, shared (reference-counted) by all its rows.
        let request_id = text(&record.request_id);
        let app = text(record.app.as_str());
        let developer = text(record.developer.as_str());
        let installation = text(&format!("{}@{}", record.app, record.group));
        let route = text(&record.route);
        let resource = text(record.route.replace("{id}", record.group.as_str()).trim_start_matches("GET "));
        for disclosure in &record.disclosures {
            let subject = match &disclosure.subject {
                Subject::Member(member) => text(member.as_str()),
                Subject::Group(group) => text(&format!("group:{group}")),
            };
            for field in disclosure.fields.iter() {
                let c = &mut file.columns;
                c.instant.push(record.at.millis());
                c.seq.push(seq as i64);
                c.node.push(node.clone());
                c.request_id.push(request_id.clone());
                c.app.push(app.clone());
                c.developer.push(developer.clone());
                c.installation.push(installation.clone());
                c.policy_version.push(record.policy_version as i32);
                c.route.push(route.clone());
                c.resource.push(resource.clone());
                c.subject.push(subject.clone());
                c.field
                    .push(field_names.get(field as usize).cloned().unwrap_or_else(|| text(field.as_str())));
                summary.rows += 1;
            }
        }
        if file.columns.len() >= ROW_GROUP {
            write_row_group(file)?;
        }
    }
    for (_, mut file) in days {
        write_row_group(&mut file)?;
        file.writer.close()?;
    }
    Ok(summary)
}
