//! Resident memory of the actors: creates N groups, N policies and N alarms through the
//! supervisor (256 commands in flight), keeps all 3N actors resident, and prints the process's
//! resident set size (VmRSS) beside the RSS before, per object, and the time it took.
//!
//! `cargo bench --bench resident` (N = 100000); `FLOTILLA_RESIDENT_N=10000` for a quick run;
//! `FLOTILLA_RESIDENT_CACHE_MB` sets the journal's sled page cache (default: the journal's).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_actors::aggregate::{Alarms, Groups, Policies};
use flotilla_actors::clock::{Clock, SystemClock};
use flotilla_actors::domain::alarm::{AlarmCommand, Comparison, NewAlarm, Statistic};
use flotilla_actors::domain::group::{GroupCommand, NewGroup};
use flotilla_actors::domain::policy::{PolicyCommand, PolicyDefinition};
use flotilla_actors::domain::scaling::AdjustmentType;
use flotilla_actors::domain::{AlarmId, GroupId, PolicyId, TenantId};
use flotilla_actors::object::ObjectActor;
use flotilla_actors::supervisor::{Config, Supervisor};
use flotilla_journal::Journal;
use futures::stream::{self, StreamExt};

const IN_FLIGHT: usize = 256;

/// The `flotilla` binary's allocator (mimalloc), counting the bytes and blocks live on the heap,
/// so that the RSS can be told apart into what is allocated and what the allocator keeps
/// (fragmentation, free lists).
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_BLOCKS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every call to mimalloc unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        mimalloc::MiMalloc.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        mimalloc::MiMalloc.dealloc(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        mimalloc::MiMalloc.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap() -> (usize, usize) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_BLOCKS.load(Ordering::Relaxed),
    )
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The process's resident set size in bytes, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("a VmRSS line")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs `make(i)` for i in 0..n with [`IN_FLIGHT`] in flight; panics on the first failure.
async fn create_all<F, Fut>(n: usize, make: F) -> Duration
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    stream::iter(0..n)
        .map(make)
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    start.elapsed()
}

