//! Starting the service: the journal, the operator token, the supervisor, the HTTP server, and
//! the projector's catching up on the journal (after which the service is ready).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::Service as _;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use flotilla_actors::clock::Clock;
use flotilla_actors::supervisor::{self, Supervisor};
use flotilla_journal::Journal;

use crate::alarms::{AlarmTable, Evaluator};
use crate::api::{self, AppState};
use crate::cluster::{self, Held, LeaseCounts, Ownership, LEASE_TTL};
use crate::converger::{Converger, Quiet};
use crate::index::Index;
use crate::intake;
use crate::projector::Projector;
use crate::providers::Providers;
use crate::ratelimit::{Limit, WebhookLimits};
use crate::schedules::Scheduler;
use crate::settings::Settings;
use crate::telemetry::{EventCounts, Recovery, Telemetry};
use crate::ticks::{Ticker, Ticks};
use crate::token;

/// Whether the service is ready: its read models have caught up on the journal, so it answers
/// and its loops act. Set once; `wait` blocks a thread until then.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    lock: Mutex<()>,
    set: Condvar,
}

impl Readiness {
    /// Whether it is set.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Sets it, and wakes whoever waits.
    fn set(&self) {
        let _held = lock(&self.lock);
        self.ready.store(true, Ordering::Release);
        self.set.notify_all();
    }

    /// Waits (blocking the thread) until it is set, at most `timeout`; answers whether it is.
    pub fn wait(&self, timeout: Duration) -> bool {
        let held = lock(&self.lock);
        let waited = self
            .set
            .wait_timeout_while(held, timeout, |_| !self.is_ready());
        drop(waited);
        self.is_ready()
    }
}

/// A started service.
pub struct Service {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The operator token (read from or written to `operator.token`).
    pub operator_token: String,
    /// The running server; await it to serve until stopped.
    pub server: actix_web::dev::Server,
    /// Set once the journal is replayed.
    pub ready: Arc<Readiness>,
    /// What a graceful stop does once the server has stopped.
    pub closing: Closing,
}

/// What a graceful stop does once the server has stopped (see [`Closing::close`]).
pub struct Closing {
    checkpointer: Arc<Mutex<Option<Checkpointing>>>,
    recovery: Arc<Recovery>,
    journal: Journal,
}

impl Closing {
    /// Saves the live read models as the checkpoint (once the start's replay has handed them
    /// over; after a save under way, if one is), then makes the journal's files durable. The
    /// next start then normally replays nothing, and finds the objects' snapshots and the
    /// checkpoint saved since sled last wrote its files by itself. A stop during the start's
    /// replay, or a save that fails, leaves the last checkpoint. Every acknowledged event is
    /// durable already: this only spares the next start work. Blocks: call it outside the
    /// runtime.
    pub fn close(self) -> anyhow::Result<()> {
        save_checkpoint(&self.checkpointer, &self.recovery)?;
        self.journal.flush()?;
        Ok(())
    }
}

