//! Validated identifiers.
//!
//! containerd accepts an identifier when it is 1 to 76 characters of ASCII letters and digits,
//! with single `.`, `_` or `-` separators between runs of letters and digits. Namespaces follow
//! the same rule. Every id is checked once, when the newtype is built, so the rest of keel can
//! turn ids into paths and requests without checking again.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Maximum length of a containerd identifier, in bytes.
pub const MAX_IDENTIFIER_LEN: usize = 76;

/// Checks `value` against containerd's identifier rule and returns why it fails.
fn identifier_violation(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("must not be empty".to_owned());
    }
    if value.len() > MAX_IDENTIFIER_LEN {
        return Some(format!(
            "must be at most {MAX_IDENTIFIER_LEN} characters, got {}",
            value.len()
        ));
    }
    let mut previous_was_separator = true;
    for (index, character) in value.chars().enumerate() {
        let is_separator = matches!(character, '.' | '_' | '-');
        if !character.is_ascii_alphanumeric() && !is_separator {
            return Some(format!(
                "character {character:?} at position {index} is not an ASCII letter, digit, '.', '_' or '-'"
            ));
        }
        if is_separator && previous_was_separator {
            return Some(
                "must start with a letter or digit and have a letter or digit between separators"
                    .to_owned(),
            );
        }
        previous_was_separator = is_separator;
    }
    if previous_was_separator {
        return Some("must end with a letter or digit".to_owned());
    }
    None
}

macro_rules! identifier_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` against containerd's identifier rule.
            ///
            /// # Errors
            ///
            /// Returns an error of kind invalid argument that names the field and the rule.
            pub fn new(value: impl Into<String>) -> Result<Self, Error> {
                let value = value.into();
                match identifier_violation(&value) {
                    None => Ok(Self(value)),
                    Some(reason) => Err(Error::InvalidArgument {
                        field: $field,
                        value,
                        reason,
                    }),
                }
            }

            /// Returns the id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, formatter)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(value: &str) -> Result<Self, Error> {
                Self::new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(value: String) -> Result<Self, Error> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;

            fn try_from(value: &str) -> Result<Self, Error> {
                Self::new(value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier_newtype!(
    /// The id of a container, unique within its namespace.
    ContainerId,
    "container id"
);
identifier_newtype!(
    /// The id of an exec process, unique among the live processes of its container.
    ExecId,
    "exec id"
);
identifier_newtype!(
    /// A containerd namespace, which isolates containers, tasks and events of one user.
    Namespace,
    "namespace"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn identifiers_accepted() {
        for value in ["a", "abc", "a.b", "a_b-c.d", "A1", "0", &"x".repeat(76)] {
            assert!(ContainerId::new(value).is_ok(), "{value:?} should be valid");
        }
    }

    #[test]
    fn identifiers_rejected() {
        let long = "x".repeat(77);
        let cases = [
            "", ".", "..", "a/b", "../a", "a..b", "-a", "a-", "a b", "a\nb", "a\0b", "é", "ａ",
            "a:b", &long,
        ];
        for value in cases {
            let error = ContainerId::new(value).expect_err(value);
            assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{value:?}");
            assert!(error.to_string().contains("container id"), "{error}");
        }
    }

    #[test]
    fn namespace_error_names_field() {
        let error = Namespace::new("a/b").expect_err("slash is invalid");
        assert!(
            error.to_string().starts_with("invalid namespace"),
            "{error}"
        );
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// containerd's rule, written a second way: runs of letters and digits joined by single
    /// separators.
    fn follows_rule(value: &str) -> bool {
        let runs: Vec<&str> = value.split(['.', '_', '-']).collect();
        value.len() <= MAX_IDENTIFIER_LEN
            && runs
                .iter()
                .all(|run| !run.is_empty() && run.chars().all(|c| c.is_ascii_alphanumeric()))
    }

    proptest! {
        #[test]
        fn identifier_check_matches_rule(value in "\\PC{0,90}") {
            prop_assert_eq!(ContainerId::new(value.as_str()).is_ok(), follows_rule(&value));
        }

        #[test]
        fn near_identifiers_match_rule(value in "[a-zA-Z0-9._/ -]{0,80}") {
            prop_assert_eq!(ExecId::new(value.as_str()).is_ok(), follows_rule(&value));
        }
    }
}
