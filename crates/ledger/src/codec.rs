//! The byte format of ledger entries: varints, the name dictionary and disclosure records.
//!
//! A frame is `[payload length: u32 LE][payload][chain hash: 32 bytes]`, where the chain hash
//! is BLAKE3(previous chain hash ‖ payload). Payloads are either a name (a dictionary entry
//! that gives an identity a small number) or a disclosure record, which refers to names by
//! number: member subjects are sorted and delta-coded, field sets are bitmasks, so a page of
//! members costs one or two bytes a disclosure.

use std::collections::HashMap;

use consentry_types::{
    AppId, DeveloperId, Disclosure, DisclosureRecord, FieldSet, GroupId, Instant, MemberId, Subject,
};

use crate::LedgerError;

pub(crate) const MAX_PAYLOAD: usize = 64 << 20;

/// A names entry: the identities first seen by the record that follows, numbered in order.
const KIND_NAMES: u8 = 1;
const KIND_DISCLOSURE: u8 = 2;
/// The first byte of every payload is one of these.
pub(crate) const PAYLOAD_KINDS: [u8; 2] = [KIND_NAMES, KIND_DISCLOSURE];

/// What a dictionary number names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum NameKind {
    App = 1,
    Developer = 2,
    Group = 3,
    Member = 4,
    Route = 5,
}

impl NameKind {
    fn from_byte(byte: u8) -> Option<NameKind> {
        match byte {
            1 => Some(NameKind::App),
            2 => Some(NameKind::Developer),
            3 => Some(NameKind::Group),
            4 => Some(NameKind::Member),
            5 => Some(NameKind::Route),
            _ => None,
        }
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads from a payload, failing cleanly on truncation or garbage.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn corrupt(what: &str) -> LedgerError {
    LedgerError::Corrupt(format!("malformed entry: {what}"))
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, at: 0 }
    }
    fn byte(&mut self) -> Result<u8, LedgerError> {
        let byte = *self.bytes.get(self.at).ok_or_else(|| corrupt("ends early"))?;
        self.at += 1;
        Ok(byte)
    }
    pub(crate) fn varint(&mut self) -> Result<u64, LedgerError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt("varint too long"))
    }
    fn bytes(&mut self, len: usize) -> Result<&'a [u8], LedgerError> {
        let end = self.at.checked_add(len).ok_or_else(|| corrupt("length overflow"))?;
        let slice = self.bytes.get(self.at..end).ok_or_else(|| corrupt("ends early"))?;
        self.at = end;
        Ok(slice)
    }
    fn text(&mut self) -> Result<String, LedgerError> {
        let len = usize::try_from(self.varint()?).map_err(|_| corrupt("length"))?;
        String::from_utf8(self.bytes(len)?.to_vec()).map_err(|_| corrupt("text is not UTF-8"))
    }
    fn done(&self) -> Result<(), LedgerError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(corrupt("trailing bytes"))
        }
    }
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Numbers for identities, assigned on first sight and recorded in the ledger itself.
#[derive(Debug, Default, Clone)]
pub(crate) struct Dictionary {
    apps: HashMap<String, u64>,
    developers: HashMap<String, u64>,
    groups: HashMap<String, u64>,
    members: HashMap<String, u64>,
    routes: HashMap<String, u64>,
    names: Vec<(NameKind, String)>,
}

impl Dictionary {
    fn map(&mut self, kind: NameKind) -> &mut HashMap<String, u64> {
        match kind {
            NameKind::App => &mut self.apps,
            NameKind::Developer => &mut self.developers,
            NameKind::Group => &mut self.groups,
            NameKind::Member => &mut self.members,
            NameKind::Route => &mut self.routes,
        }
    }

    /// The number for a name; a name seen for the first time is added to `new_names`, the
    /// payload of a names entry (see [`names_payload`]).
    pub(crate) fn number(&mut self, kind: NameKind, name: &str, new_names: &mut Vec<u8>) -> u64 {
        if let Some(number) = self.map(kind).get(name) {
            return *number;
        }
        let number = self.names.len() as u64;
        self.map(kind).insert(name.to_string(), number);
        self.names.push((kind, name.to_string()));
        if new_names.is_empty() {
            new_names.push(KIND_NAMES);
        }
        new_names.push(kind as u8);
        put_varint(new_names, name.len() as u64);
        new_names.extend_from_slice(name.as_bytes());
        number
    }

