//! Newtypes for the identifiers that travel between components.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
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

/// Ids that become parts of object keys and metric labels, checked where
/// they enter (flags, queue messages, ledger records): a task naming shard
/// `../../x` must never reach a key.
macro_rules! checked_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Letters, digits, `-`, `_` and `.` (not leading), 1 to 64 of them.
            pub fn parse(s: &str) -> crate::Result<Self> {
                let ok = !s.is_empty()
                    && s.len() <= 64
                    && !s.starts_with('.')
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
                if ok {
                    Ok(Self(s.to_string()))
                } else {
                    Err(crate::Error::invalid(
                        format!(concat!($what, " {:?}"), s),
                        "use 1 to 64 letters, digits, '-', '_' or '.' (not first)",
                    ))
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = crate::Error;
            fn try_from(s: String) -> crate::Result<Self> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_id!(
    /// A job: deterministic from its spec unless the user names it, so a
    /// re-submitted job resumes instead of starting over.
    JobId,
    "job id"
);
checked_id!(
    /// A shard within a job: zero-padded so keys sort in shard order.
    ShardId,
    "shard id"
);
string_id!(
    /// The handle of one delivery of a message; stale after the lease ends.
    Receipt
);
string_id!(
    /// The queue's id of a message, stable across deliveries.
    MessageId
);

impl ShardId {
    pub fn from_index(index: usize) -> Self {
        Self(format!("{index:06}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_a_prefix_are_refused_on_deserialization() {
        for bad in ["../../x", "a/b", "", ".hidden", "..", "x y", &"a".repeat(65)] {
            assert!(serde_json::from_str::<ShardId>(&format!("{bad:?}")).is_err(), "{bad:?}");
            assert!(JobId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(serde_json::from_str::<ShardId>("\"000012\"").unwrap(), ShardId::from_index(12));
        assert_eq!(JobId::parse("ctr-2026-11-23").unwrap().as_str(), "ctr-2026-11-23");
    }
}
