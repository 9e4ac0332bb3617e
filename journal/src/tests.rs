//! Journal tests: appends, reads, snapshots and restarts against an in-memory model, and every
//! kind of tamper.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;

/// Where a test's journal lives: a sled directory, or a PostgreSQL database of its own.
enum Place {
    Sled(tempfile::TempDir),
    Postgres(String),
}

impl Place {
    /// Opens the journal here, again after a restart.
    fn open(&self) -> Journal {
        match self {
            Place::Sled(dir) => Journal::open(dir.path()).unwrap(),
            Place::Postgres(url) => Journal::connect(url, Config::default()).unwrap(),
        }
    }

    /// Overwrites the stored record at `record.seq` behind the journal's back, as an attacker
    /// with the storage's keys could.
    fn replace(&self, journal: &Journal, record: &Record) {
        match self {
            Place::Sled(_) => {
                let tree = journal.raw_tree().unwrap();
                tamper::replace(&tree, record.seq, &record.encode());
            }
            Place::Postgres(url) => {
                let hex_of =
                    |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
                let sql = format!(
                    "UPDATE flotilla_events SET payload = '\\x{}', hash = '\\x{}' WHERE seq = {}",
                    hex_of(&record.payload),
                    hex_of(&record.hash),
                    record.seq
                );
                testing::execute(url, &sql).unwrap();
            }
        }
    }
}

impl Place {
    /// Stores `value` as `stream`'s snapshot behind the journal's back.
    fn put_raw_snapshot(&self, journal: &Journal, stream: &str, value: &[u8]) {
        match self {
            Place::Sled(_) => journal
                .inner
                .reads
                .put(Table::Snapshots, stream, value.to_vec())
                .unwrap(),
            Place::Postgres(url) => {
                let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
                let sql = format!(
                    "INSERT INTO flotilla_snapshots (stream, value) VALUES ('{stream}', '\\x{hex}')
                     ON CONFLICT (stream) DO UPDATE SET value = EXCLUDED.value"
                );
                testing::execute(url, &sql).unwrap();
            }
        }
    }
}

/// The places every back-end-neutral test runs in: sled, and PostgreSQL where there is one.
fn places(test: &str) -> Vec<Place> {
    let mut places = vec![Place::Sled(tempfile::tempdir().unwrap())];
    places.extend(testing::fresh_database(test).map(Place::Postgres));
    places
}

fn event(n: u64) -> NewEvent {
    NewEvent::json("thing_happened", 1, 1_700_000_000_000 + n as i64, &n).unwrap()
}

fn payloads(records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .map(|r| r.decode::<u64>(1).unwrap())
        .collect()
}

fn stream(journal: &Journal, name: &str, from: u64) -> Vec<Record> {
    journal
        .read_stream(name, from)
        .collect::<Result<_>>()
        .unwrap()
}

#[test]
fn appends_get_consecutive_seqs_and_stream_versions() {
    for place in places("appends_get_consecutive_seqs_and_stream_versions") {
        let journal = place.open();
        let a = journal
            .append("a", ExpectedVersion::NoStream, vec![event(1), event(2)])
            .unwrap();
        let b = journal
            .append("b", ExpectedVersion::NoStream, vec![event(3)])
            .unwrap();
        let a2 = journal
            .append("a", ExpectedVersion::Exact(2), vec![event(4)])
            .unwrap();
        assert_eq!((a.first_seq, a.last_seq, a.version), (1, 2, 2));
        assert_eq!((b.first_seq, b.last_seq, b.version), (3, 3, 1));
        assert_eq!((a2.first_seq, a2.last_seq, a2.version), (4, 4, 3));
        assert_eq!(payloads(&stream(&journal, "a", 1)), vec![1, 2, 4]);
        assert_eq!(payloads(&stream(&journal, "a", 3)), vec![4]);
        let back: Vec<Record> = journal
            .read_stream_back("a", 2)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(payloads(&back), vec![2, 1]);
        assert_eq!(journal.stream_version("a").unwrap(), 3);
        assert_eq!(journal.stream_version("nobody").unwrap(), 0);
        let all: Vec<Record> = journal.read_all(2).collect::<Result<_>>().unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(journal.head().unwrap().hash, all[2].hash);
        assert_eq!(journal.verify().unwrap().seq, 4);
        assert_eq!(journal.appends(), 3);
    }
}