    /// The number of a member known so far, without learning it.
    pub(crate) fn member_number(&self, member: &str) -> Option<u64> {
        self.members.get(member).copied()
    }

    /// The name a number stands for, with its kind.
    pub(crate) fn entry(&self, number: u64) -> Option<(NameKind, &str)> {
        usize::try_from(number)
            .ok()
            .and_then(|n| self.names.get(n))
            .map(|(kind, name)| (*kind, name.as_str()))
    }

    fn name(&self, kind: NameKind, number: u64) -> Result<&str, LedgerError> {
        match usize::try_from(number).ok().and_then(|n| self.names.get(n)) {
            Some((k, name)) if *k == kind => Ok(name),
            _ => Err(corrupt("refers to an unknown name")),
        }
    }

    fn learn(&mut self, kind: NameKind, name: String) -> Result<(), LedgerError> {
        let number = self.names.len() as u64;
        if self.map(kind).insert(name.clone(), number).is_some() {
            return Err(corrupt("a name is numbered twice"));
        }
        self.names.push((kind, name));
        Ok(())
    }
}

/// A disclosure record as the ledger keeps it: the token is kept only as a token id (the
/// first 64 bits of its hash), the route and all identities as dictionary numbers.
pub(crate) fn encode_record(
    record: &DisclosureRecord,
    seq: u64,
    previous_at: Instant,
    dictionary: &mut Dictionary,
    new_names: &mut Vec<u8>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + record.disclosures.len() * 2);
    out.push(KIND_DISCLOSURE);
    put_varint(&mut out, seq);
    put_varint(&mut out, zigzag(record.at.millis().wrapping_sub(previous_at.millis())));
    put_varint(&mut out, record.request_id.len() as u64);
    out.extend_from_slice(record.request_id.as_bytes());
    let token_id = record.token_hash.get(..16).unwrap_or(&record.token_hash);
    put_varint(&mut out, token_id.len() as u64);
    out.extend_from_slice(token_id.as_bytes());
    put_varint(&mut out, dictionary.number(NameKind::App, record.app.as_str(), new_names));
    put_varint(&mut out, dictionary.number(NameKind::Developer, record.developer.as_str(), new_names));
    put_varint(&mut out, dictionary.number(NameKind::Group, record.group.as_str(), new_names));
    put_varint(&mut out, dictionary.number(NameKind::Route, &record.route, new_names));
    put_varint(&mut out, u64::from(record.policy_version));
    let mut group_fields = 0u16;
    let mut members: Vec<(u64, u16)> = Vec::with_capacity(record.disclosures.len());
    for disclosure in &record.disclosures {
        match &disclosure.subject {
            Subject::Group(_) => group_fields |= disclosure.fields.bits(),
            Subject::Member(member) => members.push((
                dictionary.number(NameKind::Member, member.as_str(), new_names),
                disclosure.fields.bits(),
            )),
        }
    }
    put_varint(&mut out, u64::from(group_fields));
    members.sort_unstable();
    put_varint(&mut out, members.len() as u64);
    // Each member: (delta from the previous number) << 1 | (field set differs from the
    // previous one), then the field set only when it differs.
    let (mut previous, mut previous_fields) = (0u64, u16::MAX);
    for (number, fields) in members {
        let changed = fields != previous_fields;
        put_varint(&mut out, ((number - previous) << 1) | u64::from(changed));
        if changed {
            put_varint(&mut out, u64::from(fields));
        }
        previous = number;
        previous_fields = fields;
    }
    out
}

/// A decoded entry.
pub(crate) enum Entry {
    Name,
    Disclosure { seq: u64, record: DisclosureRecord },
}

