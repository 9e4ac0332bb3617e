//! The embedded back end: the journal in a sled database in a local directory (see `layout`).

use crate::backend::{Reads, Records, Stored, Table};
use crate::writer::Log;
use crate::{layout, Error, Hash, Head, Record, Result};

/// The writer's side: batches into the records tree, flushed by sled.
pub(crate) struct SledLog {
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
}

impl Log for SledLog {
    fn stored_head(&mut self) -> Result<(Head, u64)> {
        Ok((
            layout::read_head(&self.tree)?,
            layout::last_record_seq(&self.tree)?,
        ))
    }

    fn begin(&mut self) -> Result<Option<Head>> {
        // sled's directory lock makes this writer the only one.
        Ok(None)
    }

    fn stream_version(&mut self, stream: &str) -> Result<u64> {
        layout::stream_version(&self.tree, stream)
    }

    fn write(&mut self, records: &[Record], head: Head) -> Result<()> {
        let mut writes = sled::Batch::default();
        for record in records {
            writes.insert(&layout::record_key(record.seq), record.encode());
            writes.insert(
                layout::index_key(&record.stream, record.version),
                &record.seq.to_be_bytes(),
            );
        }
        writes.insert(layout::HEAD_KEY, &layout::encode_head(&head)[..]);
        self.tree.apply_batch(writes)?;
        Ok(())
    }

    fn abandon(&mut self) {}

    fn flush(&mut self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn read(&mut self, first: u64, last: u64) -> Result<Vec<Record>> {
        records(&self.tree, first, last).collect()
    }
}

/// Everyone else's side: reads straight from sled's trees.
pub(crate) struct SledReads {
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
    pub(crate) snapshots: sled::Tree,
    pub(crate) checkpoints: sled::Tree,
}

impl SledReads {
    fn table(&self, table: Table) -> &sled::Tree {
        match table {
            Table::Snapshots => &self.snapshots,
            Table::Checkpoints => &self.checkpoints,
        }
    }

    fn indexed_record(&self, entry: sled::Result<(sled::IVec, sled::IVec)>) -> Result<Record> {
        let (key, seq) = entry?;
        let seq = layout::decode_seq(&seq).ok_or_else(|| Error::Corrupt {
            seq: 0,
            reason: format!("stream index entry {key:?} is malformed"),
        })?;
        self.record(seq)?.ok_or(Error::Corrupt {
            seq,
            reason: "the stream index names a record that is absent".into(),
        })
    }
}

impl Reads for SledReads {
    fn head(&self) -> Result<Head> {
        layout::read_head(&self.tree)
    }

    fn stream_version(&self, stream: &str) -> Result<u64> {
        layout::stream_version(&self.tree, stream)
    }

    fn records(&self, first: u64, last: u64) -> Records<'_> {
        Box::new(records(&self.tree, first, last))
    }

    fn stored(&self, first: u64) -> Stored<'_> {
        let range = layout::record_key(first)..=layout::record_key(u64::MAX);
        Box::new(self.tree.range(range).map(|entry| {
            let (key, bytes) = entry?;
            let seq = layout::decode_record_key(&key).ok_or_else(|| Error::Corrupt {
                seq: 0,
                reason: format!("record key {key:?} is malformed"),
            })?;
            Ok((
                seq,
                Record::decode_stored(seq, &bytes).map_err(|e| e.to_string()),
            ))
        }))
    }

    fn stream(&self, stream: &str, from: u64, to: u64, back: bool) -> Records<'_> {
        let range = self
            .tree
            .range(layout::index_key(stream, from)..=layout::index_key(stream, to));
        if back {
            Box::new(range.rev().map(|entry| self.indexed_record(entry)))
        } else {
            Box::new(range.map(|entry| self.indexed_record(entry)))
        }
    }

    fn record(&self, seq: u64) -> Result<Option<Record>> {
        match self.tree.get(layout::record_key(seq))? {
            Some(bytes) => Ok(Some(Record::decode_stored(seq, &bytes)?)),
            None => Ok(None),
        }
    }

    fn anchor(&self, stream: &str, version: u64) -> Result<Option<Hash>> {
        let Some(seq) = self.tree.get(layout::index_key(stream, version))? else {
            return Ok(None);
        };
        let Some(seq) = layout::decode_seq(&seq) else {
            return Ok(None);
        };
        Ok(self.record(seq)?.map(|r| r.hash))
    }

    fn put(&self, table: Table, key: &str, value: Vec<u8>) -> Result<()> {
        self.table(table).insert(key.as_bytes(), value)?;
        Ok(())
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.table(table).get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn raw_tree(&self) -> Option<sled::Tree> {
        Some(self.tree.clone())
    }
}

/// The records `first..=last` of `tree`, decoded, in order.
fn records(
    tree: &sled::Tree,
    first: u64,
    last: u64,
) -> impl Iterator<Item = Result<Record>> + Send + '_ {
    let range = layout::record_key(first)..=layout::record_key(last);
    tree.range(range).map(|entry| {
        let (key, bytes) = entry?;
        let seq = layout::decode_record_key(&key).ok_or_else(|| Error::Corrupt {
            seq: 0,
            reason: format!("record key {key:?} is malformed"),
        })?;
        Record::decode_stored(seq, &bytes)
    })
}
