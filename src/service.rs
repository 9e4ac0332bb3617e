//! Starting the service: the journal, the operator token, the supervisor, the HTTP server, and
//! the replay of the journal into the index (after which the service is ready).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::Service as _;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use flotilla_actors::clock::Clock;
use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::AlarmId;
use flotilla_actors::supervisor::{self, Supervisor};
use flotilla_journal::{Head, Journal, Record};

use crate::alarms::Evaluator;
use crate::api::{self, AppState};
use crate::converger::Converger;
use crate::index::Index;
use crate::providers::Providers;
use crate::ratelimit::{Limit, WebhookLimits};
use crate::settings::Settings;
use crate::telemetry::{Recovery, Telemetry};
use crate::token;

/// A started service.
pub struct Service {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The operator token (read from or written to `operator.token`).
    pub operator_token: String,
    /// The running server; await it to serve until stopped.
    pub server: actix_web::dev::Server,
    /// Set once the journal is replayed.
    pub ready: Arc<AtomicBool>,
}

/// Starts the service on `settings` with `clock`. Must run inside an actix system.
pub fn start(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Service> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create {}", settings.data_dir.display()))?;
    let config = flotilla_journal::Config {
        cache_capacity: settings.journal_cache_mb << 20,
        ..flotilla_journal::Config::default()
    };
    let journal = Journal::open_with(&settings.data_dir, config).with_context(|| {
        format!(
            "cannot open the journal in {} (is another flotilla serving it?)",
            settings.data_dir.display()
        )
    })?;
    let (operator_token, created) = token::operator_token(&settings.data_dir)?;
    let token_path = settings.data_dir.join("operator.token");
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

    let supervisor = Supervisor::start(
        journal.clone(),
        clock.clone(),
        supervisor::Config {
            webhook_tolerance_seconds: settings.webhook_tolerance_seconds,
            nonce_window_capacity: settings.webhook_nonce_window,
            idle_after_seconds: (settings.actor_idle_seconds > 0)
                .then_some(settings.actor_idle_seconds),
            ..supervisor::Config::default()
        },
    );
    let index = Arc::new(Index::default());
    let evaluator = Arc::new(Evaluator::new(supervisor.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    let providers = Arc::new(Providers::new(
        clock.clone(),
        settings.provider_http_secret.clone(),
    ));
    let converger = Arc::new(Converger::new(
        supervisor.clone(),
        index.clone(),
        providers,
        format!("{}/v1/metrics", settings.public_url().trim_end_matches('/')),
    ));
    // A weak handle: the converger holds the supervisor, which must not hold it back.
    let watching = Arc::downgrade(&converger);
    supervisor.on_change(move |id| {
        if let Some(converger) = watching.upgrade() {
            converger.changed(id);
        }
    });
    let recovery = Arc::new(Recovery::default());
    let telemetry = Arc::new(Telemetry::new(
        supervisor.clone(),
        index.clone(),
        recovery.clone(),
        converger.clone(),
    ));
    let state = web::Data::new(AppState {
        supervisor,
        index: index.clone(),
        operator_token_hash: token::hash(&operator_token),
        ready: ready.clone(),
        evaluator: evaluator.clone(),
        converger: converger.clone(),
        limits: WebhookLimits {
            source: Limit::new(settings.source_rate_limit, clock.clone()),
            webhook: Limit::new(settings.webhook_rate_limit, clock.clone()),
        },
        settings: settings.clone(),
        telemetry: telemetry.clone(),
    });

    let checkpointer = Arc::new(Mutex::new(None));
    replay_into_index(
        journal,
        index,
        evaluator.clone(),
        clock,
        checkpointer.clone(),
        recovery.clone(),
        ready.clone(),
    );
    run_checkpointer(
        checkpointer,
        Duration::from_millis(settings.checkpoint_interval_ms),
        recovery,
    );
    evaluator.run(Duration::from_millis(settings.alarm_tick_ms), ready.clone());
    converger.run(
        Duration::from_millis(settings.converge_tick_ms),
        ready.clone(),
    );
    forget_idle_limits(state.clone());

    let server = HttpServer::new({
        let state = state.clone();
        move || {
            let telemetry = telemetry.clone();
            App::new()
                .app_data(state.clone())
                .configure(api::routes)
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
    .listen(listener)?
    .run();
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), "serving");
    Ok(Service {
        addr,
        operator_token,
        server,
        ready,
    })
}

/// The name of the service's checkpoint in the journal.
const CHECKPOINT: &str = "service";

/// What a checkpoint holds: the index and the alarms, as of its head.
#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    index: crate::index::Saved,
    alarms: Vec<(
        AlarmId,
        flotilla_actors::domain::alarm::AlarmDefinition,
        flotilla_actors::domain::alarm::AlarmState,
    )>,
}

/// Takes records `from..=to` into `index` and `alarms`: what a start replays, and what the
/// checkpointer catches up on. Reading and decoding dominate and are spread over `workers`
/// threads; the few records that matter are applied on the calling one, in order.
fn replay(
    journal: &Journal,
    from: u64,
    to: u64,
    workers: usize,
    index: &Index,
    alarms: &Evaluator,
    now: Timestamp,
) -> anyhow::Result<u64> {
    let is_alarm = |record: &Record| record.stream.starts_with(AlarmId::PREFIX);
    journal.scan(
        from,
        to,
        workers,
        |record| Index::wants(record) || is_alarm(record),
        |record| -> anyhow::Result<()> {
            index.note_record(&record)?;
            if is_alarm(&record) {
                alarms.note_record(&record, now)?;
            }
            Ok(())
        },
    )
}

/// Restores the last checkpoint into `index` and `alarms`, if there is one that still matches the
/// journal and decodes; answers the first sequence number it does not cover.
fn restore_checkpoint(
    journal: &Journal,
    index: &Index,
    alarms: &Evaluator,
    now: Timestamp,
) -> anyhow::Result<u64> {
    let Some((head, bytes)) = journal.load_checkpoint(CHECKPOINT)? else {
        return Ok(1);
    };
    match serde_json::from_slice::<Checkpoint>(&bytes) {
        Ok(checkpoint) => {
            index.restore(checkpoint.index);
            alarms.restore(checkpoint.alarms, now);
            Ok(head.seq + 1)
        }
        Err(error) => {
            tracing::warn!(%error, "ignoring a checkpoint that does not decode");
            Ok(1)
        }
    }
}

/// Saves `index` and `alarms` as the checkpoint at `head` (which they must reflect exactly).
fn save_checkpoint(
    journal: &Journal,
    head: Head,
    index: &Index,
    alarms: &Evaluator,
) -> anyhow::Result<()> {
    let checkpoint = Checkpoint {
        index: index.save(),
        alarms: alarms.save(),
    };
    journal.save_checkpoint(CHECKPOINT, head, &serde_json::to_vec(&checkpoint)?)?;
    Ok(())
}

/// Builds the index and the alarms' evaluator on a thread of its own: from the last checkpoint
/// (if it still matches the journal) and the records after it, or from the whole journal; then
/// saves a checkpoint at the head, starts the checkpointer there, and marks the service ready.
/// Nothing appends before ready (the API, the evaluator and the converger wait for it), so that
/// checkpoint is exact.
fn replay_into_index(
    journal: Journal,
    index: Arc<Index>,
    evaluator: Arc<Evaluator>,
    clock: Arc<dyn Clock>,
    checkpointer: Arc<Mutex<Option<Checkpointer>>>,
    recovery: Arc<Recovery>,
    ready: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let now = clock.now();
        let load = || -> anyhow::Result<(u64, u64)> {
            let from = restore_checkpoint(&journal, &index, &evaluator, now)?;
            let head = journal.head()?;
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
            let read = replay(&journal, from, head.seq, workers, &index, &evaluator, now)?;
            save_checkpoint(&journal, head, &index, &evaluator)?;
            *lock(&checkpointer) = Some(Checkpointer {
                journal: journal.clone(),
                at: head,
                supervisor: evaluator.supervisor().clone(),
                clock: clock.clone(),
            });
            recovery.replayed_at_start.store(read, Ordering::Relaxed);
            recovery.checkpoint_seq.store(head.seq, Ordering::Relaxed);
            Ok((from - 1, read))
        };
        match load() {
            Ok((checkpoint_seq, records)) => {
                ready.store(true, Ordering::Release);
                tracing::info!(
                    checkpoint_seq,
                    records,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "journal replayed; ready"
                );
            }
            Err(error) => tracing::error!(%error, "the journal cannot be replayed; not ready"),
        }
    });
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps the checkpoint close to the journal's head while the service runs, so that a start
/// replays minutes of records, not everything since the last start.
///
/// The live index cannot be saved as it stands: handlers update it after their appends, so it is
/// never exactly at one sequence number while the service runs. Each catch-up instead restores
/// the last checkpoint into a copy of the index and of the alarms, takes in the records after
/// it, exactly as a start replays them, and saves the copy at the head it reached. The copy
/// lives only while catching up: holding one for good would cost as much memory again as the
/// index and the alarms.
struct Checkpointer {
    journal: Journal,
    at: Head,
    supervisor: Supervisor,
    clock: Arc<dyn Clock>,
}

impl Checkpointer {
    /// Takes in the records after the last checkpoint, on one thread (the service is serving),
    /// and saves the checkpoint at the head it reached. Answers that head.
    fn catch_up(&mut self) -> anyhow::Result<Head> {
        let head = self.journal.head()?;
        if head.seq == self.at.seq {
            return Ok(self.at);
        }
        let now = self.clock.now();
        let index = Index::default();
        let alarms = Evaluator::new(self.supervisor.clone());
        let from = restore_checkpoint(&self.journal, &index, &alarms, now)?;
        replay(&self.journal, from, head.seq, 1, &index, &alarms, now)?;
        save_checkpoint(&self.journal, head, &index, &alarms)?;
        self.at = head;
        Ok(head)
    }
}

/// Every `interval`, once the start's replay has started the checkpointer, catches the
/// checkpoint up on a blocking thread, and publishes where it is. Stops with the actix system;
/// the checkpointer (and its journal handle) goes with it.
fn run_checkpointer(
    checkpointer: Arc<Mutex<Option<Checkpointer>>>,
    interval: Duration,
    recovery: Arc<Recovery>,
) {
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(mut keeper) = lock(&checkpointer).take() else {
                continue;
            };
            let caught_up = actix_web::rt::task::spawn_blocking(move || {
                let head = keeper.catch_up();
                (keeper, head)
            })
            .await;
            match caught_up {
                Ok((keeper, head)) => {
                    match head {
                        Ok(head) => recovery.checkpoint_seq.store(head.seq, Ordering::Relaxed),
                        Err(error) => tracing::warn!(%error, "checkpoint not saved"),
                    }
                    *lock(&checkpointer) = Some(keeper);
                }
                Err(error) => tracing::error!(%error, "the checkpointer failed; checkpoints stop"),
            }
        }
    });
}

/// Forgets rate-limit buckets that refilled, once a minute, so the maps stay bounded.
fn forget_idle_limits(state: web::Data<AppState>) {
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            state.limits.source.forget_idle();
            state.limits.webhook.forget_idle();
        }
    });
}