/// Starts the service on `settings` with `clock`, its loops ticking in real time. Must run
/// inside an actix system.
pub fn start(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Service> {
    start_with(settings, clock, Ticks::Real)
}

/// [`start`], with every background loop ticking from `ticks` (manual ticks in tests).
pub fn start_with(
    settings: Settings,
    clock: Arc<dyn Clock>,
    ticks: Ticks,
) -> anyhow::Result<Service> {
    if settings.database_url.is_none() {
        // Serving would make an empty journal where the import was to go, and take new
        // appends: the import could then never be finished.
        let staging = crate::cli::import_staging(&settings.data_dir);
        anyhow::ensure!(
            !staging.exists(),
            "an import into {} stopped part way ({} remains): run `flotilla journal import` \
             again to finish it, or remove {} to serve without it",
            settings.data_dir.display(),
            staging.display(),
            staging.display()
        );
    }
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create {}", settings.data_dir.display()))?;
    let config = flotilla_journal::Config {
        cache_capacity: settings.journal_cache_mb << 20,
        // One service per database unless the operator said several share it (SPEC 9).
        sole_service: !settings.cluster,
        ..flotilla_journal::Config::default()
    };
    let journal = match &settings.database_url {
        Some(url) => Journal::connect(url.expose(), config)
            .context("cannot open the journal in PostgreSQL (--database-url)")?,
        None => Journal::open_with(&settings.data_dir, config).with_context(|| {
            format!(
                "cannot open the journal in {} (is another flotilla serving it?)",
                settings.data_dir.display()
            )
        })?,
    };
    // Serving the start of an import would take it for the whole journal, and appends would
    // make the rest impossible to bring in.
    if let Some(expected) = journal
        .unfinished_import()
        .context("cannot read the journal")?
    {
        let head = journal.head().context("cannot read the journal")?;
        anyhow::bail!(
            "an import into this journal stopped part way ({} of {} records): run `flotilla \
             journal import` with the same export again to finish it",
            head.seq,
            expected.seq
        );
    }
    let token_path = settings.data_dir.join("operator.token");
    // On a shared database the operator token is the cluster's: the first node to start makes
    // it, every node writes it to its own data directory.
    let shared = journal
        .shared_secret("operator_token", || token::generate("flo_op_"))
        .context("cannot read the cluster's operator token")?;
    let (operator_token, created) = match shared {
        Some(cluster) => {
            token::write_operator_token(&settings.data_dir, &cluster)?;
            (cluster, true)
        }
        None => token::operator_token(&settings.data_dir)?,
    };
    if created {
        tracing::info!(path = %token_path.display(), "operator token written (mode 0600)");
    } else {
        tracing::info!(path = %token_path.display(), "operator token read");
    }

    let listener = TcpListener::bind(&settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let mut settings = settings;
    settings.listen = addr.to_string();
    let node_id = settings.node_id(addr.port());
    // Alone with a sled journal, this node acts for every group; on a shared database, for the
    // shards it holds leases on.
    let ownership = Arc::new(match settings.database_url {
        Some(_) => Ownership::shared(node_id),
        None => Ownership::sole(node_id),
    });
    let lease_counts = Arc::new(LeaseCounts::default());

    let index = Arc::new(Index::default());
    let supervisor = Supervisor::start(
        journal.clone(),
        clock.clone(),
        supervisor::Config {
            webhook_tolerance_seconds: settings.webhook_tolerance_seconds,
            nonce_window_capacity: settings.webhook_nonce_window,
            idle_after_seconds: (settings.actor_idle_seconds > 0)
                .then_some(settings.actor_idle_seconds),
            // On a shared database, a group's owner's work only under its shard's lease.
            fencing: ownership.is_shared().then(|| {
                let (ownership, counts) = (ownership.clone(), lease_counts.clone());
                supervisor::Fencing(Arc::new(move |group, now| {
                    let fence = ownership.fence(group, now);
                    if fence.is_none() {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    fence
                }))
            }),
            // A webhook, its policy and its group on one arbiter: a call crosses no thread
            // between them.
            placement: Some(supervisor::Placement({
                let index = index.clone();
                Arc::new(move |id| index.group_of(id))
            })),
            workers: settings.actor_threads(),
        },
    );
    let alarms = Arc::new(
        AlarmTable::with_max_series(settings.max_series)
            .with_evaluation_delay(settings.evaluation_delay_seconds),
    );
    let quiet = Arc::new(Quiet::default());
    let events = Arc::new(EventCounts::default());
    let projector =
        Arc::new(Projector::new(index.clone(), alarms.clone()).live(quiet.clone(), events.clone()));
    let mut evaluator =
        Evaluator::new(alarms, supervisor.clone()).with_ownership(ownership.clone());
    if let Some(url) = &settings.prometheus_url {
        evaluator = evaluator.with_prometheus(crate::promql::Prometheus::new(url));
    }
    let evaluator = Arc::new(evaluator);
    let scheduler = Arc::new(
        Scheduler::new(projector.schedules().clone(), supervisor.clone())
            .with_ownership(ownership.clone()),
    );
    let ready = Arc::new(Readiness::default());
    let providers = Arc::new(Providers::new(
        clock.clone(),
        settings.provider_http_secret.clone(),
    ));
    let converger = Arc::new(
        Converger::new(
            supervisor.clone(),
            index.clone(),
            providers,
            format!("{}/v1/metrics", settings.public_url().trim_end_matches('/')),
            quiet,
        )
        .with_ownership(ownership.clone())
        .with_period(Duration::from_millis(settings.converge_tick_ms))
        .with_pool(crate::providers::pool::Pool::new(
            settings.provider_threads,
            settings.provider_threads_per_tenant,
        )),
    );
    let recovery = Arc::new(Recovery::default());
    let telemetry = Arc::new(Telemetry::new(
        supervisor.clone(),
        index.clone(),
        recovery.clone(),
        converger.clone(),
        events,
        (ownership.clone(), lease_counts.clone(), clock.clone()),
    ));
    let state = web::Data::new(AppState {
        supervisor,
        index: index.clone(),
        operator_token_hash: token::hash(&operator_token),
        ready: ready.clone(),
        evaluator: evaluator.clone(),
        converger: converger.clone(),
        catch_up: api::CatchUp::new(ownership.is_shared().then(|| journal.clone())),
        ownership: ownership.clone(),
        sessions: crate::console::session::Sessions::default(),
        limits: Arc::new(WebhookLimits {
            source: Limit::new(settings.source_rate_limit, clock.clone()),
            webhook: Limit::new(settings.webhook_rate_limit, clock.clone()),
        }),
        settings: settings.clone(),
        telemetry: telemetry.clone(),
    });

    let checkpointer = Arc::new(Mutex::new(None));
    let ownership_shared = ownership.is_shared();
    // On a shared database, leases first (a manual tick takes them before the loops act), and
    // the read models follow what other nodes append.
    if ownership.is_shared() {
        let busy: Busy = {
            let converger = converger.clone();
            Arc::new(move |shards: &BTreeSet<u32>| converger.busy_in(shards))
        };
        run_leases(
            journal.clone(),
            (ownership, lease_counts, busy),
            clock.clone(),
            ticks.ticker("leases", cluster::LEASE_TICK),
        );
        follow_other_nodes(
            journal.clone(),
            ticks.ticker("other nodes", FOLLOW_OTHER_NODES),
        );
    }
    // On a shared database, an actor another node's append left behind rebuilds.
    let behind = ownership_shared.then(|| state.supervisor.mover());
    let closing = Closing {
        checkpointer: checkpointer.clone(),
        recovery: recovery.clone(),
        journal: journal.clone(),
    };
    project(
        journal,
        (projector, behind),
        clock,
        checkpointer.clone(),
        recovery.clone(),
        (ready.clone(), addr),
    );
    // Manual ticks run the loops in this order: schedules run, alarms act, then servers
    // converge.
    let every = Duration::from_millis;
    scheduler.run(
        ticks.ticker("schedules", every(settings.alarm_tick_ms)),
        ready.clone(),
    );
    evaluator.run(
        ticks.ticker("alarms", every(settings.alarm_tick_ms)),
        ready.clone(),
    );
    converger.run(
        ticks.ticker("converger", every(settings.converge_tick_ms)),
        ready.clone(),
    );
    run_checkpointer(
        checkpointer,
        ticks.ticker("checkpoint", every(settings.checkpoint_interval_ms)),
        recovery,
    );
    let_go_of_idle_actors(
        state.supervisor.clone(),
        ticks.ticker("idle actors", IDLE_CHECK),
    );
    forget_idle_limits(
        state.clone(),
        ticks.ticker("rate limits", Duration::from_secs(60)),
    );

    let bounds = intake::Bounds {
        body_timeout: Duration::from_millis(settings.body_timeout_ms),
        max_body: intake::MAX_BODY
            .max(settings.body_limit)
            .max(settings.metrics_body_limit),
    };
    let sources = intake::Sources::new(settings.max_connections_per_source);
    let server = HttpServer::new({
        let state = state.clone();
        move || {
            let telemetry = telemetry.clone();
            App::new()
                .app_data(state.clone())
                .configure(api::routes)
                .wrap(actix_web::middleware::from_fn(move |req, next| {
                    intake::bounded(bounds, req, next)
                }))
                .wrap_fn(move |req, srv| {
                    // Every answer, errors included, is recorded by its matched route pattern.
                    let started = Instant::now();
                    let telemetry = telemetry.clone();
                    let answer = srv.call(req);
                    async move {
                        let answer = answer.await?;
                        telemetry.answered(answer.request(), answer.response(), started.elapsed());
                        Ok(answer)
                    }
                })
        }
    })
    .workers(settings.http_workers)
    .on_connect(move |connection, data| sources.connected(connection, data))
    .listen(listener)?
    .run();
    // "serving" is said once the journal is replayed (see `project`): until then every call
    // but the health endpoints answers 503.
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), "listening; replaying the journal");
    Ok(Service {
        addr,
        operator_token,
        server,
        ready,
        closing,
    })
}

/// Builds the read models on a thread of its own: from the last checkpoint (if it still matches
/// the journal) and the records after it, or from the whole journal; saves a checkpoint at the
/// head; has the journal tell the projector every append from there on; and marks the service
/// ready. Nothing appends before ready (the API, the evaluator and the converger wait for it),
/// so that checkpoint is exact; and the journal's follower takes in anything after the head all
/// the same.
fn project(
    journal: Journal,
    (projector, behind): (Arc<Projector>, Option<supervisor::Mover>),
    clock: Arc<dyn Clock>,
    checkpointer: Arc<Mutex<Option<Checkpointing>>>,
    recovery: Arc<Recovery>,
    (ready, addr): (Arc<Readiness>, SocketAddr),
) {
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let load = || -> anyhow::Result<(u64, u64)> {
            let from = projector.restore(&journal)?;
            let head = journal.head()?;
            let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            let read = projector.replay(&journal, head.seq, workers)?;
            projector.checkpoint(&journal, head)?;
            projector.alarms().start_at(clock.now());
            let live = projector.clone();
            journal.follow(head.seq, move |records| {
                live.take_live(records)?;
                if let Some(mover) = &behind {
                    // Each stream's last version told is enough.
                    let mut last: HashMap<&str, u64> = HashMap::new();
                    for record in records {
                        last.insert(&record.stream, record.version);
                    }
                    for (stream, version) in last {
                        mover.moved(stream, version);
                    }
                }
                Ok(())
            })?;
            *lock(&checkpointer) = Some((journal.clone(), projector.clone(), head.seq));
            recovery.replayed_at_start.store(read, Ordering::Relaxed);
            recovery.checkpoint_seq.store(head.seq, Ordering::Relaxed);
            Ok((from, read))
        };
        match load() {
            Ok((checkpoint_seq, records)) => {
                ready.set();
                tracing::info!(
                    %addr,
                    checkpoint_seq,
                    records,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "journal replayed; serving"
                );
            }
            Err(error) => tracing::error!(%error, "the journal cannot be replayed; not ready"),
        }
    });
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the checkpointer works with once the start's replay hands it over: the journal, the
/// live projector, and the sequence number of the last checkpoint.
type Checkpointing = (Journal, Arc<Projector>, u64);

