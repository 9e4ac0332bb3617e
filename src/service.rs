//! Starting the service: the journal, the operator token, the supervisor, the HTTP server, and
//! the replay of the journal into the index (after which the service is ready).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Service as _;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use flotilla_actors::clock::Clock;
use flotilla_actors::domain::AlarmId;
use flotilla_actors::supervisor::{self, Supervisor};
use flotilla_journal::{Journal, Record};

use crate::alarms::Evaluator;
use crate::api::{self, AppState};
use crate::converger::Converger;
use crate::index::Index;
use crate::providers::Providers;
use crate::ratelimit::{Limit, WebhookLimits};
use crate::settings::Settings;
use crate::telemetry::Telemetry;
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
    let journal = Journal::open(&settings.data_dir).with_context(|| {
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
            ..supervisor::Config::default()
        },
    );
    let index = Arc::new(Index::default());
    let evaluator = Arc::new(Evaluator::new(supervisor.clone()));
    let telemetry = Arc::new(Telemetry::new(supervisor.clone(), index.clone()));
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

    replay_into_index(journal, index, evaluator.clone(), clock, ready.clone());
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

/// Builds the index and the alarms' evaluator on a thread of its own: from the last checkpoint
/// (if it still matches the journal) and the records after it, or from the whole journal; then
/// saves a checkpoint at the head and marks the service ready. Nothing appends before ready
/// (the API, the evaluator and the converger wait for it), so the checkpoint is exact.
fn replay_into_index(
    journal: Journal,
    index: Arc<Index>,
    evaluator: Arc<Evaluator>,
    clock: Arc<dyn Clock>,
    ready: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let now = clock.now();
        let load = || -> anyhow::Result<(u64, u64)> {
            let mut from = 1;
            if let Some((head, bytes)) = journal.load_checkpoint(CHECKPOINT)? {
                match serde_json::from_slice::<Checkpoint>(&bytes) {
                    Ok(checkpoint) => {
                        index.restore(checkpoint.index);
                        evaluator.restore(checkpoint.alarms, now);
                        from = head.seq + 1;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "ignoring a checkpoint that does not decode")
                    }
                }
            }
            // Reading and decoding dominate, and are spread over the cores; the few records
            // that matter are applied here, in order.
            let is_alarm = |record: &Record| record.stream.starts_with(AlarmId::PREFIX);
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
            let read = journal.scan(
                from,
                workers,
                |record| Index::wants(record) || is_alarm(record),
                |record| -> anyhow::Result<()> {
                    index.note_record(&record)?;
                    if is_alarm(&record) {
                        evaluator.note_record(&record, now)?;
                    }
                    Ok(())
                },
            )?;
            let checkpoint = Checkpoint {
                index: index.save(),
                alarms: evaluator.save(),
            };
            journal.save_checkpoint(
                CHECKPOINT,
                journal.head()?,
                &serde_json::to_vec(&checkpoint)?,
            )?;
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