/// Decodes one payload, learning names and resolving numbers. `previous_at` is the instant
/// of the previous disclosure record (instants are delta-coded).
pub(crate) fn decode(
    payload: &[u8],
    dictionary: &mut Dictionary,
    previous_at: Instant,
) -> Result<Entry, LedgerError> {
    let mut cursor = Cursor::new(payload);
    match cursor.byte()? {
        KIND_NAMES => {
            while cursor.at < payload.len() {
                let kind = NameKind::from_byte(cursor.byte()?).ok_or_else(|| corrupt("unknown name kind"))?;
                let name = cursor.text()?;
                dictionary.learn(kind, name)?;
            }
            Ok(Entry::Name)
        }
        KIND_DISCLOSURE => {
            let seq = cursor.varint()?;
            let at = Instant::from_millis(previous_at.millis().wrapping_add(unzigzag(cursor.varint()?)));
            let request_id = cursor.text()?;
            let token_hash = cursor.text()?;
            let id_error = |e: consentry_types::InvalidId| LedgerError::Corrupt(e.to_string());
            let app = AppId::parse(dictionary.name(NameKind::App, cursor.varint()?)?).map_err(id_error)?;
            let developer = DeveloperId::parse(dictionary.name(NameKind::Developer, cursor.varint()?)?)
                .map_err(id_error)?;
            let group =
                GroupId::parse(dictionary.name(NameKind::Group, cursor.varint()?)?).map_err(id_error)?;
            let route = dictionary.name(NameKind::Route, cursor.varint()?)?.to_string();
            let policy_version = u32::try_from(cursor.varint()?).map_err(|_| corrupt("policy version"))?;
            let group_fields = u16::try_from(cursor.varint()?).map_err(|_| corrupt("field set"))?;
            let count = usize::try_from(cursor.varint()?).map_err(|_| corrupt("count"))?;
            if count > payload.len() {
                return Err(corrupt("count larger than the entry"));
            }
            let all_fields = consentry_types::Field::ALL.iter().fold(0u16, |bits, f| bits | f.bit());
            if group_fields & !all_fields != 0 {
                return Err(corrupt("unknown field"));
            }
            let mut disclosures = Vec::with_capacity(count + 1);
            if group_fields != 0 {
                disclosures.push(Disclosure {
                    subject: Subject::Group(group.clone()),
                    fields: FieldSet::from_bits(group_fields),
                });
            }
            let (mut number, mut fields) = (0u64, 0u16);
            for _ in 0..count {
                let word = cursor.varint()?;
                number = number.checked_add(word >> 1).ok_or_else(|| corrupt("member number"))?;
                if word & 1 == 1 {
                    fields = u16::try_from(cursor.varint()?).map_err(|_| corrupt("field set"))?;
                    if fields & !all_fields != 0 {
                        return Err(corrupt("unknown field"));
                    }
                }
                let member = MemberId::parse(dictionary.name(NameKind::Member, number)?).map_err(id_error)?;
                disclosures.push(Disclosure {
                    subject: Subject::Member(member),
                    fields: FieldSet::from_bits(fields),
                });
            }
            cursor.done()?;
            let record = DisclosureRecord {
                at,
                request_id,
                app,
                developer,
                group,
                token_hash,
                policy_version,
                route,
                disclosures,
            };
            Ok(Entry::Disclosure { seq, record })
        }
        _ => Err(corrupt("unknown entry kind")),
    }
}

/// A disclosure record with identities left as dictionary numbers, for fast scans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRecord {
    pub seq: u64,
    pub at: Instant,
    pub app: u64,
    pub developer: u64,
    pub group: u64,
    pub route: u64,
    pub policy_version: u32,
    /// Fields disclosed of the group itself (bitmask).
    pub group_fields: u16,
    /// (member number, field bitmask), in number order.
    pub members: Vec<(u64, u16)>,
}

/// Decodes a disclosure payload into `out` without resolving names; `Ok(false)` for a names
/// entry (which it learns).
pub(crate) fn decode_raw(
    payload: &[u8],
    dictionary: &mut Dictionary,
    previous_at: Instant,
    out: &mut RawRecord,
) -> Result<bool, LedgerError> {
    if payload.first() == Some(&KIND_NAMES) {
        decode(payload, dictionary, previous_at)?;
        return Ok(false);
    }
    let mut cursor = Cursor::new(payload);
    if cursor.byte()? != KIND_DISCLOSURE {
        return Err(corrupt("unknown entry kind"));
    }
    out.seq = cursor.varint()?;
    out.at = Instant::from_millis(previous_at.millis().wrapping_add(unzigzag(cursor.varint()?)));
    for _ in 0..2 {
        let len = usize::try_from(cursor.varint()?).map_err(|_| corrupt("length"))?;
        cursor.bytes(len)?;
    }
    out.app = cursor.varint()?;
    out.developer = cursor.varint()?;
    out.group = cursor.varint()?;
    out.route = cursor.varint()?;
    out.policy_version = u32::try_from(cursor.varint()?).map_err(|_| corrupt("policy version"))?;
    out.group_fields = u16::try_from(cursor.varint()?).map_err(|_| corrupt("field set"))?;
    let count = cursor.varint()?;
    if count > payload.len() as u64 {
        return Err(corrupt("count larger than the entry"));
    }
    out.members.clear();
    let (mut number, mut fields) = (0u64, 0u16);
    for _ in 0..count {
        let word = cursor.varint()?;
        number = number.checked_add(word >> 1).ok_or_else(|| corrupt("member number"))?;
        if word & 1 == 1 {
            fields = u16::try_from(cursor.varint()?).map_err(|_| corrupt("field set"))?;
        }
        out.members.push((number, fields));
    }
    cursor.done()?;
    Ok(true)
}

