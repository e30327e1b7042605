//! Revisions, and where a watch starts: the vocabulary of the event flow, below everything else.

/// A store revision: 0 for an empty store, then one more for every change. Revisions count one
/// store's changes; another store's mean nothing here (see [`crate::store_id::StoreId`]).
pub type Revision = i64;

/// Where a watch begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The watched keys' state now, then every later change.
    Snapshot,
    /// Every change from this revision on (which may lie in the future), and no snapshot: how
    /// a watch resumes after the last revision it delivered.
    From(Revision),
}
