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

string_id!(
    /// A job: deterministic from its spec unless the user names it, so a
    /// re-submitted job resumes instead of starting over.
    JobId
);
string_id!(
    /// A shard within a job: zero-padded so keys sort in shard order.
    ShardId
);
string_id!(
    /// The handle of one delivery of a message; stale after the lease ends.
    Receipt
);
string_id!(
    /// The queue's id of a message, stable across deliveries.
    MessageId
);

impl JobId {
    /// Job ids become object keys and metric labels: keep them short and
    /// safe. Letters, digits, `-`, `_` and `.`, at most 64 characters.
    pub fn parse(s: &str) -> crate::Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(crate::Error::invalid(format!("job id {s:?}"), "use 1 to 64 letters, digits, '-', '_' or '.'"))
        }
    }
}

impl ShardId {
    pub fn from_index(index: usize) -> Self {
        Self(format!("{index:06}"))
    }
}