/// Keeps the checkpoint close to the journal's head while the service runs, so that a start
/// replays minutes of records, not everything since the last start: at each tick, on a
/// blocking thread, [`save_checkpoint`]. Stops with the actix system.
fn run_checkpointer(
    checkpointer: Arc<Mutex<Option<Checkpointing>>>,
    mut ticker: Ticker,
    recovery: Arc<Recovery>,
) {
    actix_web::rt::spawn(async move {
        while let Some(_tick) = ticker.next().await {
            let (checkpointer, recovery) = (checkpointer.clone(), recovery.clone());
            let saved = actix_web::rt::task::spawn_blocking(move || {
                save_checkpoint(&checkpointer, &recovery)
            })
            .await;
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "checkpoint not saved"),
                Err(error) => tracing::error!(%error, "the checkpointer failed"),
            }
        }
    });
}

/// Saves the live read models as the checkpoint ([`Projector::checkpoint_live`]) once the
/// start's replay has handed them over, and publishes where it is. The lock is held through
/// the save, so a graceful stop's save waits for the checkpointer's, then saves at the head.
fn save_checkpoint(
    checkpointer: &Mutex<Option<Checkpointing>>,
    recovery: &Recovery,
) -> anyhow::Result<()> {
    let mut handed = lock(checkpointer);
    let Some((journal, projector, last)) = handed.as_mut() else {
        return Ok(());
    };
    if let Some(head) = projector.checkpoint_live(journal, *last)? {
        *last = head.seq;
        recovery.checkpoint_seq.store(head.seq, Ordering::Relaxed);
    }
    Ok(())
}