#[test]
fn a_wrong_expected_version_is_a_typed_conflict_and_writes_nothing() {
    for place in places("a_wrong_expected_version_is_a_typed_conflict_and_writes_nothing") {
        let journal = place.open();
        journal
            .append("a", ExpectedVersion::NoStream, vec![event(1)])
            .unwrap();
        let err = journal
            .append("a", ExpectedVersion::Exact(5), vec![event(2), event(3)])
            .unwrap_err();
        match err {
            Error::Conflict {
                stream,
                expected,
                actual,
            } => {
                assert_eq!(stream, "a");
                assert_eq!(expected, ExpectedVersion::Exact(5));
                assert_eq!(actual, 1);
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let err = journal
            .append("a", ExpectedVersion::NoStream, vec![event(2)])
            .unwrap_err();
        assert!(matches!(err, Error::Conflict { actual: 1, .. }));
        assert_eq!(journal.head().unwrap().seq, 1);
        assert_eq!(payloads(&stream(&journal, "a", 1)), vec![1]);
        assert_eq!(journal.appends(), 1, "refused appends are not counted");
    }
}

#[test]
fn invalid_stream_ids_are_refused_before_anything_is_written() {
    for place in places("invalid_stream_ids_are_refused_before_anything_is_written") {
        let journal = place.open();
        for bad in ["", "has space", "nul\0byte", &"x".repeat(256)] {
            let err = journal
                .append(bad, ExpectedVersion::Any, vec![event(1)])
                .unwrap_err();
            assert!(matches!(err, Error::InvalidStream(_)), "{bad:?}: {err:?}");
        }
        assert_eq!(journal.head().unwrap(), Head::EMPTY);
    }
}

#[test]
fn concurrent_appenders_to_one_stream_never_lose_or_duplicate_a_version() {
    for place in places("concurrent_appenders_to_one_stream_never_lose_or_duplicate_a_version") {
        let journal = place.open();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let journal = journal.clone();
                std::thread::spawn(move || {
                    let mut won = 0;
                    while won < 10 {
                        let version = journal.stream_version("shared").unwrap();
                        match journal.append(
                            "shared",
                            ExpectedVersion::Exact(version),
                            vec![event(t)],
                        ) {
                            Ok(_) => won += 1,
                            Err(Error::Conflict { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let records = stream(&journal, "shared", 1);
        assert_eq!(records.len(), 80);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.version, i as u64 + 1);
        }
        journal.verify().unwrap();
    }
}

/// The journal at `place`, its stream `a` holding events 1, 2 and 3.
fn three_in_a(place: &Place) -> Journal {
    let journal = place.open();
    journal
        .append(
            "a",
            ExpectedVersion::Any,
            vec![event(1), event(2), event(3)],
        )
        .unwrap();
    journal
}

#[test]
fn a_snapshot_is_loaded_only_while_it_matches_the_journal() {
    for place in places("a_snapshot_is_loaded_only_while_it_matches_the_journal") {
        let journal = three_in_a(&place);
        assert_eq!(journal.load_snapshot("a").unwrap(), None);
        journal.save_snapshot("a", 2, b"state@2").unwrap();
        let snapshot = journal.load_snapshot("a").unwrap().unwrap();
        assert_eq!(
            (snapshot.version, snapshot.state.as_slice()),
            (2, &b"state@2"[..])
        );
        assert_eq!(
            payloads(&stream(&journal, "a", snapshot.version + 1)),
            vec![3]
        );
        assert!(journal
            .save_snapshot("a", 9, b"ahead of the stream")
            .is_err());

        // A snapshot whose anchor record was replaced is ignored rather than trusted.
        let mut record = journal.record(2).unwrap().unwrap();
        record.payload = b"99".to_vec();
        record.hash = record.compute_hash();
        place.replace(&journal, &record);
        assert_eq!(journal.load_snapshot("a").unwrap(), None);
    }
}

#[test]
fn a_named_snapshot_is_kept_apart_dropped_on_demand_and_loaded_only_while_it_matches() {
    for place in places("a_named_snapshot_is_kept_apart") {
        let journal = three_in_a(&place);
        journal.save_snapshot("a", 3, b"own@3").unwrap();
        journal
            .save_named_snapshot("a", "day-1", 1, b"state@1", &[])
            .unwrap();
        journal
            .save_named_snapshot("a", "day-2", 2, b"state@2", &[])
            .unwrap();
        let load = |name: &str| {
            journal
                .load_named_snapshot("a", name)
                .unwrap()
                .map(|s| (s.version, s.state))
        };
        assert_eq!(load("day-1"), Some((1, b"state@1".to_vec())));
        assert_eq!(load("day-2"), Some((2, b"state@2".to_vec())));
        assert_eq!(load("day-3"), None);
        // Neither the stream's own snapshot nor another stream's.
        assert_eq!(journal.load_snapshot("a").unwrap().unwrap().state, b"own@3");
        assert_eq!(journal.load_named_snapshot("b", "day-1").unwrap(), None);
        assert!(journal
            .save_named_snapshot("a", "day-9", 9, b"ahead of the stream", &[])
            .is_err());

        // Saving one drops those it names, in the same write.
        journal
            .save_named_snapshot("a", "day-3", 3, b"state@3", &["day-1", "day-0"])
            .unwrap();
        assert_eq!(load("day-1"), None);
        assert_eq!(load("day-3"), Some((3, b"state@3".to_vec())));

        // Dropped on demand, the others and the stream's own snapshot left alone.
        journal
            .save_named_snapshot("a", "day-0", 1, b"state@1", &[])
            .unwrap();
        journal
            .drop_named_snapshots("a", &["day-0", "day-7"])
            .unwrap();
        assert_eq!(load("day-0"), None);
        assert_eq!(load("day-3"), Some((3, b"state@3".to_vec())));
        assert_eq!(journal.load_snapshot("a").unwrap().unwrap().state, b"own@3");

        // One whose anchor record was replaced is ignored rather than trusted.
        let mut record = journal.record(2).unwrap().unwrap();
        record.payload = b"99".to_vec();
        record.hash = record.compute_hash();
        place.replace(&journal, &record);
        assert_eq!(load("day-2"), None);
        assert_eq!(load("day-3"), Some((3, b"state@3".to_vec())));
    }
}

#[test]
fn a_snapshot_in_parts_is_loaded_only_with_every_part_at_the_version_its_head_names() {
    for place in places("a_snapshot_in_parts_is_loaded_only_with_every_part_at_the_version") {
        let journal = three_in_a(&place);
        assert_eq!(journal.stored_snapshot("a").unwrap(), None);
        let both = [(0, b"zero@1".to_vec()), (1, b"one@1".to_vec())];
        assert!(journal
            .save_snapshot_parts("a", 1, &both, b"head@1", None)
            .unwrap());
        let first = journal.stored_snapshot("a").unwrap().unwrap();
        assert_eq!((first.version, first.state.as_slice()), (1, &b"head@1"[..]));
        let one = [(1, b"one@3".to_vec())];
        assert!(journal
            .save_snapshot_parts("a", 3, &one, b"head@3", Some(&first))
            .unwrap());
        let head = journal.load_snapshot("a").unwrap().unwrap();
        assert_eq!((head.version, head.state.as_slice()), (3, &b"head@3"[..]));
        assert_eq!(
            journal.load_snapshot_parts("a", 3, &[1, 3]).unwrap(),
            Some(vec![b"zero@1".to_vec(), b"one@3".to_vec()])
        );
        // A part at another version than named, one after the head, one missing: none.
        assert_eq!(journal.load_snapshot_parts("a", 3, &[1, 1]).unwrap(), None);
        assert_eq!(journal.load_snapshot_parts("a", 2, &[1, 3]).unwrap(), None);
        assert_eq!(
            journal.load_snapshot_parts("a", 3, &[1, 3, 3]).unwrap(),
            None
        );

        // A save over a snapshot no longer stored (another writer saved since), or naming a
        // version the stream does not have, saves nothing.
        let zero = [(0, b"zero@2".to_vec())];
        assert!(!journal
            .save_snapshot_parts("a", 2, &zero, b"head@2", Some(&first))
            .unwrap());
        assert!(!journal
            .save_snapshot_parts("a", 2, &zero, b"head@2", None)
            .unwrap());
        let now = journal.stored_snapshot("a").unwrap().unwrap();
        assert!(journal
            .save_snapshot_parts("a", 9, &both, b"ahead of the stream", Some(&now))
            .is_err());
        assert_eq!(journal.stored_snapshot("a").unwrap(), Some(now.clone()));
        assert_eq!(
            journal.load_snapshot_parts("a", 3, &[1, 3]).unwrap(),
            Some(vec![b"zero@1".to_vec(), b"one@3".to_vec()])
        );

        assert!(journal.matches("a", &now).unwrap());

        // A part whose anchor record was replaced is ignored, as a whole snapshot is.
        let mut record = journal.record(1).unwrap().unwrap();
        record.payload = b"99".to_vec();
        record.hash = record.compute_hash();
        place.replace(&journal, &record);
        assert_eq!(journal.load_snapshot_parts("a", 3, &[1, 3]).unwrap(), None);

        // A stored snapshot that does not decode can still be saved over.
        journal
            .append("b", ExpectedVersion::Any, vec![event(1)])
            .unwrap();
        place.put_raw_snapshot(&journal, "b", b"not a snapshot");
        let garbage = journal.stored_snapshot("b").unwrap().unwrap();
        assert_eq!((garbage.version, garbage.state.len()), (0, 0));
        assert!(!journal.matches("b", &garbage).unwrap());
        let zero = [(0, b"zero".to_vec())];
        assert!(journal
            .save_snapshot_parts("b", 1, &zero, b"head", Some(&garbage))
            .unwrap());
        assert!(journal.load_snapshot_parts("b", 1, &[1]).unwrap().is_some());

        // A whole snapshot over one in parts removes the parts.
        assert!(journal.has_snapshot_parts("b").unwrap());
        journal
            .save_snapshot_over_parts("b", 1, b"whole", 1)
            .unwrap();
        assert_eq!(journal.load_snapshot_parts("b", 1, &[1]).unwrap(), None);
        assert!(!journal.has_snapshot_parts("b").unwrap());
        let whole = journal.load_snapshot("b").unwrap().unwrap();
        assert_eq!(whole.state, b"whole");
    }
}

#[test]
fn a_checkpoint_is_loaded_only_while_its_head_is_in_the_journal() {
    for place in places("a_checkpoint_is_loaded_only_while_its_head_is_in_the_journal") {
        let journal = place.open();
        assert_eq!(journal.load_checkpoint("index").unwrap(), None);
        journal
            .append("a", ExpectedVersion::Any, vec![event(1), event(2)])
            .unwrap();
        let head = journal.head().unwrap();
        journal.save_checkpoint("index", head, b"view@2").unwrap();
        assert_eq!(
            journal.load_checkpoint("index").unwrap(),
            Some((head, b"view@2".to_vec()))
        );
        // The record it is anchored to changed: it is ignored rather than trusted.
        let mut record = journal.record(2).unwrap().unwrap();
        record.payload = b"99".to_vec();
        record.hash = record.compute_hash();
        place.replace(&journal, &record);
        assert_eq!(journal.load_checkpoint("index").unwrap(), None);
    }
}

#[test]
fn records_and_snapshots_survive_a_restart() {
    for place in places("records_and_snapshots_survive_a_restart") {
        {
            let journal = place.open();
            journal
                .append("a", ExpectedVersion::Any, vec![event(1), event(2)])
                .unwrap();
            journal.save_snapshot("a", 1, b"s").unwrap();
        }
        let journal = place.open();
        assert_eq!(payloads(&stream(&journal, "a", 1)), vec![1, 2]);
        assert_eq!(journal.load_snapshot("a").unwrap().unwrap().version, 1);
        let next = journal
            .append("a", ExpectedVersion::Exact(2), vec![event(3)])
            .unwrap();
        assert_eq!(next.first_seq, 3);
        journal.verify().unwrap();
    }
}

// ---- tampering: each kind is detected and named by its sequence number ----

/// A journal of 10 records over two streams, and its tree for tampering.
fn journal_of_ten(dir: &Path) -> (Journal, sled::Tree) {
    let journal = Journal::open(dir).unwrap();
    for n in 1..=10 {
        let name = if n % 2 == 0 { "even" } else { "odd" };
        journal
            .append(name, ExpectedVersion::Any, vec![event(n)])
            .unwrap();
    }
    let tree = journal.raw_tree().unwrap();
    (journal, tree)
}

fn first_break(journal: &Journal) -> Break {
    match journal.verify() {
        Err(Error::BrokenChain(b)) => b,
        other => panic!("expected a break, got {other:?}"),
    }
}

#[test]
fn an_edited_record_is_detected_at_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, tree) = journal_of_ten(dir.path());
    let mut record = journal.record(4).unwrap().unwrap();
    record.payload = b"400".to_vec();
    tamper::replace(&tree, 4, &record.encode());
    assert_eq!(
        first_break(&journal),
        Break {
            seq: 4,
            kind: BreakKind::HashMismatch
        }
    );
}

#[test]
fn an_edited_record_with_a_recomputed_hash_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, tree) = journal_of_ten(dir.path());
    let mut record = journal.record(4).unwrap().unwrap();
    record.payload = b"400".to_vec();
    record.hash = record.compute_hash();
    tamper::replace(&tree, 4, &record.encode());
    assert_eq!(
        first_break(&journal),
        Break {
            seq: 5,
            kind: BreakKind::PreviousHashMismatch
        }
    );
}

#[test]
fn a_deleted_record_is_detected_at_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, tree) = journal_of_ten(dir.path());
    tamper::remove(&tree, 6);
    assert_eq!(
        first_break(&journal),
        Break {
            seq: 6,
            kind: BreakKind::Missing
        }
    );
}

#[test]
fn swapped_records_are_detected_at_the_first_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_journal, tree) = journal_of_ten(dir.path());
    let three = tamper::stored(&tree, 3).unwrap();
    let seven = tamper::stored(&tree, 7).unwrap();
    tamper::replace(&tree, 3, &seven);
    tamper::replace(&tree, 7, &three);
    let journal = _journal;
    assert_eq!(
        first_break(&journal),
        Break {
            seq: 3,
            kind: BreakKind::OutOfPlace { found: 7 }
        }
    );
}

#[test]
fn renumbered_records_are_detected() {
    // Move record 8 to key 7 with its seq rewritten and rehashed: the chain no longer links.
    let dir = tempfile::tempdir().unwrap();
    let (journal, tree) = journal_of_ten(dir.path());
    let mut eight = journal.record(8).unwrap().unwrap();
    eight.seq = 7;
    eight.hash = eight.compute_hash();
    tamper::replace(&tree, 7, &eight.encode());
    assert_eq!(
        first_break(&journal),
        Break {
            seq: 7,
            kind: BreakKind::PreviousHashMismatch
        }
    );
}

#[test]
fn a_truncated_tail_is_detected_through_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, tree) = journal_of_ten(dir.path());
    tamper::remove(&tree, 10);
    tamper::remove(&tree, 9);
    assert_eq!(
        first_break(&journal),
        Break {
            seq: 9,
            kind: BreakKind::Truncated { head_seq: 10 }
        }
    );
}

#[test]
fn a_journal_whose_tail_was_truncated_refuses_appends_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_journal, tree) = journal_of_ten(dir.path());
        tamper::remove(&tree, 10);
    }
    let journal = Journal::open(dir.path()).unwrap();
    let err = journal
        .append("odd", ExpectedVersion::Any, vec![event(11)])
        .unwrap_err();
    assert!(
        matches!(err, Error::BrokenChain(Break { seq: 10, .. })),
        "{err:?}"
    );
}

#[test]
fn an_undecodable_record_is_a_break_naming_its_seq_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, tree) = journal_of_ten(dir.path());
    tamper::replace(&tree, 2, b"\x01garbage");
    let b = first_break(&journal);
    assert_eq!(b.seq, 2);
    assert!(matches!(b.kind, BreakKind::Undecodable { .. }));
    let err = journal.read_all(1).nth(1).unwrap().unwrap_err();
    assert!(matches!(err, Error::Corrupt { seq: 2, .. }), "{err:?}");
}

#[test]
fn a_stream_version_gap_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, tree) = journal_of_ten(dir.path());
    // Record 5 is "odd" version 3; give it version 4, rechaining everything after it so that
    // only the version is wrong.
    let mut prev = journal.record(4).unwrap().unwrap().hash;
    for seq in 5..=10 {
        let mut r = journal.record(seq).unwrap().unwrap();
        if seq == 5 {
            r.version = 4;
        }
        r.prev_hash = prev;
        r.hash = r.compute_hash();
        prev = r.hash;
        tamper::replace(&tree, seq, &r.encode());
    }
    tamper::replace_head(
        &tree,
        &Head {
            seq: 10,
            hash: prev,
        },
    );
    let b = first_break(&journal);
    assert_eq!(b.seq, 5);
    assert!(matches!(
        b.kind,
        BreakKind::StreamVersionGap {
            expected: 3,
            found: 4,
            ..
        }
    ));
}

// ---- export and import ----

fn export_bytes(journal: &Journal) -> Vec<u8> {
    let mut out = Vec::new();
    export::export(journal, &mut out).unwrap();
    out
}

