//! Fields: the named data of a resource an app may ask for, e.g. `member.name`.

use std::fmt;

/// Which kind of resource a field belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Group,
    Post,
    Member,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Group => "group",
            ResourceKind::Post => "post",
            ResourceKind::Member => "member",
        }
    }
}

/// One named datum of a resource. The list is closed: a field not listed here does not exist,
/// and a policy that names one fails validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    GroupName,
    GroupMemberCount,
    PostContent,
    PostCreatedTime,
    /// The author's app-scoped id and name; its subject is the author.
    PostAuthor,
    MemberName,
    MemberPicture,
}

/// A field name that consentry does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown field {0:?}")]
pub struct UnknownField(pub String);

impl Field {
    pub const ALL: [Field; 7] = [
        Field::GroupName,
        Field::GroupMemberCount,
        Field::PostContent,
        Field::PostCreatedTime,
        Field::PostAuthor,
        Field::MemberName,
        Field::MemberPicture,
    ];

    /// The qualified name, which is also the Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::GroupName => "group.name",
            Field::GroupMemberCount => "group.member_count",
            Field::PostContent => "post.content",
            Field::PostCreatedTime => "post.created_time",
            Field::PostAuthor => "post.author",
            Field::MemberName => "member.name",
            Field::MemberPicture => "member.picture",
        }
    }

    /// The name an app uses in `fields=` (without the resource prefix).
    pub fn short_name(self) -> &'static str {
        match self.as_str().split_once('.') {
            Some((_, short)) => short,
            None => self.as_str(),
        }
    }

    pub fn resource(self) -> ResourceKind {
        match self {
            Field::GroupName | Field::GroupMemberCount => ResourceKind::Group,
            Field::PostContent | Field::PostCreatedTime | Field::PostAuthor => ResourceKind::Post,
            Field::MemberName | Field::MemberPicture => ResourceKind::Member,
        }
    }

    /// Whether the datum belongs to a member (so a decision needs that member's facts).
    pub fn has_member_subject(self) -> bool {
        matches!(self, Field::PostAuthor | Field::MemberName | Field::MemberPicture)
    }

    /// Parses a qualified name such as `member.name`.
    pub fn parse(text: &str) -> Result<Field, UnknownField> {
        Field::ALL
            .into_iter()
            .find(|f| f.as_str() == text)
            .ok_or_else(|| UnknownField(text.chars().take(80).collect()))
    }

    /// Parses a short name (`name`) in the context of one resource kind.
    pub fn parse_short(kind: ResourceKind, text: &str) -> Result<Field, UnknownField> {
        Field::ALL
            .into_iter()
            .find(|f| f.resource() == kind && f.short_name() == text)
            .ok_or_else(|| UnknownField(text.chars().take(80).collect()))
    }

    /// The position of the field in a [`FieldSet`] bitmask.
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of fields as a bitmask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FieldSet(u16);

impl FieldSet {
    pub const EMPTY: FieldSet = FieldSet(0);

    pub fn from_bits(bits: u16) -> FieldSet {
        FieldSet(bits)
    }
    pub fn bits(self) -> u16 {
        self.0
    }
    pub fn insert(&mut self, field: Field) {
        self.0 |= field.bit();
    }
    pub fn contains(self, field: Field) -> bool {
        self.0 & field.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Field> {
        Field::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl FromIterator<Field> for FieldSet {
    fn from_iter<I: IntoIterator<Item = Field>>(iter: I) -> FieldSet {
        let mut set = FieldSet::EMPTY;
        for field in iter {
            set.insert(field);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_round_trips_through_both_names() {
        for field in Field::ALL {
            assert_eq!(Field::parse(field.as_str()), Ok(field));
            assert_eq!(Field::parse_short(field.resource(), field.short_name()), Ok(field));
        }
    }

    #[test]
    fn short_names_do_not_cross_resources() {
        assert!(Field::parse_short(ResourceKind::Group, "picture").is_err());
        assert_eq!(Field::parse("member.email"), Err(UnknownField("member.email".into())));
    }

    #[test]
    fn field_set_holds_exactly_what_was_inserted() {
        let set: FieldSet = [Field::MemberName, Field::PostAuthor].into_iter().collect();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![Field::PostAuthor, Field::MemberName]);
        assert!(!set.contains(Field::MemberPicture));
    }
}