/// How often the read models look for what other nodes appended, in real time.
const FOLLOW_OTHER_NODES: Duration = Duration::from_millis(500);

/// Has the read models take in what other nodes on the shared database appended, at each tick
/// (see `Journal::catch_up`; this node's own appends reach them at once).
fn follow_other_nodes(journal: Journal, mut ticker: Ticker) {
    actix_web::rt::spawn(async move {
        while let Some(_tick) = ticker.next().await {
            if let Err(error) = journal.catch_up_async().await {
                tracing::warn!(%error, "could not read what other nodes appended");
            }
        }
    });
}

/// Of the shards asked about, those with work under way on this node (see
/// [`Converger::busy_in`]).
type Busy = Arc<dyn Fn(&BTreeSet<u32>) -> BTreeSet<u32> + Send + Sync>;

/// Holds this node's leases on a shared database (SPEC 9): at each tick, on a blocking thread,
/// one [`lease_round`].
fn run_leases(
    journal: Journal,
    (ownership, counts, busy): (Arc<Ownership>, Arc<LeaseCounts>, Busy),
    clock: Arc<dyn Clock>,
    mut ticker: Ticker,
) {
    actix_web::rt::spawn(async move {
        while let Some(_tick) = ticker.next().await {
            let (journal, ownership, counts, busy, clock) = (
                journal.clone(),
                ownership.clone(),
                counts.clone(),
                busy.clone(),
                clock.clone(),
            );
            let round = actix_web::rt::task::spawn_blocking(move || {
                lease_round(&journal, &ownership, &counts, busy.as_ref(), clock.as_ref())
            })
            .await;
            match round {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "lease round failed"),
                Err(error) => tracing::error!(%error, "lease round panicked"),
            }
        }
    });
}