#[test]
fn an_export_verifies_on_its_own_and_imports_into_an_empty_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = journal_of_ten(dir.path());
    let bytes = export_bytes(&journal);
    assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 11);
    let head = export::verify_export(&bytes[..]).unwrap();
    assert_eq!(head, journal.head().unwrap());
    // Empty lines after the trailer (an editor's, a copy's) carry nothing and are let be; a
    // record after it is not.
    let padded = [&bytes[..], b"\n  \n"].concat();
    assert_eq!(export::verify_export(&padded[..]).unwrap(), head);
    let first = bytes.split(|b| *b == b'\n').next().unwrap();
    let appended = [&bytes[..], first, b"\n"].concat();
    assert!(matches!(
        export::verify_export(&appended[..]),
        Err(Error::BrokenChain(Break { seq: 11, .. }))
    ));

    for place in places("an_export_verifies_on_its_own_and_imports_into_an_empty_journal") {
        let imported = place.open();
        export::import(&imported, || Ok(&bytes[..])).unwrap();
        assert_eq!(imported.verify().unwrap(), head);
        assert_eq!(payloads(&stream(&imported, "odd", 1)), vec![1, 3, 5, 7, 9]);
        // It goes on from where the export ended.
        let next = imported
            .append("odd", ExpectedVersion::Exact(5), vec![event(11)])
            .unwrap();
        assert_eq!(next.first_seq, 11);
        imported.verify().unwrap();
        // And refuses a second import: the target is no longer empty.
        let err = export::import(&imported, || Ok(&bytes[..])).unwrap_err();
        assert!(matches!(err, Error::NotEmpty(11)));
    }
}

#[test]
fn an_import_stopped_part_way_says_so_and_the_same_import_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = journal_of_ten(dir.path());
    let bytes = export_bytes(&journal);
    let head = journal.head().unwrap();
    let records: Vec<Record> = export::records(&bytes[..]).map(Result::unwrap).collect();
    let other_dir = tempfile::tempdir().unwrap();
    let other = Journal::open(other_dir.path()).unwrap();
    other
        .append("odd", ExpectedVersion::Any, vec![event(99)])
        .unwrap();
    let other = export_bytes(&other);

    for place in places("an_import_stopped_part_way_says_so") {
        let imported = place.open();
        // As an import killed after its first batch left it.
        imported.start_import(head).unwrap();
        imported.append_sealed(records[..4].to_vec()).unwrap();
        assert_eq!(imported.unfinished_import().unwrap(), Some(head));
        assert!(
            matches!(
                imported.verify(),
                Err(Error::ImportUnfinished {
                    head: 4,
                    expected: 10
                })
            ),
            "{:?}",
            imported.verify()
        );
        // Another export is not its rest: the one that stopped is still owed.
        let refused = export::import(&imported, || Ok(&other[..])).unwrap_err();
        assert!(
            matches!(
                refused,
                Error::ImportUnfinished {
                    head: 4,
                    expected: 10
                }
            ),
            "{refused:?}"
        );
        // The same import goes on from where it stopped.
        assert_eq!(export::import(&imported, || Ok(&bytes[..])).unwrap(), head);
        assert_eq!(imported.unfinished_import().unwrap(), None);
        assert_eq!(imported.verify().unwrap(), head);
        assert_eq!(payloads(&stream(&imported, "odd", 1)), vec![1, 3, 5, 7, 9]);
        // And, whole, takes no import again.
        let again = export::import(&imported, || Ok(&bytes[..])).unwrap_err();
        assert!(matches!(again, Error::NotEmpty(10)), "{again:?}");
    }
}

#[test]
fn an_export_read_as_records_ends_at_its_trailer_or_says_it_was_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = journal_of_ten(dir.path());
    let bytes = export_bytes(&journal);
    let whole: Vec<u64> = export::records(&bytes[..])
        .map(|record| record.unwrap().seq)
        .collect();
    assert_eq!(whole, (1..=10).collect::<Vec<_>>());
    // Without its trailer (a dump whose service stopped sending, say): the records read, then
    // an error at the seq that would have come next. It used to end as if whole.
    let cut = &bytes[..bytes[..bytes.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap()
        + 1];
    let read: Vec<Result<Record>> = export::records(cut).collect();
    assert_eq!(read.len(), 11);
    assert!(read[..10].iter().all(Result::is_ok));
    assert!(
        matches!(&read[10], Err(Error::Corrupt { seq: 11, reason }) if reason.contains("cut short")),
        "{:?}",
        read[10]
    );
}

fn export_break(bytes: &[u8]) -> Break {
    match export::verify_export(bytes) {
        Err(Error::BrokenChain(b)) => b,
        other => panic!("expected a break, got {other:?}"),
    }
}

fn edit_lines(bytes: &[u8], edit: impl FnOnce(&mut Vec<String>)) -> Vec<u8> {
    let mut lines: Vec<String> = String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    edit(&mut lines);
    (lines.join("\n") + "\n").into_bytes()
}

#[test]
fn every_tamper_of_an_export_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = journal_of_ten(dir.path());
    let bytes = export_bytes(&journal);

    let edited = edit_lines(&bytes, |l| {
        l[3] = l[3].replace("\"payload\":4", "\"payload\":44");
    });
    assert_eq!(export_break(&edited).seq, 4);
    assert_eq!(export_break(&edited).kind, BreakKind::HashMismatch);

    let deleted = edit_lines(&bytes, |l| drop(l.remove(5)));
    assert_eq!(export_break(&deleted).seq, 6);

    let swapped = edit_lines(&bytes, |l| l.swap(2, 3));
    assert_eq!(export_break(&swapped).seq, 3);

    let truncated = edit_lines(&bytes, |l| l.truncate(8));
    assert_eq!(export_break(&truncated).seq, 9);

    let tail_cut = edit_lines(&bytes, |l| {
        l.remove(9);
    });
    assert_eq!(
        export_break(&tail_cut).kind,
        BreakKind::Truncated { head_seq: 10 }
    );

    let garbage = edit_lines(&bytes, |l| l[0] = "{not json".into());
    assert_eq!(export_break(&garbage).seq, 1);

    // A broken export imports nothing.
    let target = tempfile::tempdir().unwrap();
    let imported = Journal::open(target.path()).unwrap();
    let err = export::import(&imported, || Ok(&edited[..])).unwrap_err();
    assert!(matches!(err, Error::BrokenChain(_)));
    assert_eq!(imported.head().unwrap(), Head::EMPTY);
}

// ---- the model test ----

#[derive(Clone, Debug)]
enum Op {
    Append { stream: u8, events: u8, stale: bool },
    ReadStream { stream: u8, from: u64 },
    ReadAll { from: u64 },
    Snapshot { stream: u8 },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4u8, 0..4u8, any::<bool>()).prop_map(|(stream, events, stale)| Op::Append { stream, events, stale }),
        2 => (0..4u8, 0..6u64).prop_map(|(stream, from)| Op::ReadStream { stream, from }),
        1 => (0..20u64).prop_map(|from| Op::ReadAll { from }),
        1 => (0..4u8).prop_map(|stream| Op::Snapshot { stream }),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_journal_behaves_like_an_in_memory_model(ops in proptest::collection::vec(op(), 1..40)) {
        for place in places("the_journal_behaves_like_an_in_memory_model") {
        let mut journal = place.open();
        // The model: every record's payload in seq order, and each stream's seqs.
        let mut all: Vec<(String, u64)> = Vec::new();
        let mut streams: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut snapshots: BTreeMap<String, u64> = BTreeMap::new();
        let mut n = 0u64;
        for op in ops.clone() {
            match op {
                Op::Append { stream, events, stale } => {
                    let name = format!("s{stream}");
                    let version = streams.get(&name).map_or(0, |v| v.len() as u64);
                    let expected = if stale { ExpectedVersion::Exact(version + 1) } else { ExpectedVersion::Exact(version) };
                    let batch: Vec<NewEvent> = (0..events).map(|_| { n += 1; event(n) }).collect();
                    let values: Vec<u64> = (n + 1 - u64::from(events)..=n).collect();
                    let result = journal.append(&name, expected, batch);
                    if stale {
                        let is_conflict = matches!(result, Err(Error::Conflict { .. }));
                        prop_assert!(is_conflict);
                    } else {
                        let appended = result.unwrap();
                        prop_assert_eq!(appended.version, version + u64::from(events));
                        for value in values {
                            all.push((name.clone(), value));
                            streams.entry(name.clone()).or_default().push(value);
                        }
                    }
                }
                Op::ReadStream { stream, from } => {
                    let name = format!("s{stream}");
                    let want: Vec<u64> = streams.get(&name).map_or(vec![], |v| v.iter().skip(from.saturating_sub(1) as usize).copied().collect());
                    prop_assert_eq!(payloads(&stream_of(&journal, &name, from)), want);
                }
                Op::ReadAll { from } => {
                    let got: Vec<Record> = journal.read_all(from).collect::<Result<_>>().unwrap();
                    let want: Vec<u64> = all.iter().skip(from.saturating_sub(1) as usize).map(|(_, v)| *v).collect();
                    prop_assert_eq!(payloads(&got), want);
                    for r in &got {
                        prop_assert_eq!(&r.stream, &all[r.seq as usize - 1].0);
                    }
                }
                Op::Snapshot { stream } => {
                    let name = format!("s{stream}");
                    let version = streams.get(&name).map_or(0, |v| v.len() as u64);
                    if version > 0 {
                        journal.save_snapshot(&name, version, name.as_bytes()).unwrap();
                        snapshots.insert(name, version);
                    }
                }
                Op::Restart => {
                    drop(journal);
                    journal = place.open();
                }
            }
            prop_assert_eq!(journal.head().unwrap().seq, all.len() as u64);
        }
        for (name, version) in snapshots {
            let snapshot = journal.load_snapshot(&name).unwrap().unwrap();
            prop_assert_eq!(snapshot.version, version);
        }
        prop_assert_eq!(journal.verify().unwrap().seq, all.len() as u64);
        }
    }
}

fn stream_of(journal: &Journal, name: &str, from: u64) -> Vec<Record> {
    stream(journal, name, from)
}

#[test]
fn a_parallel_scan_hands_over_the_kept_records_in_order_across_chunks() {
    for place in places("a_parallel_scan_hands_over_the_kept_records_in_order_across_chunks") {
        let journal = place.open();
        // 40,000 records over three streams: more than two chunks of 16,384.
        for batch in 0..40u64 {
            let events = (0..1000).map(|i| event(batch * 1000 + i)).collect();
            let stream = format!("grp_{}", batch % 3);
            journal
                .append(&stream, ExpectedVersion::Any, events)
                .unwrap();
        }
        let everything: Vec<Record> = journal.read_all(1).map(|r| r.unwrap()).collect();
        for workers in [1, 2, 3] {
            for from in [0, 1, 16_384, 16_385, 39_999, 40_000, 40_001] {
                let keep = |r: &Record| r.stream != "grp_1" && !r.seq.is_multiple_of(7);
                let mut kept = Vec::new();
                let read = journal
                    .scan(from, u64::MAX, workers, keep, |r| -> Result<(), Error> {
                        kept.push(r);
                        Ok(())
                    })
                    .unwrap();
                let expected: Vec<&Record> = everything
                    .iter()
                    .filter(|r| r.seq >= from && keep(r))
                    .collect();
                let after = everything.iter().filter(|r| r.seq >= from).count();
                assert_eq!(read, after as u64, "from {from}");
                assert_eq!(kept.iter().collect::<Vec<_>>(), expected, "from {from}");
            }
        }
    }
}

