//! Identifiers of the platform's own entities, validated once at the edge.

use std::fmt;

/// An id was empty, too long, or had characters outside `[A-Za-z0-9_.:-]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {text:?}: use 1 to 64 characters from A-Z a-z 0-9 _ . : -")]
pub struct InvalidId {
    pub kind: &'static str,
    pub text: String,
}

fn valid(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates the platform's id text.
            pub fn parse(text: &str) -> Result<Self, InvalidId> {
                if valid(text) {
                    Ok(Self(text.to_string()))
                } else {
                    Err(InvalidId { kind: $kind, text: text.chars().take(80).collect() })
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A member's platform id.
    MemberId, "member"
);
id_type!(
    /// A group's platform id.
    GroupId, "group"
);
id_type!(
    /// A post's platform id.
    PostId, "post"
);
id_type!(
    /// A developer's platform id.
    DeveloperId, "developer"
);
id_type!(
    /// An app's id, assigned by consentry when the app is registered.
    AppId, "app"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn path_tricks_and_empties_are_refused() {
        for bad in ["", "../etc", "a b", "x/y", "é", &"a".repeat(65)] {
            assert!(MemberId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(GroupId::parse("g-1.x:2").map(|g| g.to_string()), Ok("g-1.x:2".to_string()));
    }

    proptest! {
        #[test]
        fn parse_accepts_exactly_the_documented_alphabet(text in "\\PC{0,70}") {
            let ok = MemberId::parse(&text).is_ok();
            prop_assert_eq!(ok, valid(&text));
        }
    }
}
