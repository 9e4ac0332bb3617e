//! Changes to a sled journal's stored records behind its back, as an attacker with the disk could
//! make them: for tests of `verify` and the audit tools, never for the service. Each change is
//! flushed before it returns. Pass the tree from [`crate::Journal::raw_tree`].

use crate::sled_store::block_holding;
use crate::{layout, Head};

/// The bytes stored in slot `seq`, if any.
pub fn stored(tree: &sled::Tree, seq: u64) -> Option<Vec<u8>> {
    let block = block_holding(tree, seq).ok()??;
    block.get(seq).map(<[u8]>::to_vec)
}

/// Stores `bytes` in slot `seq`, replacing what was there.
pub fn replace(tree: &sled::Tree, seq: u64, bytes: &[u8]) {
    put(tree, seq, Some(bytes));
}

/// Deletes what slot `seq` holds.
pub fn remove(tree: &sled::Tree, seq: u64) {
    put(tree, seq, None);
}

/// Overwrites the stored head.
pub fn replace_head(tree: &sled::Tree, head: &Head) {
    tree.insert(layout::HEAD_KEY, &layout::encode_head(head)[..])
        .unwrap();
    tree.flush().unwrap();
}

fn put(tree: &sled::Tree, seq: u64, bytes: Option<&[u8]>) {
    let block = block_holding(tree, seq).expect("a readable block");
    let (first, mut entries): (u64, Vec<(u64, Vec<u8>)>) = match &block {
        Some(block) => (
            block.first,
            block
                .entries
                .iter()
                .map(|(slot, range)| (*slot, block.value[range.clone()].to_vec()))
                .collect(),
        ),
        None => (seq, Vec::new()),
    };
    entries.retain(|(slot, _)| *slot != seq);
    if let Some(bytes) = bytes {
        entries.push((seq, bytes.to_vec()));
        entries.sort_by_key(|(slot, _)| *slot);
    }
    let key = layout::block_key(first);
    if entries.is_empty() {
        tree.remove(key).unwrap();
    } else {
        let borrowed: Vec<(u64, &[u8])> = entries.iter().map(|(slot, b)| (*slot, &b[..])).collect();
        tree.insert(key, layout::encode_block(first, &borrowed))
            .unwrap();
    }
    tree.flush().unwrap();
}