/// A journal of 40,000 records on one stream: more than two chunks of a scan.
fn forty_thousand(place: &Place) -> Journal {
    let journal = place.open();
    for batch in 0..40u64 {
        let events = (0..1000).map(|i| event(batch * 1000 + i)).collect();
        journal
            .append("grp_a", ExpectedVersion::Any, events)
            .unwrap();
    }
    journal
}

#[test]
fn a_parallel_scan_stops_at_the_first_error_of_its_caller() {
    for place in places("a_parallel_scan_stops_at_the_first_error_of_its_caller") {
        let journal = forty_thousand(&place);
        let mut applied = 0;
        let outcome = journal.scan(
            1,
            u64::MAX,
            2,
            |_| true,
            |record| {
                applied += 1;
                if record.seq == 20_000 {
                    return Err(Error::InvalidEvent("stop here".into()));
                }
                Ok(())
            },
        );
        assert!(matches!(outcome, Err(Error::InvalidEvent(_))));
        assert_eq!(applied, 20_000);
    }
}

#[test]
fn a_parallel_scan_stops_at_its_upper_bound() {
    for place in places("a_parallel_scan_stops_at_its_upper_bound") {
        let journal = forty_thousand(&place);
        for (from, to, expected) in [(1, 20_000, 20_000), (16_384, 16_385, 2), (7, 6, 0)] {
            let mut seqs = Vec::new();
            let read = journal
                .scan(
                    from,
                    to,
                    2,
                    |_| true,
                    |r| -> Result<(), Error> {
                        seqs.push(r.seq);
                        Ok(())
                    },
                )
                .unwrap();
            assert_eq!(read, expected);
            assert_eq!(seqs, (from..=to).collect::<Vec<_>>());
        }
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

fn part(stream: &str, expected: ExpectedVersion, events: &[u64]) -> StreamAppend {
    StreamAppend {
        stream: stream.into(),
        expected,
        events: events.iter().map(|n| event(*n)).collect(),
    }
}

#[test]
fn an_append_across_streams_writes_every_part_consecutively_or_nothing() {
    for place in places("an_append_across_streams_writes_every_part_consecutively_or_nothing") {
        let journal = place.open();
        journal
            .append("grp_a", ExpectedVersion::Any, vec![event(1)])
            .unwrap();
        let appended = block_on(journal.append_all_async(vec![
            part("whk_b", ExpectedVersion::NoStream, &[2]),
            part("grp_a", ExpectedVersion::Exact(1), &[3, 4]),
            part("whk_b", ExpectedVersion::Exact(1), &[5]),
        ]))
        .unwrap();
        let seqs: Vec<_> = appended
            .iter()
            .map(|a| (a.first_seq, a.last_seq, a.version))
            .collect();
        assert_eq!(seqs, [(2, 2, 1), (3, 4, 3), (5, 5, 2)]);
        assert_eq!(payloads(&stream(&journal, "whk_b", 1)), [2, 5]);
        assert_eq!(payloads(&stream(&journal, "grp_a", 1)), [1, 3, 4]);

        // A conflict in the last part refuses the whole: nothing of the first is written.
        let refused = block_on(journal.append_all_async(vec![
            part("grp_a", ExpectedVersion::Exact(3), &[6]),
            part("whk_b", ExpectedVersion::Exact(1), &[7]),
        ]));
        assert!(matches!(
            refused,
            Err(Error::Conflict { ref stream, actual: 2, .. }) if stream == "whk_b"
        ));
        assert_eq!(journal.head().unwrap().seq, 5);
        assert_eq!(journal.stream_version("grp_a").unwrap(), 3);
        // ...and the writer's own bookkeeping was not moved by the refused part either.
        journal
            .append("grp_a", ExpectedVersion::Exact(3), vec![event(8)])
            .unwrap();
        assert_eq!(journal.verify().unwrap().seq, 6);
    }
}

/// The sequence numbers a follower was told.
type Told = std::sync::Arc<std::sync::Mutex<Vec<u64>>>;

/// A follower that keeps the sequence numbers it was told.
fn recording() -> (
    Told,
    impl FnMut(&[Record]) -> Result<(), String> + Send + 'static,
) {
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = told.clone();
    let follower = move |records: &[Record]| {
        keep.lock().unwrap().extend(records.iter().map(|r| r.seq));
        Ok(())
    };
    (told, follower)
}

#[test]
fn a_follower_is_told_what_was_written_after_its_start_then_every_append_in_order() {
    for place in
        places("a_follower_is_told_what_was_written_after_its_start_then_every_append_in_order")
    {
        let journal = place.open();
        for n in 1..=5 {
            journal
                .append("grp_a", ExpectedVersion::Any, vec![event(n)])
                .unwrap();
        }
        let (told, follower) = recording();
        assert_eq!(journal.follow(2, follower).unwrap(), 5);
        assert_eq!(*told.lock().unwrap(), [3, 4, 5]);

        // Concurrent appenders: each is answered only once its records were told, and the follower
        // sees one gapless sequence.
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let journal = journal.clone();
                let told = told.clone();
                std::thread::spawn(move || {
                    for n in 0..20 {
                        let stream = format!("grp_{t}");
                        let appended = journal
                            .append(&stream, ExpectedVersion::Any, vec![event(n), event(n)])
                            .unwrap();
                        let seen = told.lock().unwrap();
                        assert!(seen.contains(&appended.last_seq), "answered before told");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let seen = told.lock().unwrap().clone();
        assert_eq!(seen, (3..=5 + 8 * 20 * 2).collect::<Vec<u64>>());
    }
}

#[test]
fn a_follower_that_fails_stops_the_appends_until_another_is_set() {
    for place in places("a_follower_that_fails_stops_the_appends_until_another_is_set") {
        let journal = place.open();
        journal
            .follow(0, |_: &[Record]| panic!("a bug in a read model"))
            .unwrap();
        // Durable, so acknowledged; but the follower failed on it, so nothing more is taken.
        journal
            .append("grp_a", ExpectedVersion::Any, vec![event(1)])
            .unwrap();
        let refused = journal.append("grp_a", ExpectedVersion::Any, vec![event(2)]);
        assert!(matches!(refused, Err(Error::FollowerFailed)), "{refused:?}");

        // A follower that answers an error fails the same way.
        let failing = |_: &[Record]| Err("undecodable".to_owned());
        assert!(matches!(
            journal.follow(0, failing),
            Err(Error::FollowerFailed)
        ));
        let refused = journal.append("grp_a", ExpectedVersion::Any, vec![event(2)]);
        assert!(matches!(refused, Err(Error::FollowerFailed)), "{refused:?}");

        // A new follower from the start catches up, and appends go on.
        let (told, follower) = recording();
        journal.follow(0, follower).unwrap();
        journal
            .append("grp_a", ExpectedVersion::Any, vec![event(2)])
            .unwrap();
        assert_eq!(*told.lock().unwrap(), [1, 2]);
        assert_eq!(journal.verify().unwrap().seq, 2);
    }
}

// ---- PostgreSQL: what only a shared database has ----

#[test]
fn on_postgres_an_edited_row_is_detected_at_its_seq() {
    let Some(url) = testing::fresh_database("on_postgres_an_edited_row_is_detected_at_its_seq")
    else {
        return;
    };
    let place = Place::Postgres(url);
    let journal = place.open();
    for n in 1..=10 {
        journal
            .append("grp_a", ExpectedVersion::Any, vec![event(n)])
            .unwrap();
    }
    let mut record = journal.record(4).unwrap().unwrap();
    record.payload = b"400".to_vec();
    place.replace(&journal, &{
        let mut kept = record.clone();
        kept.hash = journal.record(4).unwrap().unwrap().hash;
        kept
    });
    assert_eq!(
        first_break(&journal),
        Break {
            seq: 4,
            kind: BreakKind::HashMismatch
        }
    );
    // With its hash recomputed, the next record's link breaks instead.
    record.hash = record.compute_hash();
    place.replace(&journal, &record);
    assert_eq!(
        first_break(&journal),
        Break {
            seq: 5,
            kind: BreakKind::PreviousHashMismatch
        }
    );
}

#[test]
fn on_postgres_two_writers_on_one_database_keep_one_gapless_chain() {
    let Some(url) =
        testing::fresh_database("on_postgres_two_writers_on_one_database_keep_one_gapless_chain")
    else {
        return;
    };
    // Two journals on one database, as two nodes would have, each with four appenders racing
    // for the same stream and appending to streams of their own.
    let nodes = [
        Journal::connect(&url, Config::default()).unwrap(),
        Journal::connect(&url, Config::default()).unwrap(),
    ];
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let journal = nodes[t % 2].clone();
            std::thread::spawn(move || {
                let mut won = 0;
                while won < 10 {
                    let version = journal.stream_version("grp_shared").unwrap();
                    let raced = journal.append(
                        "grp_shared",
                        ExpectedVersion::Exact(version),
                        vec![event(t as u64)],
                    );
                    match raced {
                        Ok(_) => won += 1,
                        Err(Error::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                    journal
                        .append(&format!("grp_{t}"), ExpectedVersion::Any, vec![event(0)])
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let shared = stream(&nodes[0], "grp_shared", 1);
    assert_eq!(
        shared.iter().map(|r| r.version).collect::<Vec<_>>(),
        (1..=80).collect::<Vec<_>>()
    );
    let all: Vec<Record> = nodes[1].read_all(1).collect::<Result<_>>().unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=160).collect::<Vec<_>>()
    );
    assert_eq!(nodes[0].head().unwrap(), nodes[1].head().unwrap());
    assert_eq!(nodes[0].verify().unwrap().seq, 160);
}

#[test]
fn on_postgres_a_unique_violation_is_the_conflict_error() {
    let Some(url) = testing::fresh_database("on_postgres_a_unique_violation_is_the_conflict_error")
    else {
        return;
    };
    let journal = Journal::connect(&url, Config::default()).unwrap();
    journal
        .append("grp_a,b", ExpectedVersion::Any, vec![event(1), event(2)])
        .unwrap();
    // A second row for a (stream, version), as a writer that skipped the lock would insert: the
    // database refuses it, and the refusal reads as the journal's conflict.
    let error = session(&url, |client| async move {
        let sql = "INSERT INTO flotilla_events SELECT seq + 10, stream, version, event_type, \
                   schema, timestamp_ms, payload, prev_hash, hash FROM flotilla_events \
                   WHERE seq = 2";
        client.batch_execute(sql).await.unwrap_err()
    })
    .join()
    .unwrap();
    match postgres::conflict(&error) {
        Some(Error::Conflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, "grp_a,b");
            assert_eq!((expected, actual), (ExpectedVersion::Exact(1), 2));
        }
        other => panic!("expected a conflict, got {other:?} from {error:?}"),
    }
}

#[test]
fn on_postgres_nodes_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let name = "on_postgres_nodes_starting_together_migrate_once_and_a_newer_schema_is_refused";
    let Some(url) = testing::fresh_database(name) else {
        return;
    };
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || Journal::connect(&url, Config::default()).map(drop))
        })
        .collect();
    for start in starts {
        start.join().unwrap().unwrap();
    }
    testing::execute(
        &url,
        "INSERT INTO flotilla_migrations (version) VALUES (1000)",
    )
    .unwrap();
    let refused = Journal::connect(&url, Config::default()).map(drop);
    assert!(
        matches!(&refused, Err(Error::Postgres(why)) if why.contains("version 1000")),
        "{refused:?}"
    );
}

#[test]
fn on_postgres_a_second_sole_service_is_refused_until_the_first_lets_go() {
    let name = "on_postgres_a_second_sole_service_is_refused_until_the_first_lets_go";
    let Some(url) = testing::fresh_database(name) else {
        return;
    };
    let sole = Config {
        sole_service: true,
        ..Config::default()
    };
    let first = Journal::connect(&url, sole.clone()).unwrap();
    let second = Journal::connect(&url, sole.clone()).map(drop);
    assert!(matches!(second, Err(Error::Held)), "{second:?}");
    // Readers (the audit tools) are not services: they open it alongside.
    let reader = Journal::connect(&url, Config::default()).unwrap();
    first
        .append("grp_a", ExpectedVersion::Any, vec![event(1)])
        .unwrap();
    assert_eq!(reader.head().unwrap(), first.head().unwrap());
    drop(first);
    let third = Journal::connect(&url, sole).unwrap();
    third
        .append("grp_a", ExpectedVersion::Exact(1), vec![event(2)])
        .unwrap();
}

#[test]
fn on_postgres_a_writer_builds_on_what_another_appended_since_its_last_batch() {
    let name = "on_postgres_a_writer_builds_on_what_another_appended_since_its_last_batch";
    let Some(url) = testing::fresh_database(name) else {
        return;
    };
    let (a, b) = (
        Journal::connect(&url, Config::default()).unwrap(),
        Journal::connect(&url, Config::default()).unwrap(),
    );
    // b appends first, so it has seen the stream at version 1 and the head at seq 1...
    b.append("grp_a", ExpectedVersion::NoStream, vec![event(1)])
        .unwrap();
    // ...then a moves both on...
    a.append("grp_a", ExpectedVersion::Exact(1), vec![event(2)])
        .unwrap();
    // ...and b must build on a's record, not on what it saw itself.
    let appended = b
        .append("grp_a", ExpectedVersion::Exact(2), vec![event(3)])
        .unwrap();
    assert_eq!((appended.first_seq, appended.version), (3, 3));
    let stale = b.append("grp_a", ExpectedVersion::Exact(2), vec![event(4)]);
    assert!(
        matches!(stale, Err(Error::Conflict { actual: 3, .. })),
        "{stale:?}"
    );
    assert_eq!(payloads(&stream(&a, "grp_a", 1)), [1, 2, 3]);
    assert_eq!(a.verify().unwrap().seq, 3);
}

#[test]
fn on_postgres_a_lost_connection_is_opened_again_and_loses_nothing() {
    let name = "on_postgres_a_lost_connection_is_opened_again_and_loses_nothing";
    let Some(url) = testing::fresh_database(name) else {
        return;
    };
    let journal = Journal::connect(&url, Config::default()).unwrap();
    journal
        .append("grp_a", ExpectedVersion::Any, vec![event(1)])
        .unwrap();
    // The server ends every other session on this database: the writer's and the readers'.
    testing::execute(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .unwrap();
    // The first use of a dead connection may fail with it; the next opens a new one.
    let append = || journal.append("grp_a", ExpectedVersion::Exact(1), vec![event(2)]);
    let appended = append().or_else(|_| append()).unwrap();
    assert_eq!(appended.first_seq, 2);
    let head = journal.head().or_else(|_| journal.head()).unwrap();
    assert_eq!(head.seq, 2);
    assert_eq!(payloads(&stream(&journal, "grp_a", 1)), [1, 2]);
    journal.verify().unwrap();
}

#[test]
fn on_postgres_a_tail_deleted_behind_the_journals_back_is_found_and_refuses_appends() {
    let name = "on_postgres_a_tail_deleted_behind_the_journals_back_is_found_and_refuses_appends";
    let Some(url) = testing::fresh_database(name) else {
        return;
    };
    let place = Place::Postgres(url.clone());
    let journal = place.open();
    for n in 1..=10 {
        journal
            .append("grp_a", ExpectedVersion::Any, vec![event(n)])
            .unwrap();
    }
    testing::execute(&url, "DELETE FROM flotilla_events WHERE seq > 8").unwrap();
    assert_eq!(
        first_break(&journal),
        Break {
            seq: 9,
            kind: BreakKind::Truncated { head_seq: 10 }
        }
    );
    drop(journal);
    let reopened = place.open();
    let refused = reopened.append("grp_a", ExpectedVersion::Any, vec![event(11)]);
    assert!(matches!(refused, Err(Error::BrokenChain(_))), "{refused:?}");
}

/// Runs `work` with a session of its own on the database at `url`, on a thread of its own (the
/// caller may be inside a runtime, where blocking on another is not allowed).
fn session<T, F, Fut>(url: &str, work: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            work(client).await
        })
    })
}

