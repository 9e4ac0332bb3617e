//! What the journal's writer waits for while a checkpoint is taken, with 100,000 servers'
//! metrics tokens in the index (10 groups of 10,000): the copy of the index's maps, which is
//! all it waits for now, beside the copy and the sort into a checkpoint's order (the tokens'
//! hashes as text), which is what it waited for before, rebuilt from today's two halves (the
//! single pass it was is gone). Neither times freeing its result: the writer never waited for
//! that. The index is fed the way the service feeds it, with records read back from a journal
//! on disk, and the allocator is the service's.
//!
//! `cargo bench --bench checkpoint`

use criterion::{criterion_group, criterion_main, Criterion};
use flotilla::index::Index;
use flotilla_actors::aggregate::Groups;
use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::group::GroupEvent;
use flotilla_actors::domain::{GroupId, TenantId};
use flotilla_actors::store;
use flotilla_journal::{ExpectedVersion, Journal};

/// The allocator the `flotilla` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GROUPS: usize = 10;
const SERVERS_PER_GROUP: usize = 10_000;
const AT: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// A SHA-256 hex digest, as `token::hash` makes (of `n`, so distinct for each).
fn digest(n: usize) -> String {
    use sha2::Digest;
    flotilla_journal::hex(&sha2::Sha256::digest(n.to_le_bytes()).into())
}

/// An index holding `GROUPS` groups of `SERVERS_PER_GROUP` launched servers, each with a token.
fn fleet_index() -> Index {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path().join("journal")).unwrap();
    for g in 0..GROUPS {
        let group = GroupId::new(format!("grp_{g:016x}"));
        let created = GroupEvent::Created {
            id: group.clone(),
            tenant_id: TenantId::from("ten_1"),
            name: "g".into(),
            min_size: 0,
            max_size: SERVERS_PER_GROUP as u32,
            desired_capacity: SERVERS_PER_GROUP as u32,
            cooldown_seconds: 0,
            launch: serde_json::Value::Null,
            metadata: serde_json::Map::new(),
            metrics_token_hash: digest(g),
            at: AT,
        };
        let events = store::records::<Groups>(&[created], AT).unwrap();
        journal
            .append(group.as_str(), ExpectedVersion::Any, events)
            .unwrap();
        for chunk in (0..SERVERS_PER_GROUP).collect::<Vec<_>>().chunks(1000) {
            let launched: Vec<GroupEvent> = chunk
                .iter()
                .map(|s| GroupEvent::ServerLaunchRequested {
                    server_id: format!("srv_{g:04x}{s:012x}"),
                    metrics_token_hash: digest(GROUPS + g * SERVERS_PER_GROUP + s),
                    at: AT,
                    because: None,
                    replacement: false,
                })
                .collect();
            let events = store::records::<Groups>(&launched, AT).unwrap();
            journal
                .append(group.as_str(), ExpectedVersion::Any, events)
                .unwrap();
        }
    }
    let index = Index::default();
    for record in journal.read_all(0) {
        index.take(&record.unwrap()).unwrap();
    }
    index
}

fn checkpoint_copy(c: &mut Criterion) {
    let index = fleet_index();
    let last = digest(GROUPS + GROUPS * SERVERS_PER_GROUP - 1);
    assert!(index.group_of_metrics_token(&last).is_some());
    let mut group = c.benchmark_group("checkpoint of 100k servers' tokens");
    group.sample_size(20);
    group.bench_function("the writer waits for: copy", |b| {
        b.iter_with_large_drop(|| index.copy());
    });
    group.bench_function("it waited for before: copy and sort", |b| {
        b.iter_with_large_drop(|| index.copy().sorted());
    });
    group.finish();
}

criterion_group!(benches, checkpoint_copy);
criterion_main!(benches);