/// What verification needs of an entry, checked without building the record.
pub(crate) enum Inspected {
    Names,
    Disclosure { seq: u64, at: Instant, disclosures: u64 },
}

/// Checks an entry's structure (every number names an identity of the right kind, field sets
/// are known fields, nothing trails) as [`decode`] would, without allocating the record.
pub(crate) fn inspect(
    payload: &[u8],
    dictionary: &mut Dictionary,
    previous_at: Instant,
) -> Result<Inspected, LedgerError> {
    let mut cursor = Cursor::new(payload);
    if payload.first() == Some(&KIND_NAMES) {
        return decode(payload, dictionary, previous_at).map(|_| Inspected::Names);
    }
    if cursor.byte()? != KIND_DISCLOSURE {
        return Err(corrupt("unknown entry kind"));
    }
    let known =
        |dictionary: &Dictionary, kind: NameKind, number: u64| dictionary.name(kind, number).map(|_| ());
    let seq = cursor.varint()?;
    let at = Instant::from_millis(previous_at.millis().wrapping_add(unzigzag(cursor.varint()?)));
    for _ in 0..2 {
        let len = usize::try_from(cursor.varint()?).map_err(|_| corrupt("length"))?;
        std::str::from_utf8(cursor.bytes(len)?).map_err(|_| corrupt("text is not UTF-8"))?;
    }
    for kind in [NameKind::App, NameKind::Developer, NameKind::Group, NameKind::Route] {
        known(dictionary, kind, cursor.varint()?)?;
    }
    u32::try_from(cursor.varint()?).map_err(|_| corrupt("policy version"))?;
    let all_fields = consentry_types::Field::ALL.iter().fold(0u64, |bits, f| bits | u64::from(f.bit()));
    let group_fields = cursor.varint()?;
    if group_fields & !all_fields != 0 {
        return Err(corrupt("unknown field"));
    }
    let mut pairs = u64::from(group_fields.count_ones());
    let count = cursor.varint()?;
    if count > payload.len() as u64 {
        return Err(corrupt("count larger than the entry"));
    }
    let (mut number, mut fields) = (0u64, 0u64);
    for _ in 0..count {
        let word = cursor.varint()?;
        number = number.checked_add(word >> 1).ok_or_else(|| corrupt("member number"))?;
        if word & 1 == 1 {
            fields = cursor.varint()?;
            if fields & !all_fields != 0 {
                return Err(corrupt("unknown field"));
            }
        }
        pairs += u64::from(fields.count_ones());
        known(dictionary, NameKind::Member, number)?;
    }
    cursor.done()?;
    Ok(Inspected::Disclosure { seq, at, disclosures: pairs })
}

/// The chain hash of a frame.
pub(crate) fn chain(previous: &[u8; 32], payload: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(previous);
    hasher.update(payload);
    *hasher.finalize().as_bytes()
}

/// Appends a whole frame for `payload` to `out` and returns its chain hash.
pub(crate) fn frame(out: &mut Vec<u8>, previous: &[u8; 32], payload: &[u8]) -> [u8; 32] {
    let hash = chain(previous, payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&hash);
    hash
}

/// The Merkle root over a segment's chain hashes (RFC 6962 style: leaves and nodes are
/// domain-separated; an odd node is promoted).
pub(crate) fn merkle_root(hashes: &[[u8; 32]]) -> [u8; 32] {
    if hashes.is_empty() {
        return *blake3::hash(b"").as_bytes();
    }
    let mut level: Vec<[u8; 32]> = hashes
        .iter()
        .map(|h| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&[0]);
            hasher.update(h);
            *hasher.finalize().as_bytes()
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => {
                    let mut hasher = blake3::Hasher::new();
                    hasher.update(&[1]);
                    hasher.update(left);
                    hasher.update(right);
                    *hasher.finalize().as_bytes()
                }
                [single] => *single,
                _ => [0; 32],
            })
            .collect();
    }
    level.first().copied().unwrap_or([0; 32])
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lowercase hex only, so that a changed letter case is a changed file.
pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}