/// A session that opens a transaction, runs `sql` in it and holds it (and the row locks it
/// took) until told to end it; it then commits, or rolls back when told `false`. `locked` is
/// sent once `sql` ran.
fn hold(
    url: &str,
    sql: &str,
    locked: std::sync::mpsc::Sender<()>,
    end: std::sync::mpsc::Receiver<bool>,
) -> std::thread::JoinHandle<()> {
    let sql = sql.to_owned();
    session(url, move |client| async move {
        client.batch_execute("BEGIN").await.unwrap();
        client.batch_execute(&sql).await.unwrap();
        locked.send(()).unwrap();
        let commit = tokio::task::spawn_blocking(move || end.recv().unwrap())
            .await
            .unwrap();
        let end = if commit { "COMMIT" } else { "ROLLBACK" };
        client.batch_execute(end).await.unwrap();
    })
}

/// How many sessions on the database at `url` wait for a lock now.
fn waiting_for_locks(url: &str) -> i64 {
    session(url, |client| async move {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    })
    .join()
    .unwrap()
}

/// Waits until `count` sessions on the database at `url` wait for a lock, `threads` all still
/// running (each should be one of them). Polled, not timed, with a deadline.
fn until_waiting_for_locks<T>(url: &str, count: i64, threads: &[std::thread::JoinHandle<T>]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while waiting_for_locks(url) < count {
        assert!(
            !threads.iter().any(std::thread::JoinHandle::is_finished),
            "a session ended without waiting for a lock"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "{count} sessions were not seen waiting for a lock within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn on_postgres_a_whole_snapshot_over_parts_locks_the_head_before_any_part() {
    let name = "on_postgres_a_whole_snapshot_over_parts_locks_the_head_before_any_part";
    let Some(url) = testing::fresh_database(name) else {
        return;
    };
    let journal = Journal::connect(&url, Config::default()).unwrap();
    journal
        .append("a", ExpectedVersion::Any, vec![event(1)])
        .unwrap();
    let both = [(0, b"zero".to_vec()), (1, b"one".to_vec())];
    assert!(journal
        .save_snapshot_parts("a", 1, &both, b"head", None)
        .unwrap());
    // Another session holds the head's row, as a save in parts does before it writes parts.
    let (locked, was_locked) = std::sync::mpsc::channel();
    let (end, ending) = std::sync::mpsc::channel();
    let holder = hold(
        &url,
        "SELECT value FROM flotilla_snapshots WHERE stream = 'a' FOR UPDATE",
        locked,
        ending,
    );
    was_locked.recv().unwrap();
    let saver = {
        let journal = journal.clone();
        std::thread::spawn(move || journal.save_snapshot_over_parts("a", 1, b"whole", 2))
    };
    until_waiting_for_locks(&url, 1, std::slice::from_ref(&saver));
    // The whole save waits for the head holding no part's row, so a save in parts holding the
    // head can go on to write its parts: the two never wait on each other.
    let part_free = session(&url, |client| async move {
        client.batch_execute("BEGIN").await.unwrap();
        let free = client
            .batch_execute(
                "SELECT 1 FROM flotilla_snapshots WHERE stream = E'a\\x1f0' FOR UPDATE NOWAIT",
            )
            .await
            .is_ok();
        client.batch_execute("ROLLBACK").await.unwrap();
        free
    })
    .join()
    .unwrap();
    assert!(part_free, "the whole save locked a part before the head");
    end.send(false).unwrap();
    holder.join().unwrap();
    saver.join().unwrap().unwrap();
    assert!(!journal.has_snapshot_parts("a").unwrap());
    assert_eq!(journal.load_snapshot("a").unwrap().unwrap().state, b"whole");
}

#[test]
fn on_postgres_of_two_nodes_saving_over_one_snapshot_at_once_only_one_saves() {
    let name = "on_postgres_of_two_nodes_saving_over_one_snapshot_at_once_only_one_saves";
    let Some(url) = testing::fresh_database(name) else {
        return;
    };
    let nodes = [
        Journal::connect(&url, Config::default()).unwrap(),
        Journal::connect(&url, Config::default()).unwrap(),
    ];
    nodes[0]
        .append(
            "a",
            ExpectedVersion::Any,
            vec![event(1), event(2), event(3)],
        )
        .unwrap();
    let both = [(0, b"zero@1".to_vec()), (1, b"one@1".to_vec())];
    assert!(nodes[0]
        .save_snapshot_parts("a", 1, &both, b"head@1", None)
        .unwrap());
    let first = nodes[0].stored_snapshot("a").unwrap().unwrap();

    // Both nodes save over the snapshot they read, while a third session holds its row: each
    // waits for the lock, so neither can have seen the other's write when it began.
    let race = |holder_sql: &str, commit: bool| {
        let (locked, was_locked) = std::sync::mpsc::channel();
        let (end, ending) = std::sync::mpsc::channel();
        let holder = hold(&url, holder_sql, locked, ending);
        was_locked.recv().unwrap();
        let savers: Vec<_> = (0..2u64)
            .map(|n| {
                let (journal, first) = (nodes[n as usize].clone(), first.clone());
                std::thread::spawn(move || {
                    let part = [(n as usize, format!("part {n} by node {n}").into_bytes())];
                    let head = format!("head@{} by node {n}", n + 2).into_bytes();
                    let saved = journal
                        .save_snapshot_parts("a", n + 2, &part, &head, Some(&first))
                        .unwrap();
                    (saved, head)
                })
            })
            .collect();
        until_waiting_for_locks(&url, 2, &savers);
        end.send(commit).unwrap();
        holder.join().unwrap();
        savers
            .into_iter()
            .map(|saver| saver.join().unwrap())
            .collect::<Vec<_>>()
    };

    // A third writer saved over it first (the holder's update, committed): both see its value
    // once they get the lock, and neither saves.
    let outcomes = race(
        "UPDATE flotilla_snapshots SET value = '\\x00' WHERE stream = 'a'",
        true,
    );
    assert!(outcomes.iter().all(|(saved, _)| !saved), "{outcomes:?}");
    assert_eq!(
        nodes[0].stored_snapshot("a").unwrap().unwrap().value,
        b"\x00"
    );
    testing::execute(&url, "DELETE FROM flotilla_snapshots").unwrap();
    assert!(nodes[0]
        .save_snapshot_parts("a", 1, &both, b"head@1", None)
        .unwrap());
    assert_eq!(nodes[0].stored_snapshot("a").unwrap().unwrap(), first);

    // The holder only looked (rolled back): the first node to get the lock saves, and the
    // other, then seeing that node's head, saves nothing, so the stored parts are all of one
    // node's save.
    let outcomes = race(
        "SELECT value FROM flotilla_snapshots WHERE stream = 'a' FOR UPDATE",
        false,
    );
    let winners: Vec<&Vec<u8>> = outcomes
        .iter()
        .filter(|(saved, _)| *saved)
        .map(|(_, head)| head)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let stored = nodes[1].stored_snapshot("a").unwrap().unwrap();
    assert_eq!(&stored.state, winners[0]);
    let winner = outcomes.iter().position(|(saved, _)| *saved).unwrap();
    let mut versions = [1, 1];
    versions[winner] = winner as u64 + 2;
    let mut expected = vec![b"zero@1".to_vec(), b"one@1".to_vec()];
    expected[winner] = format!("part {winner} by node {winner}").into_bytes();
    assert_eq!(
        nodes[1]
            .load_snapshot_parts("a", stored.version, &versions)
            .unwrap(),
        Some(expected)
    );
}

// ---- leases, fences and catching up with other writers ----

/// Moves `name`'s expiry into the past on the database's clock, as time passing would.
fn expire(url: &str, name: &str) {
    testing::execute(
        url,
        &format!(
            "UPDATE flotilla_leases SET expires_at = clock_timestamp() - interval '1 second' \
             WHERE name = '{name}'"
        ),
    )
    .unwrap();
}

fn fenced(journal: &Journal, stream: &str, lease: &Lease) -> Result<Vec<Appended>> {
    let fence = Fence {
        lease: lease.name.clone(),
        holder: lease.holder.clone(),
        token: lease.token,
    };
    block_on(
        journal
            .append_all_fenced_async(vec![part(stream, ExpectedVersion::Any, &[1])], Some(fence)),
    )
}

#[test]
fn on_postgres_a_lease_is_renewed_by_its_holder_and_taken_over_only_once_expired() {
    let name = "on_postgres_a_lease_is_renewed_by_its_holder_and_taken_over_only_once_expired";
    let Some(url) = testing::fresh_database(name) else {
        return;
    };
    let journal = Journal::connect(&url, Config::default()).unwrap();
    let ttl = std::time::Duration::from_secs(10);
    // Given node-a holds shard-7...
    let a = journal
        .acquire_lease("shard-7", "node-a", ttl)
        .unwrap()
        .unwrap();
    assert_eq!(a.token, 1);
    assert!(a.remaining <= ttl && a.remaining > ttl / 2, "{a:?}");
    // ...when it renews, the token stays; when node-b asks, it is refused.
    let renewed = journal
        .acquire_lease("shard-7", "node-a", ttl)
        .unwrap()
        .unwrap();
    assert_eq!(renewed.token, 1);
    assert_eq!(
        journal.acquire_lease("shard-7", "node-b", ttl).unwrap(),
        None
    );
    assert!(fenced(&journal, "grp_1", &a).is_ok());

    // When it expires (by the database's clock), node-b takes it over with the next token...
    expire(&url, "shard-7");
    let b = journal
        .acquire_lease("shard-7", "node-b", ttl)
        .unwrap()
        .unwrap();
    assert_eq!(b.token, 2);
    // ...node-a can neither renew it nor append under its old token, and nothing of the
    // refused append is written.
    assert_eq!(
        journal.acquire_lease("shard-7", "node-a", ttl).unwrap(),
        None
    );
    let refused = fenced(&journal, "grp_1", &a);
    assert!(
        matches!(&refused, Err(Error::Fenced { lease, token: 1 }) if lease == "shard-7"),
        "{refused:?}"
    );
    assert_eq!(journal.stream_version("grp_1").unwrap(), 1);
    assert!(fenced(&journal, "grp_1", &b).is_ok());

    // A holder that comes back after its own lease expired gets a new token too: anything
    // still in flight under the old one is refused.
    expire(&url, "shard-7");
    let back = journal
        .acquire_lease("shard-7", "node-b", ttl)
        .unwrap()
        .unwrap();
    assert_eq!(back.token, 3);
    assert!(matches!(
        fenced(&journal, "grp_1", &b),
        Err(Error::Fenced { .. })
    ));

    // A release lets the next holder in at once.
    assert!(journal.release_lease("shard-7", "node-b", 3).unwrap());
    assert!(journal.leases().unwrap().is_empty());
    let c = journal
        .acquire_lease("shard-7", "node-c", ttl)
        .unwrap()
        .unwrap();
    assert_eq!(c.token, 4);
    let leases = journal.leases().unwrap();
    let names: Vec<_> = leases
        .iter()
        .map(|l| (&l.name[..], &l.holder[..], l.token))
        .collect();
    assert_eq!(names, [("shard-7", "node-c", 4)]);
    journal.verify().unwrap();
}

#[test]
fn on_sled_the_one_process_holds_every_lease() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let ttl = std::time::Duration::from_secs(10);
    let lease = journal
        .acquire_lease("shard-1", "node-a", ttl)
        .unwrap()
        .unwrap();
    assert_eq!(lease.token, 1);
    assert!(fenced(&journal, "grp_1", &lease).is_ok());
}

#[test]
fn on_postgres_a_journal_catches_up_with_what_another_node_appended() {
    let name = "on_postgres_a_journal_catches_up_with_what_another_node_appended";
    let Some(url) = testing::fresh_database(name) else {
        return;
    };
    let (a, b) = (
        Journal::connect(&url, Config::default()).unwrap(),
        Journal::connect(&url, Config::default()).unwrap(),
    );
    let (told, follower) = recording();
    a.follow(0, follower).unwrap();
    a.append("grp_a", ExpectedVersion::Any, vec![event(1)])
        .unwrap();
    b.append("grp_b", ExpectedVersion::Any, vec![event(2), event(3)])
        .unwrap();
    assert_eq!(*told.lock().unwrap(), [1], "not told before it looks");
    assert_eq!(a.catch_up().unwrap().seq, 3);
    assert_eq!(*told.lock().unwrap(), [1, 2, 3]);
    assert_eq!(a.catch_up().unwrap().seq, 3);
    // Another node's records are also told before a's next batch's own.
    b.append("grp_b", ExpectedVersion::Any, vec![event(4)])
        .unwrap();
    a.append("grp_a", ExpectedVersion::Exact(1), vec![event(5)])
        .unwrap();
    assert_eq!(*told.lock().unwrap(), [1, 2, 3, 4, 5]);
}

// Layout 2: blocks and index runs, and the migration from format 1.

/// Appends `count` events from `next` on over streams `a`, `b` (every third) and, halfway, one
/// batch of 300 to `c`, one append at a time; answers each stream's payloads in version order.
fn mixed_journal(journal: &Journal, next: &mut u64, count: u64) -> BTreeMap<String, Vec<u64>> {
    let mut model: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..count {
        if i == count / 2 {
            let batch: Vec<NewEvent> = (0..300).map(|k| event(*next + k)).collect();
            journal.append("c", ExpectedVersion::Any, batch).unwrap();
            model
                .entry("c".into())
                .or_default()
                .extend(*next..*next + 300);
            *next += 300;
        }
        let name = if i % 3 == 2 { "b" } else { "a" };
        journal
            .append(name, ExpectedVersion::Any, vec![event(*next)])
            .unwrap();
        model.entry(name.into()).or_default().push(*next);
        *next += 1;
    }
    model
}

/// Checks every way of reading `journal`'s streams against `model`.
fn assert_streams(journal: &Journal, model: &BTreeMap<String, Vec<u64>>) {
    for (name, values) in model {
        let len = values.len() as u64;
        assert_eq!(journal.stream_version(name).unwrap(), len, "{name}");
        for from in [1, 2, 255, 256, 257, 300, len, len + 1] {
            let want: Vec<u64> = values.iter().skip(from as usize - 1).copied().collect();
            assert_eq!(
                payloads(&stream(journal, name, from)),
                want,
                "{name} from {from}"
            );
        }
        for to in [1, 255, 256, 257, len, len + 5] {
            let back: Vec<Record> = journal
                .read_stream_back(name, to)
                .collect::<Result<_>>()
                .unwrap();
            let want: Vec<u64> = values.iter().take(to as usize).rev().copied().collect();
            assert_eq!(payloads(&back), want, "{name} back from {to}");
        }
        // A snapshot is anchored through the index.
        journal.save_snapshot(name, len, b"state").unwrap();
        assert_eq!(journal.load_snapshot(name).unwrap().unwrap().version, len);
    }
    assert_eq!(stream(journal, "nothing", 1).len(), 0);
    assert_eq!(journal.stream_version("nothing").unwrap(), 0);
}

#[test]
fn index_runs_the_writer_holds_are_read_alike_across_rounds_forgetting_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A round of the write-ahead file every dozen batches or so: each rewind puts the held runs
    // into sled.
    let config = Config {
        wal_capacity: 4 << 10,
        ..Config::default()
    };
    let mut model: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut next = 1;
    let mut append = |journal: &Journal, streams: &[String]| {
        let parts = streams
            .iter()
            .map(|name| {
                model.entry(name.clone()).or_default().push(next);
                next += 1;
                StreamAppend {
                    stream: name.clone(),
                    expected: ExpectedVersion::Any,
                    events: vec![event(next - 1)],
                }
            })
            .collect();
        block_on(journal.append_all_async(parts)).unwrap();
    };
    {
        let journal = Journal::open_with(dir.path(), config.clone()).unwrap();
        let hot = vec!["hot".to_owned()];
        for _ in 0..150 {
            append(&journal, &hot);
        }
        // More streams than the writer keeps at hand: it forgets them, held ones put into sled.
        let many: Vec<String> = (0..sled_store::RUN_CACHE + 64)
            .map(|i| format!("s{i}"))
            .collect();
        for streams in many.chunks(128) {
            append(&journal, streams);
        }
        for _ in 0..20 {
            append(&journal, &hot);
            append(&journal, &many[..3]);
        }
        assert_streams(&journal, &model);
    }
    let journal = Journal::open_with(dir.path(), config).unwrap();
    assert_streams(&journal, &model);
    journal.verify().unwrap();
}

