//! `PersistenceId`: the stable name under which an actor's events and snapshots are stored.

use crate::sync::Arc;
use std::borrow::Borrow;
use std::fmt;

use crate::error::InvalidPersistenceId;

/// Longest persistence id, in bytes. The file snapshot store uses the (escaped) id as a
/// directory name, and 80 bytes escape to at most 240 characters, below the usual 255.
pub const MAX_ID_LEN: usize = 80;

/// The stable identity of a persistent actor's event stream, e.g. `"account-42"`.
///
/// It must stay the same across restarts, runtimes and machines: it is the key under which
/// the journal and the snapshot store find the actor's history. Cloning is one atomic
/// increment (the string is shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersistenceId(Arc<str>);

impl PersistenceId {
    /// Validates `id`: 1..=[`MAX_ID_LEN`] bytes of UTF-8 without control characters.
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidPersistenceId> {
        let id = id.as_ref();
        if id.is_empty() {
            return Err(InvalidPersistenceId::Empty);
        }
        if id.len() > MAX_ID_LEN {
            return Err(InvalidPersistenceId::TooLong { len: id.len() });
        }
        if id.chars().any(char::is_control) {
            return Err(InvalidPersistenceId::ControlCharacter(id.to_string()));
        }
        Ok(PersistenceId(Arc::from(id)))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string (for index keys that must not allocate per write).
    pub(crate) fn shared(&self) -> &Arc<str> {
        &self.0
    }

    /// Wraps a string that was validated before (read back from a checked record).
    pub(crate) fn from_shared(id: Arc<str>) -> Self {
        PersistenceId(id)
    }
}

impl fmt::Display for PersistenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PersistenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersistenceId({:?})", &*self.0)
    }
}

impl AsRef<str> for PersistenceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for PersistenceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for PersistenceId {
    type Error = InvalidPersistenceId;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        PersistenceId::new(s)
    }
}

impl TryFrom<String> for PersistenceId {
    type Error = InvalidPersistenceId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PersistenceId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_length_and_characters() {
        assert_eq!(PersistenceId::new("account-42").unwrap().as_str(), "account-42");
        assert_eq!(PersistenceId::new(""), Err(InvalidPersistenceId::Empty));
        assert_eq!(PersistenceId::new("x".repeat(81)), Err(InvalidPersistenceId::TooLong { len: 81 }));
        assert!(PersistenceId::new("x".repeat(80)).is_ok());
        assert_eq!(PersistenceId::new("a\nb"), Err(InvalidPersistenceId::ControlCharacter("a\nb".into())));
        assert!(PersistenceId::new("ünïcödé/ok").is_ok());
    }
}
