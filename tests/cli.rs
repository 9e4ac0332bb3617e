//! The journal and audit commands, run as the real binary on a temporary data directory.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use flotilla_journal::{tamper, ExpectedVersion, Journal, NewEvent};

fn flotilla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A journal of ten records in a new directory, and its export in another: (journal's
/// directory, export's directory, the export).
fn seeded_export() -> (tempfile::TempDir, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    common::seed_journal(dir.path());
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("journal.jsonl");
    let export = flotilla(&[
        "journal",
        "export",
        "--data-dir",
        arg(dir.path()),
        "--out",
        arg(&file),
    ]);
    assert!(export.status.success(), "{export:?}");
    (dir, work, file)
}

#[test]
fn audit_verify_passes_a_sound_journal_and_names_the_first_break() {
    let dir = tempfile::tempdir().unwrap();
    common::seed_journal(dir.path());
    let ok = flotilla(&["audit", "verify", "--data-dir", arg(dir.path())]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(stdout(&ok).starts_with("ok: 10 records"), "{}", stdout(&ok));

    {
        let journal = Journal::open(dir.path()).unwrap();
        let tree = journal.raw_tree().unwrap();
        let mut bytes = tamper::stored(&tree, 7).unwrap();
        let last = bytes.len() - 65;
        bytes[last] ^= 1; // a payload byte
        tamper::replace(&tree, 7, &bytes);
    }
    let broken = flotilla(&["audit", "verify", "--data-dir", arg(dir.path())]);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    assert!(stdout(&broken).contains("at seq 7"), "{}", stdout(&broken));
}

#[test]
fn export_verifies_on_its_own_and_imports_only_into_an_empty_directory() {
    let (_dir, work, file) = seeded_export();
    let verified = flotilla(&["audit", "verify", "--export", arg(&file)]);
    assert!(verified.status.success(), "{verified:?}");

    let target = tempfile::tempdir().unwrap();
    let imported = flotilla(&[
        "journal",
        "import",
        "--data-dir",
        arg(target.path()),
        "--in",
        arg(&file),
    ]);
    assert!(imported.status.success(), "{imported:?}");
    let again = flotilla(&[
        "journal",
        "import",
        "--data-dir",
        arg(target.path()),
        "--in",
        arg(&file),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // A tampered export is reported by verify and refused by import.
    let text = std::fs::read_to_string(&file).unwrap();
    let tampered = work.path().join("tampered.jsonl");
    std::fs::write(
        &tampered,
        text.replacen("\"payload\":4", "\"payload\":5", 1),
    )
    .unwrap();
    let verify = flotilla(&["audit", "verify", "--export", arg(&tampered)]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(stdout(&verify).contains("at seq 5"), "{}", stdout(&verify));
    let fresh = tempfile::tempdir().unwrap();
    let refused = flotilla(&[
        "journal",
        "import",
        "--data-dir",
        arg(fresh.path()),
        "--in",
        arg(&tampered),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let mut staging = fresh.path().as_os_str().to_owned();
    staging.push(".importing");
    assert!(
        !Path::new(&staging).exists(),
        "a refused import leaves nothing behind"
    );
    let empty = Journal::open(fresh.path()).unwrap();
    assert_eq!(empty.head().unwrap().seq, 0);
}

#[test]
fn a_failed_export_leaves_the_file_it_would_have_replaced_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    common::seed_journal(dir.path());
    let elsewhere = tempfile::tempdir().unwrap();
    let backup = elsewhere.path().join("backup.jsonl");
    let export = |data: &Path, out: &Path| {
        flotilla(&[
            "journal",
            "export",
            "--data-dir",
            arg(data),
            "--out",
            arg(out),
        ])
    };
    assert!(export(dir.path(), &backup).status.success());
    let before = std::fs::read(&backup).unwrap();
    // A data directory that is not there: the export fails, and the backup is untouched (it
    // used to be emptied first), with nothing left beside it.
    let missing = elsewhere.path().join("missing");
    let failed = export(&missing, &backup);
    assert_eq!(failed.status.code(), Some(2), "{failed:?}");
    assert_eq!(std::fs::read(&backup).unwrap(), before);
    let left: Vec<_> = std::fs::read_dir(elsewhere.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // Nor is one of the journal's own files replaced.
    let db = dir.path().join("db");
    let journal_file = std::fs::read(&db).unwrap();
    let refused = export(dir.path(), &db);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("data directory"));
    assert_eq!(std::fs::read(&db).unwrap(), journal_file);
    assert!(
        flotilla(&["audit", "verify", "--data-dir", arg(dir.path())])
            .status
            .success()
    );
}

#[test]
fn verify_checks_the_export_it_is_given_and_nothing_else() {
    let (dir, file, export) = seeded_export();
    let text = std::fs::read_to_string(&export).unwrap();
    let broken = file.path().join("broken.jsonl");
    std::fs::write(&broken, text.replacen("\"payload\":4", "\"payload\":5", 1)).unwrap();
    // With --url too, it used to verify the service and say ok: refused as ambiguous.
    let both = flotilla(&[
        "audit",
        "verify",
        "--export",
        arg(&broken),
        "--url",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(both.status.code(), Some(2), "{both:?}");
    // The data directory the environment names (as serve's users set it) is no conflict: the
    // export given is what is verified.
    let verify = |file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["audit", "verify", "--export", arg(file)])
            .env("FLOTILLA_DATA_DIR", dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    assert!(verify(&export).status.success());
    let refused = verify(&broken);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
}

#[test]
fn an_import_into_a_new_directory_is_there_whole_or_not_at_all() {
    let (_dir, work, file) = seeded_export();
    let target = work.path().join("restored");
    // What an import killed part way leaves: its staging directory, with some of the records
    // (a probe's kill used to leave them in the data directory, where they verified as a
    // shorter journal and a new import was refused as not empty).
    let staging = work.path().join("restored.importing");
    {
        let partial = Journal::open(&staging).unwrap();
        let event = NewEvent::json("thing_happened", 1, 1_795_564_800_000, &0).unwrap();
        partial
            .append("group-a", ExpectedVersion::Any, vec![event])
            .unwrap();
    }
    let none = flotilla(&["audit", "verify", "--data-dir", arg(&target)]);
    assert_eq!(none.status.code(), Some(2), "no journal there: {none:?}");
    let import = |to: &Path| {
        flotilla(&[
            "journal",
            "import",
            "--data-dir",
            arg(to),
            "--in",
            arg(&file),
        ])
    };
    let imported = import(&target);
    assert!(imported.status.success(), "{imported:?}");
    assert!(!staging.exists());
    let verified = flotilla(&["audit", "verify", "--data-dir", arg(&target)]);
    assert!(
        stdout(&verified).starts_with("ok: 10 records"),
        "{verified:?}"
    );
    // Named with a trailing slash, its staging directory is still beside it.
    let slashed = format!("{}/", work.path().join("again").display());
    assert!(import(Path::new(&slashed)).status.success());
    let verified = flotilla(&["audit", "verify", "--data-dir", &slashed]);
    assert!(
        stdout(&verified).starts_with("ok: 10 records"),
        "{verified:?}"
    );
    assert!(!work.path().join("again").join(".importing").exists());
    assert!(!work.path().join("again.importing").exists());
    // A directory of other files is not imported into.
    let other = work.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    let refused = import(&other);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert_eq!(std::fs::read(other.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn audit_log_prints_json_lines_filtered_by_object_and_time() {
    let dir = tempfile::tempdir().unwrap();
    common::seed_journal(dir.path());
    let all = flotilla(&["audit", "log", "--data-dir", arg(dir.path())]);
    assert!(all.status.success(), "{all:?}");
    let lines: Vec<serde_json::Value> = stdout(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[3]["seq"], 4);
    assert_eq!(lines[3]["payload"], 3);
    assert_eq!(lines[0]["time"], "2026-11-25T00:00:00.000Z");

    let b = flotilla(&[
        "audit",
        "log",
        "--data-dir",
        arg(dir.path()),
        "--object",
        "group-b",
        "--since",
        "2026-11-25T00:00:03Z",
        "--until",
        "1795564807",
    ]);
    let payloads: Vec<i64> = stdout(&b)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["payload"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(payloads, vec![3, 5, 7]);
}

#[test]
fn bad_arguments_are_clear_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let missing = flotilla(&[
        "audit",
        "verify",
        "--data-dir",
        arg(&dir.path().join("nope")),
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no journal"));
    let bad_time = flotilla(&[
        "audit",
        "log",
        "--data-dir",
        arg(dir.path()),
        "--since",
        "yesterday",
    ]);
    assert_eq!(bad_time.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("RFC 3339"));
}

#[test]
fn replay_prints_each_object_as_of_a_seq_or_a_time() {
    use flotilla_actors::aggregate::Groups;
    use flotilla_actors::clock::Timestamp;
    use flotilla_actors::domain::group::{self, GroupCommand, NewGroup};
    use flotilla_actors::domain::{GroupId, TenantId};
    use flotilla_actors::store;

    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let start = 1_795_564_800_000i64;
    let id = GroupId::new("grp_replayed");
    let commands = [
        GroupCommand::Create(NewGroup {
            id: id.clone(),
            tenant_id: TenantId::new("ten_1"),
            name: "web".into(),
            min_size: 1,
            max_size: 10,
            desired_capacity: Some(2),
            cooldown_seconds: None,
            // An orchestrator's signing secret, which replay does not print.
            launch: serde_json::json!({"provider": "http", "url": "http://127.0.0.1:9/",
                                       "secret": "whsec_c2lnbmluZyBrZXk="}),
            metadata: None,
            metrics_token_hash: String::new(),
        }),
        GroupCommand::SetDesired {
            desired_capacity: 5,
        },
        GroupCommand::SetDesired {
            desired_capacity: 7,
        },
    ];
    let mut state = None;
    for (i, command) in commands.iter().enumerate() {
        let now = Timestamp::from_millis(start + i as i64 * 60_000);
        let events = group::decide(&state, command, now).unwrap();
        let records = store::records::<Groups>(&events, now).unwrap();
        journal
            .append(id.as_str(), ExpectedVersion::Any, records)
            .unwrap();
        state = events.iter().fold(state, group::apply);
    }
    drop(journal);

    let desired = |until: &str| {
        let out = flotilla(&["replay", "--data-dir", arg(dir.path()), "--until", until]);
        assert!(out.status.success(), "{out:?}");
        let world: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        world["groups"]["grp_replayed"]["desired_capacity"].as_u64()
    };
    assert_eq!(desired("1"), Some(2));
    assert_eq!(desired("2"), Some(5));
    assert_eq!(desired("3"), Some(7));
    assert_eq!(desired("2026-11-25T00:01:30Z"), Some(5));
    assert_eq!(desired("2026-11-24T23:00:00Z"), None);
    let out = flotilla(&["replay", "--data-dir", arg(dir.path())]);
    let world: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        world["groups"]["grp_replayed"]["launch"]["secret"],
        "[redacted]"
    );
    assert!(!stdout(&out).contains("c2lnbmluZyBrZXk"));
    let bad = flotilla(&["replay", "--data-dir", arg(dir.path()), "--until", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// `flotilla` run in `dir` (for the defaults relative to the working directory).
fn flotilla_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env_remove("FLOTILLA_DATA_DIR")
        .output()
        .unwrap()
}

#[test]
fn a_newcomers_edges_defaults_hints_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    common::seed_journal(&dir.path().join("flotilla-data"));

    // `audit verify` defaults to ./flotilla-data, like its siblings.
    let ok = flotilla_in(dir.path(), &["audit", "verify"]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(stdout(&ok).starts_with("ok: 10 records"), "{}", stdout(&ok));

    // A locked journal's error says how to read through the service instead.
    let held = Journal::open(dir.path().join("flotilla-data")).unwrap();
    let locked = flotilla_in(dir.path(), &["audit", "verify"]);
    assert_eq!(locked.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&locked.stderr).contains("--url"),
        "{locked:?}"
    );
    drop(held);
    // Any other failure to open says what it was, not that a service holds the directory
    // (it used to, for a read-only or damaged one too).
    let damaged = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(damaged.path().join("db")).unwrap();
    std::fs::write(damaged.path().join("conf"), b"not sled's").unwrap();
    let failed = flotilla(&["audit", "verify", "--data-dir", arg(damaged.path())]);
    assert_eq!(failed.status.code(), Some(2), "{failed:?}");
    let said = String::from_utf8_lossy(&failed.stderr);
    assert!(!said.contains("holds it locked"), "{said}");

    // `replay --until` past the head says so.
    let past = flotilla_in(dir.path(), &["replay", "--until", "99"]);
    assert!(past.status.success(), "{past:?}");
    assert!(String::from_utf8_lossy(&past.stderr).contains("past the journal's head (10)"));

    // `webhook sign` refuses an empty nonce and a malformed secret.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let empty = flotilla(&["webhook", "sign", "--secret", secret, "--nonce", ""]);
    assert_eq!(empty.status.code(), Some(2), "{empty:?}");
    let spaced = flotilla(&["webhook", "sign", "--secret", secret, "--nonce", "a b"]);
    assert_eq!(spaced.status.code(), Some(2), "{spaced:?}");
    let malformed = flotilla(&["webhook", "sign", "--secret", "whsec_"]);
    assert_eq!(malformed.status.code(), Some(2), "{malformed:?}");

    // The exit codes are in --help.
    let help = flotilla(&["--help"]);
    assert!(stdout(&help).contains("Exit codes: 0"), "{}", stdout(&help));
}

#[test]
fn piping_into_a_reader_that_stops_early_is_not_an_error() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let start = 1_795_564_800_000i64;
    // Enough output to fill the pipe after the reader has gone.
    for n in 0..3000i64 {
        let event = NewEvent::json("thing_happened", 1, start + n, &"x".repeat(200)).unwrap();
        journal
            .append("group-a", ExpectedVersion::Any, vec![event])
            .unwrap();
    }
    drop(journal);
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["audit", "log", "--data-dir", arg(dir.path())])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The reader (this end of the pipe) is gone now, as `head` would be.
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_journal_an_import_left_part_way_is_not_served_and_verify_says_so() {
    let dir = tempfile::tempdir().unwrap();
    common::seed_journal(dir.path());
    {
        // As an import of a 15-record export killed after its first 10.
        let journal = Journal::open(dir.path()).unwrap();
        let head = journal.head().unwrap();
        journal
            .start_import(flotilla_journal::Head {
                seq: head.seq + 5,
                ..head
            })
            .unwrap();
    }
    let served = flotilla(&[
        "serve",
        "--data-dir",
        arg(dir.path()),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!served.status.success());
    let stderr = String::from_utf8_lossy(&served.stderr);
    assert!(
        stderr.contains("stopped part way (10 of 15 records)"),
        "{stderr}"
    );
    let verify = flotilla(&["audit", "verify", "--data-dir", arg(dir.path())]);
    assert_eq!(verify.status.code(), Some(1), "{verify:?}");
    let said = stdout(&verify);
    assert!(
        said.starts_with("unfinished: an import stopped part way")
            && said.contains("10 of the export's 15"),
        "{said}"
    );
}

#[test]
fn an_import_left_staged_blocks_serve_and_verify_until_an_import_finishes() {
    // A probe killed a first import: only `<dir>.importing` was left, and serve then made an
    // empty journal in `dir` and served it, while verify said only "no journal".
    let (_seeded, work, file) = seeded_export();
    let dir = work.path().join("restored");
    let staging = work.path().join("restored.importing");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join("conf"), "left by a killed import").unwrap();
    let served = flotilla(&["serve", "--data-dir", arg(&dir), "--listen", "127.0.0.1:0"]);
    assert!(!served.status.success());
    let said = String::from_utf8_lossy(&served.stderr);
    assert!(said.contains("stopped part way"), "{said}");
    assert!(!dir.exists(), "serve made nothing");
    let verify = flotilla(&["audit", "verify", "--data-dir", arg(&dir)]);
    assert!(!verify.status.success());
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(said.contains("stopped part way"), "{said}");

    // The import again: whole, and nothing left beside it.
    let import = flotilla(&[
        "journal",
        "import",
        "--data-dir",
        arg(&dir),
        "--in",
        arg(&file),
    ]);
    assert!(import.status.success(), "{import:?}");
    assert!(!staging.exists());
    let verify = flotilla(&["audit", "verify", "--data-dir", arg(&dir)]);
    assert!(stdout(&verify).starts_with("ok: 10 records"), "{verify:?}");

    // Into a directory holding an empty journal (in place), a staging directory left beside
    // it goes too.
    let empty = work.path().join("empty");
    drop(Journal::open(&empty).unwrap());
    let left = work.path().join("empty.importing");
    std::fs::create_dir(&left).unwrap();
    let import = flotilla(&[
        "journal",
        "import",
        "--data-dir",
        arg(&empty),
        "--in",
        arg(&file),
    ]);
    assert!(import.status.success(), "{import:?}");
    assert!(!left.exists());
}