#[test]
fn streams_read_alike_across_index_runs_and_blocks_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut next = 1;
    let model = {
        let journal = Journal::open(dir.path()).unwrap();
        let model = mixed_journal(&journal, &mut next, 700);
        assert_streams(&journal, &model);
        model
    };
    let journal = Journal::open(dir.path()).unwrap();
    assert_streams(&journal, &model);
    // The writer goes on from the stored runs.
    journal
        .append(
            "a",
            ExpectedVersion::Exact(model["a"].len() as u64),
            vec![event(next)],
        )
        .unwrap();
    assert_eq!(
        journal.stream_version("a").unwrap(),
        model["a"].len() as u64 + 1
    );
    assert_eq!(journal.verify().unwrap().seq, next);
    let all: Vec<Record> = journal.read_all(1).collect::<Result<_>>().unwrap();
    assert_eq!(payloads(&all), (1..=next).collect::<Vec<_>>());
    assert_eq!(journal.record(333).unwrap().unwrap().seq, 333);
    assert_eq!(journal.record(next + 1).unwrap(), None);
}

#[test]
fn a_batch_of_a_thousand_records_is_a_few_dozen_sled_keys() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let batch: Vec<NewEvent> = (1..=1000).map(event).collect();
    journal
        .append("s", ExpectedVersion::NoStream, batch)
        .unwrap();
    let tree = journal.raw_tree().unwrap();
    // Format 1 kept 2,001 keys: one per record, one per index entry, and the head.
    let keys = tree.len();
    assert!(keys <= 40, "{keys} keys");
    assert_eq!(
        payloads(&stream(&journal, "s", 990)),
        (990..=1000).collect::<Vec<_>>()
    );
}