/// Asks the database for the live leases, plans ([`cluster::plan`]), stops acting for the
/// shards it lets go of or whose lease ran out before letting go of them, then renews and
/// acquires. A shard whose renewal fails (the database out of reach) is kept until its lease
/// runs out on this node's clock.
fn lease_round(
    journal: &Journal,
    ownership: &Ownership,
    counts: &LeaseCounts,
    busy: &(dyn Fn(&BTreeSet<u32>) -> BTreeSet<u32> + Send + Sync),
    clock: &dyn Clock,
) -> Result<(), flotilla_journal::Error> {
    let me = ownership.node().to_owned();
    // This node's presence first, so that the others count it even while it holds no shard.
    if let Err(error) = journal.acquire_lease(&cluster::presence_name(&me), &me, LEASE_TTL) {
        tracing::warn!(%error, "could not renew this node's presence");
    }
    let asked = clock.now();
    let leases = journal.leases()?;
    let nodes: BTreeSet<String> = leases
        .iter()
        .filter_map(|lease| cluster::node_of_presence(&lease.name).map(str::to_owned))
        .collect();
    let shards: Vec<(u32, flotilla_journal::Lease)> = leases
        .into_iter()
        .filter_map(|lease| Some((cluster::shard_of_lease(&lease.name)?, lease)))
        .collect();
    ownership.seen(&shards, asked);
    let live: BTreeMap<u32, String> = shards
        .into_iter()
        .map(|(shard, lease)| (shard, lease.holder))
        .collect();
    let held = ownership.held();
    let now = clock.now();
    let mut plan = cluster::plan(&me, now, &held, &live, &nodes);
    // A shard to let go of drains first: no converger pass starts for it from here on, and
    // while one is under way (a launch waiting on its provider) it is renewed, up to
    // DRAIN_LIMIT, so that the launch is recorded under the lease it was made under.
    let release: BTreeSet<u32> = plan.release.iter().copied().collect();
    let overdue = ownership.drain(&release, now);
    let draining: BTreeSet<u32> = busy(&release).difference(&overdue).copied().collect();
    plan.release.retain(|shard| !draining.contains(shard));
    plan.renew.extend(&draining);
    let stopped: Vec<u32> = plan.forget.iter().chain(&plan.release).copied().collect();
    // No longer held before no longer draining, so that no pass starts in between.
    ownership.update(&[], &stopped);
    ownership.drain(&draining, now);
    counts
        .losses
        .fetch_add(stopped.len() as u64, Ordering::Relaxed);
    for shard in &plan.release {
        if let Some(lease) = held.get(shard) {
            // Not let go in the database, it expires there on its own.
            if let Err(error) =
                journal.release_lease(&cluster::lease_name(*shard), &me, lease.token)
            {
                tracing::warn!(%error, shard, "could not let go of a shard's lease");
            }
        }
    }
    let (mut granted, mut refused) = (Vec::new(), Vec::new());
    for shard in plan.renew.iter().chain(&plan.acquire) {
        let asked = clock.now();
        let answer = journal.acquire_lease(&cluster::lease_name(*shard), &me, LEASE_TTL);
        // A failed call changes nothing: a held shard stays held until it runs out here.
        let lease = match answer {
            Ok(lease) => lease,
            Err(error) => {
                tracing::warn!(%error, shard, "could not renew or acquire a shard's lease");
                continue;
            }
        };
        let Some(lease) = lease else {
            if held.contains_key(shard) {
                counts.losses.fetch_add(1, Ordering::Relaxed);
            }
            refused.push(*shard);
            continue;
        };
        match held.get(shard) {
            Some(before) if before.token == lease.token => &counts.renewals,
            _ if lease.token > 1 => {
                counts.acquisitions.fetch_add(1, Ordering::Relaxed);
                &counts.takeovers
            }
            _ => &counts.acquisitions,
        }
        .fetch_add(1, Ordering::Relaxed);
        granted.push((*shard, Held::granted(&lease, asked)));
    }
    ownership.update(&granted, &refused);
    Ok(())
}

/// How often resident actors are asked whether they are idle, in real time.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// At each tick, has every resident actor idle for `--actor-idle-seconds` of the service clock
/// let itself go.
fn let_go_of_idle_actors(supervisor: Supervisor, mut ticker: Ticker) {
    actix_web::rt::spawn(async move {
        while let Some(_tick) = ticker.next().await {
            supervisor.let_go_of_idle().await;
        }
    });
}

/// Forgets rate-limit buckets that refilled, at each tick (a minute), so the maps stay bounded.
fn forget_idle_limits(state: web::Data<AppState>, mut ticker: Ticker) {
    actix_web::rt::spawn(async move {
        while let Some(_tick) = ticker.next().await {
            state.limits.source.forget_idle();
            state.limits.webhook.forget_idle();
        }
    });
}
