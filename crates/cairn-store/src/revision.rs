use serde::{Deserialize, Serialize};

/// A position in the store's history: `main` is the global revision a
/// command produced; `sub` orders the changes inside it (a txn changes
/// several keys at one revision).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }
}