/// Stores `records` and `head` in a new sled directory as format 1 did: a key per record and per
/// index entry, and no format key.
fn write_format_1(dir: &Path, records: &[Record], head: Head) {
    let db = raw_sled(dir);
    let tree = db.open_tree(layout::TREE_V1).unwrap();
    for r in records {
        tree.insert(layout::record_key(r.seq), r.encode()).unwrap();
        tree.insert(
            layout::index_key(&r.stream, r.version),
            &r.seq.to_be_bytes()[..],
        )
        .unwrap();
    }
    tree.insert(layout::HEAD_KEY, &layout::encode_head(&head)[..])
        .unwrap();
    db.flush().unwrap();
}

/// The number of `tree`'s keys that start with `prefix`.
fn keys_with(tree: &sled::Tree, prefix: &[u8]) -> usize {
    tree.scan_prefix(prefix).count()
}

#[test]
fn a_format_1_journal_is_migrated_when_opened_even_after_an_interrupted_start() {
    let source = tempfile::tempdir().unwrap();
    let mut next = 1;
    let (records, head, model) = {
        let journal = Journal::open(source.path()).unwrap();
        let model = mixed_journal(&journal, &mut next, 400);
        let records: Vec<Record> = journal.read_all(1).collect::<Result<_>>().unwrap();
        (records, journal.head().unwrap(), model)
    };
    for interrupted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_format_1(dir.path(), &records, head);
        if interrupted {
            // A first start that moved one batch of records, then stopped.
            let db = raw_sled(dir.path());
            let old = db.open_tree(layout::TREE_V1).unwrap();
            let tree = db.open_tree(layout::TREE).unwrap();
            assert!(sled_store::migrate_step(&old, &tree, 100).unwrap());
            assert!(sled_store::migrate_step(&old, &tree, 100).unwrap());
            db.flush().unwrap();
            assert_eq!(tree.get(layout::FORMAT_KEY).unwrap(), None);
            assert!(tree.get(layout::MIGRATION_KEY).unwrap().is_some());
        }
        let journal = Journal::open(dir.path()).unwrap();
        let tree = journal.raw_tree().unwrap();
        assert_eq!(keys_with(&tree, b"r"), 0);
        assert_eq!(keys_with(&tree, b"s"), 0);
        assert_eq!(tree.get(layout::MIGRATION_KEY).unwrap(), None);
        assert_eq!(
            tree.get(layout::FORMAT_KEY).unwrap().unwrap(),
            &[layout::FORMAT]
        );
        assert_eq!(journal.verify().unwrap(), head);
        let all: Vec<Record> = journal.read_all(1).collect::<Result<_>>().unwrap();
        assert_eq!(all, records);
        assert_streams(&journal, &model);
        let b = model["b"].len() as u64;
        journal
            .append("b", ExpectedVersion::Exact(b), vec![event(next)])
            .unwrap();
        assert_eq!(journal.verify().unwrap().seq, head.seq + 1);
        drop((tree, journal));
        // What is left of format 1 is a head alone, which a build from before layout 2 would
        // read as a truncated journal and refuse to append to.
        let db = raw_sled(dir.path());
        let old = db.open_tree(layout::TREE_V1).unwrap();
        assert_eq!(old.len(), 2);
        assert_eq!(layout::read_head(&old).unwrap().seq, 1);
    }
}

/// sled itself in `path`, once the threads of a journal just dropped there have let go of its
/// lock (as `Journal::open` waits for them).
fn raw_sled(path: &Path) -> sled::Db {
    open_db(path, 1 << 24).unwrap()
}

/// The records and head of [`journal_of_ten`], to store as format 1 did.
fn ten_records() -> (Vec<Record>, Head) {
    let source = tempfile::tempdir().unwrap();
    let (journal, _) = journal_of_ten(source.path());
    let records = journal.read_all(1).collect::<Result<_>>().unwrap();
    (records, journal.head().unwrap())
}

#[test]
fn format_1_tree_is_guarded_at_every_open_and_records_written_there_later_are_not_dropped() {
    let (records, head) = ten_records();
    let dir = tempfile::tempdir().unwrap();
    write_format_1(dir.path(), &records, head);
    drop(Journal::open(dir.path()).unwrap());
    // A start stopped after the migration, before letting format 1's tree go: it goes at the
    // next open.
    {
        let db = raw_sled(dir.path());
        assert!(db.drop_tree(layout::TREE_V1).unwrap());
        db.flush().unwrap();
    }
    write_format_1(dir.path(), &records, head);
    let journal = Journal::open(dir.path()).unwrap();
    assert_eq!(journal.verify().unwrap(), head);
    drop(journal);
    {
        let db = raw_sled(dir.path());
        assert_eq!(db.open_tree(layout::TREE_V1).unwrap().len(), 2);
    }
    // A start stopped after letting format 1's tree go, before writing its guard.
    {
        let db = raw_sled(dir.path());
        assert!(db.drop_tree(layout::TREE_V1).unwrap());
        db.flush().unwrap();
    }
    drop(Journal::open(dir.path()).unwrap());
    {
        let db = raw_sled(dir.path());
        let guard = db.open_tree(layout::TREE_V1).unwrap();
        assert_eq!(layout::read_head(&guard).unwrap().seq, 1);
        // An older build could not append there; records put there all the same (by hand, or
        // by a build that lost the guard) are not taken for what was migrated.
        guard
            .insert(layout::record_key(1), records[0].encode())
            .unwrap();
        guard
            .insert(
                layout::HEAD_KEY,
                &layout::encode_head(&Head {
                    seq: 1,
                    hash: records[0].hash,
                })[..],
            )
            .unwrap();
        db.flush().unwrap();
    }
    let Err(error) = Journal::open(dir.path()) else {
        panic!("records written after the migration were dropped");
    };
    assert!(error.to_string().contains("older build"), "{error}");
    let db = raw_sled(dir.path());
    assert_eq!(db.open_tree(layout::TREE_V1).unwrap().len(), 3);
}

#[test]
fn a_break_in_a_format_1_journal_is_still_named_after_the_migration() {
    let (records, head) = ten_records();
    let dir = tempfile::tempdir().unwrap();
    let kept: Vec<Record> = records.iter().filter(|r| r.seq != 6).cloned().collect();
    write_format_1(dir.path(), &kept, head);
    // The index entry of the missing record was written by the journal, not by this fixture.
    {
        let db = raw_sled(dir.path());
        let tree = db.open_tree(layout::TREE_V1).unwrap();
        tree.insert(layout::index_key("even", 3), &6u64.to_be_bytes()[..])
            .unwrap();
        // Record 10, "even" version 5 and the last of its stream, no longer decodes.
        tree.insert(layout::record_key(10), &b"\x01garbage"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let migrated = Journal::open(dir.path()).unwrap();
    assert_eq!(
        first_break(&migrated),
        Break {
            seq: 6,
            kind: BreakKind::Missing
        }
    );
    // The index still names both records: reading the stream fails there rather than skipping
    // them, and the stream's version is not set back to let a fifth version be written twice.
    assert_eq!(migrated.stream_version("even").unwrap(), 5);
    let err = migrated.read_stream("even", 1).nth(2).unwrap().unwrap_err();
    assert!(matches!(err, Error::Corrupt { seq: 6, .. }), "{err:?}");
    let err = migrated.read_stream("even", 5).next().unwrap().unwrap_err();
    assert!(matches!(err, Error::Corrupt { seq: 10, .. }), "{err:?}");
    let tree = migrated.raw_tree().unwrap();
    assert_eq!(keys_with(&tree, b"s"), 0);
}

#[test]
fn a_last_block_that_does_not_decode_still_opens_and_is_named_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_journal, tree) = journal_of_ten(dir.path());
        let (last, _) = tree.scan_prefix(b"b").next_back().unwrap().unwrap();
        tree.insert(last, &b"\xff"[..]).unwrap();
        tree.flush().unwrap();
    }
    let journal = Journal::open(dir.path()).unwrap();
    let b = first_break(&journal);
    assert_eq!(b.seq, 10);
    assert!(matches!(b.kind, BreakKind::Undecodable { .. }), "{b:?}");
}

#[test]
fn a_journal_in_a_newer_layout_is_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_journal, tree) = journal_of_ten(dir.path());
        tree.insert(layout::FORMAT_KEY, &[layout::FORMAT + 1])
            .unwrap();
        tree.flush().unwrap();
    }
    let Err(error) = Journal::open(dir.path()) else {
        panic!("a newer layout was opened");
    };
    assert!(error.to_string().contains("format"), "{error}");
}

// The write-ahead file: what a crash leaves only there.

/// Copies directory `from` into `to`, files and subdirectories.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A journal in `dir` closed cleanly after 100 mixed appends, a copy of it in `crashed`, and then
/// 200 more appends to the original, still open: its write-ahead file holds them all, as it
/// would if the process were killed now. Answers the open journal and every stream's payloads.
fn journal_ahead_of_its_copy(dir: &Path, crashed: &Path) -> (Journal, BTreeMap<String, Vec<u64>>) {
    let mut next = 1;
    let mut model = mixed_journal(&Journal::open(dir).unwrap(), &mut next, 100);
    copy_dir(dir, crashed);
    let journal = Journal::open(dir).unwrap();
    for (name, values) in mixed_journal(&journal, &mut next, 200) {
        model.entry(name).or_default().extend(values);
    }
    (journal, model)
}