fn main() {
    let n = env_u64("FLOTILLA_RESIDENT_N").unwrap_or(100_000) as usize;
    let mut journal_config = flotilla_journal::Config::default();
    if let Some(mb) = env_u64("FLOTILLA_RESIDENT_CACHE_MB") {
        journal_config.cache_capacity = mb << 20;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let system = actix::System::new();
    let rss_start = rss_bytes();
    let heap_start = heap();
    let (supervisor, timings) = system.block_on(async {
        let journal = Journal::open_with(dir.path(), journal_config.clone()).expect("journal");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let supervisor = Supervisor::start(journal, clock, Config::default());
        if std::env::var("FLOTILLA_RESIDENT_EMPTY").is_ok() {
            let took = create_all(3 * n, |i| {
                let supervisor = &supervisor;
                async move {
                    let id = format!("grp_{:032x}", i);
                    supervisor.get::<Groups>(&id).await.expect("started");
                }
            })
            .await;
            return (supervisor, [took, Duration::ZERO, Duration::ZERO]);
        }
        let tenant = TenantId::new("ten_resident");
        let groups: Vec<GroupId> = (0..n).map(|_| GroupId::generate()).collect();
        let policies: Vec<PolicyId> = (0..n).map(|_| PolicyId::generate()).collect();
        let alarms: Vec<AlarmId> = (0..n).map(|_| AlarmId::generate()).collect();

        let groups_took = create_all(n, |i| {
            let (supervisor, id, tenant) = (&supervisor, &groups[i], &tenant);
            async move {
                let command = GroupCommand::Create(NewGroup {
                    id: id.clone(),
                    tenant_id: tenant.clone(),
                    name: format!("web-{i}"),
                    min_size: 0,
                    max_size: 100,
                    desired_capacity: Some(1),
                    cooldown_seconds: None,
                    launch: serde_json::json!({"provider": "simulated"}),
                    metadata: None,
                    metrics_token_hash: String::new(),
                });
                supervisor
                    .execute::<Groups>(id.as_str(), command)
                    .await
                    .expect("group created");
            }
        })
        .await;
        let policies_took = create_all(n, |i| {
            let (supervisor, id, tenant) = (&supervisor, &policies[i], &tenant);
            let group = &groups[i];
            async move {
                let command = PolicyCommand::Create {
                    id: id.clone(),
                    group_id: group.clone(),
                    tenant_id: tenant.clone(),
                    definition: PolicyDefinition::simple("scale-up", AdjustmentType::Change, 1),
                };
                supervisor
                    .execute::<Policies>(id.as_str(), command)
                    .await
                    .expect("policy created");
            }
        })
        .await;
        let alarms_took = create_all(n, |i| {
            let (supervisor, id, tenant) = (&supervisor, &alarms[i], &tenant);
            let (group, policy) = (&groups[i], &policies[i]);
            async move {
                let command = AlarmCommand::Create(NewAlarm {
                    id: id.clone(),
                    tenant_id: tenant.clone(),
                    name: "cpu-high".into(),
                    group_id: group.clone(),
                    metric: "cpu".into(),
                    query: None,
                    statistic: Statistic::Avg,
                    period_seconds: 60,
                    evaluation_periods: 3,
                    datapoints_to_alarm: None,
                    comparison: Comparison::Gt,
                    threshold: 0.8,
                    treat_missing: None,
                    alarm_actions: vec![policy.clone()],
                    ok_actions: vec![],
                    repeat_actions: false,
                });
                supervisor
                    .execute::<Alarms>(id.as_str(), command)
                    .await
                    .expect("alarm created");
            }
        })
        .await;
        (supervisor, [groups_took, policies_took, alarms_took])
    });
    let rss_end = rss_bytes();
    let heap_end = heap();
    let objects = 3 * n as u64;
    let resident = supervisor.resident();
    let per_object = rss_end.saturating_sub(rss_start) / objects.max(1);
    let total: Duration = timings.iter().sum();

    println!("resident actors: {n} groups, {n} policies, {n} alarms");
    println!("| measure                         | value |");
    println!("| ------------------------------- | ----- |");
    println!(
        "| RSS before                      | {:.1} MiB |",
        mib(rss_start)
    );
    println!(
        "| RSS with every actor resident   | {:.1} MiB |",
        mib(rss_end)
    );
    println!("| RSS growth per object           | {per_object} B |");
    println!(
        "| heap live (counted) growth      | {:.1} MiB, {} blocks ({} B, {:.1} blocks per object) |",
        mib((heap_end.0 - heap_start.0) as u64),
        heap_end.1 - heap_start.1,
        (heap_end.0 - heap_start.0) as u64 / objects.max(1),
        (heap_end.1 - heap_start.1) as f64 / objects.max(1) as f64
    );
    println!("| resident actors (supervisor)    | {resident} |");
    println!(
        "| time to create (groups/policies/alarms) | {:.2?} / {:.2?} / {:.2?} |",
        timings[0], timings[1], timings[2]
    );
    println!(
        "| time to create, total           | {total:.2?} ({:.0} objects/s) |",
        objects as f64 / total.as_secs_f64()
    );
    println!(
        "| journal sled cache_capacity     | {:.0} MiB |",
        mib(journal_config.cache_capacity)
    );
    println!(
        "| size_of ObjectActor<Groups/Policies/Alarms> | {} / {} / {} B |",
        std::mem::size_of::<ObjectActor<Groups>>(),
        std::mem::size_of::<ObjectActor<Policies>>(),
        std::mem::size_of::<ObjectActor<Alarms>>()
    );
    let verdict = if rss_end <= 1 << 30 { "within" } else { "OVER" };
    println!("RSS {:.1} MiB: {verdict} the 1 GiB target", mib(rss_end));
    drop(supervisor);
}
