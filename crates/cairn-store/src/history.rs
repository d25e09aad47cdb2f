//! Values of superseded records, read back from the storage layer.
//!
//! Why: a key's history is kept for reads at old revisions and watch
//! replay, and its values were most of a member's memory (a 256-byte value
//! per revision against ~100 bytes of bookkeeping). Once a record is
//! superseded by a newer version of its key *and* the storage layer has
//! persisted it, the store may drop its value from memory
//! ([`crate::Store::drop_history_values`]); reads that need it ask the
//! [`HistoryValues`] the storage layer installed. Applying commands never
//! does: it reads only current values, so apply stays free of IO and the
//! state is the same whether or not values were dropped.

use std::fmt;
use std::sync::Arc;

use crate::revision::Revision;

/// Where dropped values are read back from: the storage layer's copy of
/// every retained record.
pub trait HistoryValues: Send + Sync {
    /// The values of the records at `revs`, in order (one record for a
    /// read, a chunk of them for a walk over the whole history, so a
    /// storage layer reads them in one go). An error names what failed.
    fn values(&self, revs: &[Revision]) -> Result<Vec<Vec<u8>>, String>;
}

/// The installed [`HistoryValues`], if any. Without one, values are never
/// dropped.
#[derive(Clone, Default)]
pub(crate) struct HistorySource(pub(crate) Option<Arc<dyn HistoryValues>>);

impl fmt::Debug for HistorySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "HistorySource(installed)"
        } else {
            "HistorySource(none)"
        })
    }
}