#[test]
fn batches_a_crash_left_only_in_the_write_ahead_file_are_replayed_whole() {
    let (dir, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (journal, model) = journal_ahead_of_its_copy(dir.path(), crashed.path());
    let head = journal.head().unwrap();
    let records: Vec<Record> = journal.read_all(1).collect::<Result<_>>().unwrap();
    // The crashed copy: sled as the clean close left it and then holding the first two batches
    // past its head whole and part of the third (sled recovers a prefix of its inserts, the
    // head inserted last), the file as the live journal has it now.
    std::fs::copy(
        dir.path().join(wal::FILE_NAME),
        crashed.path().join(wal::FILE_NAME),
    )
    .unwrap();
    drop(journal);
    let (_, entries) = wal::Wal::open(crashed.path(), wal::CAPACITY).unwrap();
    assert!(entries.len() > 100, "{} batches in the file", entries.len());
    {
        let db = raw_sled(crashed.path());
        let tree = db.open_tree(layout::TREE).unwrap();
        assert_eq!(layout::read_head(&tree).unwrap().seq, entries[0].after);
        let third = &entries[2].writes;
        let kept = entries[..2]
            .iter()
            .flat_map(|entry| &entry.writes)
            .chain(&third[..third.len() - 1]);
        for (key, value) in kept {
            tree.insert(key, value.clone()).unwrap();
        }
        assert_eq!(layout::read_head(&tree).unwrap().seq, entries[1].head);
        db.flush().unwrap();
    }
    let reopened = Journal::open(crashed.path()).unwrap();
    assert_eq!(reopened.head().unwrap(), head);
    assert_eq!(reopened.verify().unwrap(), head);
    let replayed: Vec<Record> = reopened.read_all(1).collect::<Result<_>>().unwrap();
    assert_eq!(replayed, records);
    assert_streams(&reopened, &model);
    // The writer goes on from the replayed runs.
    let a = model["a"].len() as u64;
    reopened
        .append("a", ExpectedVersion::Exact(a), vec![event(10_000)])
        .unwrap();
    assert_eq!(reopened.stream_version("a").unwrap(), a + 1);
    // A clean close empties the file: opening again replays nothing, and nothing changes.
    drop(reopened);
    let (_, entries) = wal::Wal::open(crashed.path(), wal::CAPACITY).unwrap();
    assert!(entries.is_empty());
    assert_eq!(
        Journal::open(crashed.path()).unwrap().verify().unwrap().seq,
        head.seq + 1
    );
}

#[test]
fn a_write_ahead_file_that_skips_records_the_journal_lacks_is_refused() {
    let (dir, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (journal, _) = journal_ahead_of_its_copy(dir.path(), crashed.path());
    let (_, entries) = wal::Wal::open(dir.path(), wal::CAPACITY).unwrap();
    drop(journal);
    // The file lost its first batch: the journal's head is before the second.
    let (mut file, _) = wal::Wal::open(crashed.path(), wal::CAPACITY).unwrap();
    for entry in &entries[1..] {
        file.append(entry.after, entry.head, &entry.writes).unwrap();
    }
    file.sync().unwrap();
    drop(file);
    let Err(error) = Journal::open(crashed.path()) else {
        panic!("a journal missing a batch was opened");
    };
    assert!(error.to_string().contains("missing"), "{error}");
}

#[test]
fn a_format_2_journal_opens_and_is_stamped_format_3() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let (journal, tree) = journal_of_ten(dir.path());
        tree.insert(layout::FORMAT_KEY, &[layout::FORMAT_2])
            .unwrap();
        tree.flush().unwrap();
        journal.head().unwrap()
    };
    let journal = Journal::open(dir.path()).unwrap();
    assert_eq!(journal.verify().unwrap(), head);
    let tree = journal.raw_tree().unwrap();
    assert_eq!(
        tree.get(layout::FORMAT_KEY).unwrap().unwrap(),
        &[layout::FORMAT]
    );
    assert_eq!(layout::FORMAT, 3);
}

#[test]
fn a_write_ahead_file_cut_short_before_the_journals_head_is_not_replayed_over_it() {
    let (dir, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (journal, _) = journal_ahead_of_its_copy(dir.path(), crashed.path());
    let (_, entries) = wal::Wal::open(dir.path(), wal::CAPACITY).unwrap();
    drop(journal);
    // sled holds six batches past the copy's head, but not their last index runs, which the
    // writer held; the file, damaged after its second entry, only two. Replaying those would
    // take the head and the index runs back.
    let run_key = layout::run_key("", 0);
    {
        let db = raw_sled(crashed.path());
        let tree = db.open_tree(layout::TREE).unwrap();
        for (key, value) in entries[..6].iter().flat_map(|entry| &entry.writes) {
            if key[0] != run_key[0] {
                tree.insert(key, value.clone()).unwrap();
            }
        }
        db.flush().unwrap();
    }
    let (mut file, _) = wal::Wal::open(crashed.path(), wal::CAPACITY).unwrap();
    for entry in &entries[..2] {
        file.append(entry.after, entry.head, &entry.writes).unwrap();
    }
    file.sync().unwrap();
    drop(file);
    let journal = Journal::open(crashed.path()).unwrap();
    assert_eq!(journal.head().unwrap().seq, entries[5].head);
    assert_eq!(journal.verify().unwrap().seq, entries[5].head);
    // Indexed again from the blocks past the mark: every stream reads as its records say.
    let mut model: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in journal.read_all(1) {
        let record = record.unwrap();
        let payload = payloads(std::slice::from_ref(&record))[0];
        model.entry(record.stream).or_default().push(payload);
    }
    assert_streams(&journal, &model);
}

/// The sled journal in `dir`, with what `reach` takes from its writer's side (a test's hooks).
fn opened_reaching<T>(dir: &Path, reach: impl FnOnce(&sled_store::SledLog) -> T) -> (Journal, T) {
    let db = open_db(dir, 1 << 24).unwrap();
    let tree = sled_store::prepare(&db).unwrap();
    let (reads, log) = sled_store::open(db, tree, dir, wal::CAPACITY).unwrap();
    let reached = reach(&log);
    let journal = Journal::start(Box::new(reads), log, &Config::default()).unwrap();
    (journal, reached)
}

#[test]
fn after_a_failed_sync_of_the_write_ahead_file_nothing_is_acknowledged_until_it_is_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let journal = {
        let (journal, failing) = opened_reaching(dir.path(), |log| log.wal.failing.clone());
        journal
            .append("a", ExpectedVersion::NoStream, vec![event(1)])
            .unwrap();
        failing.store(true, std::sync::atomic::Ordering::Relaxed);
        let failed = journal.append("a", ExpectedVersion::Exact(1), vec![event(2)]);
        assert!(matches!(failed, Err(Error::Io(_))), "{failed:?}");
        // The disk is well again, but a later sync could succeed without the failed one's
        // pages: the writer refuses until the journal is opened again.
        failing.store(false, std::sync::atomic::Ordering::Relaxed);
        assert_refused_until_reopened(&journal);
        journal
    };
    // The close leaves the file as it is, and the reopen replays it: the entry whose sync
    // failed reached the page cache, so its append is there, though its appender heard an
    // error (it must read the journal to know).
    drop(journal);
    reopened_with_both_of_a(dir.path())
        .append("b", ExpectedVersion::NoStream, vec![event(3)])
        .unwrap();
}

#[test]
fn a_read_sees_an_acknowledged_append_though_sled_has_not_taken_it_in_yet() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, (between, published)) = opened_reaching(dir.path(), |log| {
        (log.between.clone(), log.published.clone())
    });
    journal
        .append("a", ExpectedVersion::NoStream, vec![event(1)])
        .unwrap();
    // A read waits for the first batch to be in sled, so the writer is between batches.
    assert_eq!(journal.head().unwrap().seq, 1);
    let held = between.lock().unwrap();
    // Acknowledged once durable in the write-ahead file: the writer then stops, held, before
    // inserting it into sled.
    journal
        .append("a", ExpectedVersion::Exact(1), vec![event(2)])
        .unwrap();
    let reader = {
        let journal = journal.clone();
        std::thread::spawn(move || {
            let version = journal.stream_version("a").unwrap();
            (
                version,
                payloads(&stream(&journal, "a", 1)),
                journal.head().unwrap().seq,
            )
        })
    };
    // The reader waits; were reads not held back, it would finish with what sled holds.
    while published.waiting() == 0 && !reader.is_finished() {
        std::thread::yield_now();
    }
    drop(held);
    assert_eq!(reader.join().unwrap(), (2, vec![1, 2], 2));
}

#[test]
fn a_batch_the_follower_is_told_is_in_every_read_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, published) = opened_reaching(dir.path(), |log| log.published.clone());
    let (told, heard) = std::sync::mpsc::channel();
    let (go_on, going_on) = std::sync::mpsc::channel::<()>();
    journal
        .follow(0, move |records| {
            // Says what it was told, then holds the writer before its answers until let go.
            let _ = told.send(records.last().map(|r| r.seq));
            going_on.recv().map_err(|e| e.to_string())
        })
        .unwrap();
    let appender = {
        let journal = journal.clone();
        std::thread::spawn(move || {
            journal
                .append("a", ExpectedVersion::NoStream, vec![event(1)])
                .unwrap()
        })
    };
    // Told, not yet answered: a read by whoever saw it there has it too.
    assert_eq!(heard.recv().unwrap(), Some(1));
    let reader = {
        let journal = journal.clone();
        std::thread::spawn(move || journal.stream_version("a").unwrap())
    };
    while published.waiting() == 0 && !reader.is_finished() {
        std::thread::yield_now();
    }
    go_on.send(()).unwrap();
    assert_eq!(reader.join().unwrap(), 1);
    assert_eq!(appender.join().unwrap().last_seq, 1);
}

#[test]
fn a_batch_sled_refuses_after_it_was_acknowledged_is_read_once_the_journal_is_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let journal = {
        let (journal, refusing) = opened_reaching(dir.path(), |log| log.refusing.clone());
        journal
            .append("a", ExpectedVersion::NoStream, vec![event(1)])
            .unwrap();
        assert_eq!(journal.head().unwrap().seq, 1);
        refusing.store(true, std::sync::atomic::Ordering::Relaxed);
        // Durable in the write-ahead file, so acknowledged; sled refuses it after.
        journal
            .append("a", ExpectedVersion::Exact(1), vec![event(2)])
            .unwrap();
        // Reads cannot answer what was acknowledged, and say so rather than answer from behind.
        let Err(error) = journal.stream_version("a") else {
            panic!("a read answered from a tree missing an acknowledged batch");
        };
        assert!(error.to_string().contains("opened again"), "{error}");
        assert_refused_until_reopened(&journal);
        journal
    };
    // The close leaves the write-ahead file as it is, and the reopen replays it.
    drop(journal);
    reopened_with_both_of_a(dir.path());
}

/// Checks that `journal`'s writer, stopped by a failure, acknowledges no append until the
/// journal is opened again.
fn assert_refused_until_reopened(journal: &Journal) {
    let Err(error) = journal.append("b", ExpectedVersion::Any, vec![event(3)]) else {
        panic!("an append was acknowledged after the writer stopped on a failure");
    };
    assert!(error.to_string().contains("opened again"), "{error}");
}

/// Opens again the journal in `dir`, whose writer stopped on a failure while appending the
/// second event of stream "a": the write-ahead file gives both back, and the refused "b" is
/// not there.
fn reopened_with_both_of_a(dir: &Path) -> Journal {
    let reopened = Journal::open(dir).unwrap();
    assert_eq!(payloads(&stream(&reopened, "a", 1)), vec![1, 2]);
    assert_eq!(reopened.stream_version("b").unwrap(), 0);
    assert_eq!(reopened.verify().unwrap().seq, 2);
    reopened
}
