//! Crash safety: a child process appends in a loop and reports each acknowledged append; it is
//! SIGKILLed at random instants, and after each kill every acknowledged record must be present
//! and the chain must verify.
//!
//! The child is this same test binary, re-run with `CRASH_CHILD_DIR` set so that the ignored
//! test `child_appends_until_killed` does the appending.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use flotilla_journal::{Config, ExpectedVersion, Journal, NewEvent, StreamAppend};

const CHILD_ENV: &str = "CRASH_CHILD_DIR";
const WRITERS: usize = 4;
const KILLS: usize = 24;

/// One acknowledged append, as the child reported it: `ack <stream> <first version> <payloads…>`.
#[derive(Debug)]
struct Ack {
    stream: String,
    first_version: u64,
    payloads: Vec<String>,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut words = line.strip_prefix("ack ")?.split(' ');
    let stream = words.next()?.to_owned();
    let first_version = words.next()?.parse().ok()?;
    Some(Ack {
        stream,
        first_version,
        payloads: words.map(str::to_owned).collect(),
    })
}

#[test]
fn acknowledged_appends_survive_sigkill_at_random_instants() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<Ack> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for round in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_appends_until_killed",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .env("CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            // A line cut short by the kill has no newline: it was never a whole report.
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
                if let Some(ack) = parse_ack(line.trim_end()) {
                    if lines_tx.send(ack).is_err() {
                        break;
                    }
                }
                line.clear();
            }
        });
        // Let it run for a random number of acknowledgements, then kill it at a random instant.
        let wait_for = rng.usize(1..200);
        let mut seen = 0;
        while seen < wait_for {
            match lines_rx.recv_timeout(Duration::from_secs(30)) {
                Ok(ack) => {
                    acked.push(ack);
                    seen += 1;
                }
                Err(e) => panic!("round {round}: the child stopped reporting: {e}"),
            }
        }
        std::thread::sleep(Duration::from_micros(rng.u64(0..5_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        acked.extend(lines_rx.try_iter());

        let journal = Journal::open(dir.path()).unwrap();
        let head = journal
            .verify()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        for ack in &acked {
            let records: Vec<_> = journal
                .read_stream(&ack.stream, ack.first_version)
                .take(ack.payloads.len())
                .collect::<Result<_, _>>()
                .unwrap();
            let found: Vec<String> = records.iter().map(|r| r.decode(1).unwrap()).collect();
            assert_eq!(
                found, ack.payloads,
                "round {round}: acknowledged {ack:?} is not intact"
            );
        }
        eprintln!(
            "round {round}: {} acks intact, head at seq {}",
            acked.len(),
            head.seq
        );
    }
    assert!(acked.len() >= KILLS);
}

/// The child: `WRITERS` threads append to their own streams until killed, printing each ack.
#[test]
#[ignore = "run by acknowledged_appends_survive_sigkill_at_random_instants"]
fn child_appends_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let round = std::env::var("CRASH_ROUND").unwrap_or_default();
    // A small write-ahead file, so that the kills also land around its rewinds: a round is a
    // few dozen batches.
    let config = Config {
        wal_capacity: 16 << 10,
        ..Config::default()
    };
    let journal = Journal::open_with(dir, config).unwrap();
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let journal = journal.clone();
            let round = round.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let stream = format!("writer-{w}");
                let mut version = journal.stream_version(&stream).unwrap();
                for n in 0u64.. {
                    let count = (n % 3 + 1) as usize;
                    let payloads: Vec<String> = (0..count)
                        .map(|i| format!("r{round}w{w}n{n}e{i}"))
                        .collect();
                    let events: Vec<NewEvent> = payloads
                        .iter()
                        .map(|p| NewEvent::json("tick", 1, n as i64, p).unwrap())
                        .collect();
                    // Every other round: the same events as an append of two parts (the first
                    // event, then the rest), which must reach the disk together.
                    let appended = if n % 2 == 1 {
                        let mut rest = events;
                        let first = rest.remove(0);
                        let parts = vec![
                            StreamAppend {
                                stream: stream.clone(),
                                expected: ExpectedVersion::Exact(version),
                                events: vec![first],
                            },
                            StreamAppend {
                                stream: stream.clone(),
                                expected: ExpectedVersion::Exact(version + 1),
                                events: rest,
                            },
                        ];
                        let mut appended =
                            runtime.block_on(journal.append_all_async(parts)).unwrap();
                        appended.pop().unwrap()
                    } else {
                        journal
                            .append(&stream, ExpectedVersion::Exact(version), events)
                            .unwrap()
                    };
                    println!("ack {stream} {} {}", version + 1, payloads.join(" "));
                    version = appended.version;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
