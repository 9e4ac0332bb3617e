//! What the journal reads from its back end (sled, or PostgreSQL) besides the writer's batches.
//!
//! [`crate::Journal`] answers every read through a [`Reads`], and appends through the single
//! writer and its [`crate::writer::Log`]; both back ends store the same records, chained the same
//! way, so everything above them (the service, replay, audit) is the same on either.

use std::time::Duration;

use crate::{Hash, Head, Lease, Record, Result};

/// The stored records, as an iterator over the back end's pages or cursor.
pub(crate) type Records<'a> = Box<dyn Iterator<Item = Result<Record>> + Send + 'a>;

/// Records as stored, from `verify`'s point of view: each with the sequence number it is stored
/// under and, when it does not decode, why, so that a break is named by its place.
pub(crate) type Stored<'a> =
    Box<dyn Iterator<Item = Result<(u64, std::result::Result<Record, String>)>> + Send + 'a>;

/// Which side table a saved value lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    /// Each stream's latest snapshot, by stream id, and the parts of split ones (see
    /// `Journal::save_snapshot_parts`).
    Snapshots,
    /// Whole-journal readers' checkpoints, by name.
    Checkpoints,
}

/// A back end's reads. Each blocks the calling thread until answered, like a sled read.
pub(crate) trait Reads: Send + Sync {
    /// The journal's last record (seq 0 when empty).
    fn head(&self) -> Result<Head>;
    /// The version of `stream`'s last record (0 when it has none).
    fn stream_version(&self, stream: &str) -> Result<u64>;
    /// The records `first..=last` that exist, in order.
    fn records(&self, first: u64, last: u64) -> Records<'_>;
    /// The records from `first` on as stored (see [`Stored`]).
    fn stored(&self, first: u64) -> Stored<'_> {
        Box::new(self.records(first, u64::MAX).map(|record| match record {
            Ok(record) => Ok((record.seq, Ok(record))),
            Err(crate::Error::Corrupt { seq, reason }) if seq != 0 => Ok((seq, Err(reason))),
            Err(error) => Err(error),
        }))
    }
    /// `stream`'s records with versions `from..=to`: oldest first, or newest first when `back`.
    fn stream(&self, stream: &str, from: u64, to: u64, back: bool) -> Records<'_>;
    /// The record at `seq`, if any.
    fn record(&self, seq: u64) -> Result<Option<Record>>;
    /// The hash of `stream`'s record at `version`, if it has one.
    fn anchor(&self, stream: &str, version: u64) -> Result<Option<Hash>>;
    /// Saves `value` under `key` in `table`, replacing what was there. Not flushed on its own.
    fn put(&self, table: Table, key: &str, value: Vec<u8>) -> Result<()>;
    /// The value saved under `key` in `table`, if any.
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>>;
    /// Saves every value of `entries` under its key in the snapshots' table, all or none, and
    /// only if the value under `guard` is still `expected` (none: no value); answers whether
    /// it did.
    fn put_snapshots_if(
        &self,
        guard: &str,
        expected: Option<&[u8]>,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<bool>;
    /// Saves `value` under `key` in the snapshots' table and removes what is saved under each
    /// of `drop`, in one write (all or none).
    fn put_snapshot_dropping(&self, key: &str, value: Vec<u8>, drop: &[String]) -> Result<()>;
    /// Removes what is saved under each of `keys` in the snapshots' table, in one write.
    fn drop_snapshots(&self, keys: &[String]) -> Result<()>;
    /// The value saved under each of `keys` in the snapshots' table, if any, in their order.
    fn get_snapshots(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter()
            .map(|key| self.get(Table::Snapshots, key))
            .collect()
    }
    /// The hashes of `stream`'s records at `versions`, where it has them, in their order.
    fn anchors(&self, stream: &str, versions: &[u64]) -> Result<Vec<Option<Hash>>> {
        versions
            .iter()
            .map(|&version| self.anchor(stream, version))
            .collect()
    }
    /// Makes everything written durable.
    fn flush(&self) -> Result<()>;
    /// Acquires or renews a lease (see [`crate::Journal::acquire_lease`]). By default, for a
    /// back end only one process can open, every lease is granted with token 1.
    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        Ok(Some(Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            token: 1,
            remaining: ttl,
        }))
    }
    /// Lets go of a lease (see [`crate::Journal::release_lease`]).
    fn release_lease(&self, _name: &str, _holder: &str, _token: u64) -> Result<bool> {
        Ok(true)
    }
    /// The secret stored under `name`, storing `candidate` first if there is none; `None` where
    /// one process has the journal.
    fn shared_secret(&self, _name: &str, _candidate: &str) -> Result<Option<String>> {
        Ok(None)
    }
    /// The leases not yet expired; none where leases are not stored.
    fn leases(&self) -> Result<Vec<Lease>> {
        Ok(Vec::new())
    }
    /// The sled tree holding records, for benches and tampering tests; `None` on PostgreSQL.
    fn raw_tree(&self) -> Option<sled::Tree> {
        None
    }
}
