//! The service's settings: flags, `FLOTILLA_<NAME>` environment variables and an optional TOML
//! file, in that order of precedence, then the defaults.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

/// `flotilla serve` flags. Each is also a key of the TOML file and an environment variable.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "FLOTILLA_LISTEN")]
    pub listen: Option<String>,
    /// Data directory holding the journal (sled) and operator.token [default: ./flotilla-data].
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep the journal in this PostgreSQL database (postgres://user:password@host:port/db)
    /// instead of sled in the data directory, which then holds only operator.token.
    #[arg(long, env = "FLOTILLA_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,
    /// This node's id among the nodes of one database, shown as a group's owner
    /// [default: <host name>:<port>].
    #[arg(long, env = "FLOTILLA_NODE_ID")]
    pub node_id: Option<String>,
    /// Let several nodes serve the --database-url database together, each group owned by one
    /// at a time through a lease (SPEC 9). Metric samples are evaluated by the group's owner
    /// only: send them to every node (a remote_write per node) [default: off, one serve per
    /// database].
    #[arg(long, env = "FLOTILLA_CLUSTER")]
    pub cluster: bool,
    /// TOML file with any of these settings (keys as the flags, with underscores).
    #[arg(long, env = "FLOTILLA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Base of the webhook URLs handed out [default: http://<listen address>].
    #[arg(long, env = "FLOTILLA_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Allowed skew of a webhook call's timestamp, seconds [default: 300].
    #[arg(long, env = "FLOTILLA_WEBHOOK_TOLERANCE_SECONDS")]
    pub webhook_tolerance_seconds: Option<u32>,
    /// Webhook calls a second per webhook, a token bucket of as many; 0 is off [default: 50].
    #[arg(long, env = "FLOTILLA_WEBHOOK_RATE_LIMIT")]
    pub webhook_rate_limit: Option<u32>,
    /// Webhook calls a second per source address; 0 is off [default: 1000].
    #[arg(long, env = "FLOTILLA_SOURCE_RATE_LIMIT")]
    pub source_rate_limit: Option<u32>,
    /// Most unexpired nonces one webhook remembers; when full, calls get 429 [default: 10000].
    #[arg(long, env = "FLOTILLA_WEBHOOK_NONCE_WINDOW")]
    pub webhook_nonce_window: Option<usize>,
    /// Most metric series (group and metric) holding samples; past it, new ones get 429
    /// [default: 1000000].
    #[arg(long, env = "FLOTILLA_MAX_SERIES")]
    pub max_series: Option<usize>,
    /// Largest webhook body, bytes [default: 65536].
    #[arg(long, env = "FLOTILLA_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Largest metrics body, bytes [default: 2097152, SPEC 3's limit for any body].
    #[arg(long, env = "FLOTILLA_METRICS_BODY_LIMIT")]
    pub metrics_body_limit: Option<usize>,
    /// Milliseconds of real time a request's body has to arrive once its head has; a slower
    /// one gets 408 [default: 10000].
    #[arg(long, env = "FLOTILLA_BODY_TIMEOUT_MS")]
    pub body_timeout_ms: Option<u64>,
    /// Connections one source address may hold open at once; more get 429; 0 is no limit
    /// [default: 256].
    #[arg(long, env = "FLOTILLA_MAX_CONNECTIONS_PER_SOURCE")]
    pub max_connections_per_source: Option<usize>,
    /// How often alarms are evaluated, milliseconds of real time [default: 1000].
    #[arg(long, env = "FLOTILLA_ALARM_TICK_MS")]
    pub alarm_tick_ms: Option<u64>,
    /// A Prometheus whose `/api/v1/query` alarms and target-tracking policies with a `query`
    /// read (SPEC 5.2); without it, a `query` is refused.
    #[arg(long, env = "FLOTILLA_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Seconds after a period closes before it is evaluated, so that samples that arrive a
    /// little late (Prometheus batches its writes) still count [default: 2].
    #[arg(long, env = "FLOTILLA_EVALUATION_DELAY_SECONDS")]
    pub evaluation_delay_seconds: Option<u32>,
    /// HTTP worker threads [default: 2].
    #[arg(long, env = "FLOTILLA_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// Threads hosting every object's actor [default: half the machine's cores, at least 1;
    /// at least 2 with --database-url].
    #[arg(long, env = "FLOTILLA_ACTOR_THREADS")]
    pub actor_threads: Option<usize>,
    /// How often groups are converged to their capacity, milliseconds of real time
    /// [default: 1000].
    #[arg(long, env = "FLOTILLA_CONVERGE_TICK_MS")]
    pub converge_tick_ms: Option<u64>,
    /// Seconds of the service clock an object's actor stays in memory without a message; its
    /// state comes back from the journal on the next one. 0 keeps every actor [default: 600].
    #[arg(long, env = "FLOTILLA_ACTOR_IDLE_SECONDS")]
    pub actor_idle_seconds: Option<u32>,
    /// Memory for sled's page cache, MiB [default: 16]. The journal is mostly appended to and
    /// read in order, so a small cache serves it; more speeds up actors rebuilt on a large journal.
    /// sled holds about twice its budget: 64 MiB cost 100k servers 33 MiB more than 16 did.
    #[arg(long, env = "FLOTILLA_JOURNAL_CACHE_MB")]
    pub journal_cache_mb: Option<u64>,
    /// How often the checkpoint of the index and the alarms catches up with the journal's head,
    /// milliseconds of real time; a start replays only what follows it [default: 60000].
    #[arg(long, env = "FLOTILLA_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// The `whsec_` secret signing requests to `http` orchestrators whose launch configuration
    /// has no `secret`.
    #[arg(long, env = "FLOTILLA_PROVIDER_HTTP_SECRET", hide_env_values = true)]
    pub provider_http_secret: Option<String>,
    /// Let tenants use the `process` provider, which runs their commands on this host as the
    /// service's user [default: off].
    #[arg(long, env = "FLOTILLA_ALLOW_PROCESS_PROVIDER")]
    pub allow_process_provider: bool,
    /// Threads making provider calls that may block (an orchestrator's round trip, a process's
    /// grace period), started as needed [default: 512].
    #[arg(long, env = "FLOTILLA_PROVIDER_THREADS")]
    pub provider_threads: Option<usize>,
    /// The most of those threads one tenant's calls hold at once, so that a tenant whose
    /// orchestrator never answers delays no other tenant's servers [default: 64].
    #[arg(long, env = "FLOTILLA_PROVIDER_THREADS_PER_TENANT")]
    pub provider_threads_per_tenant: Option<usize>,
}

/// The TOML file: the same keys, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<DatabaseUrl>,
    node_id: Option<String>,
    cluster: Option<bool>,
    public_url: Option<String>,
    webhook_tolerance_seconds: Option<u32>,
    webhook_rate_limit: Option<u32>,
    source_rate_limit: Option<u32>,
    webhook_nonce_window: Option<usize>,
    max_series: Option<usize>,
    body_limit: Option<usize>,
    metrics_body_limit: Option<usize>,
    body_timeout_ms: Option<u64>,
    max_connections_per_source: Option<usize>,
    alarm_tick_ms: Option<u64>,
    evaluation_delay_seconds: Option<u32>,
    prometheus_url: Option<String>,
    http_workers: Option<usize>,
    actor_threads: Option<usize>,
    converge_tick_ms: Option<u64>,
    checkpoint_interval_ms: Option<u64>,
    journal_cache_mb: Option<u64>,
    actor_idle_seconds: Option<u32>,
    provider_http_secret: Option<String>,
    allow_process_provider: Option<bool>,
    provider_threads: Option<usize>,
    provider_threads_per_tenant: Option<usize>,
}

/// Resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: String,
    /// Data directory holding the journal and `operator.token` (default `./flotilla-data`).
    pub data_dir: PathBuf,
    /// The PostgreSQL database holding the journal instead of the data directory, if set.
    pub database_url: Option<DatabaseUrl>,
    /// This node's id, if set; see [`Settings::node_id`].
    pub node_id: Option<String>,
    /// Whether several nodes may serve the database together (default false).
    pub cluster: bool,
    /// Base of the webhook URLs handed out, if set; see [`Settings::public_url`].
    pub public_url: Option<String>,
    /// Seconds of the service clock a webhook's timestamp may be off by (default 300).
    pub webhook_tolerance_seconds: u32,
    /// Webhook calls a second per webhook, with a burst of as many; 0 is off (default 50).
    pub webhook_rate_limit: u32,
    /// Webhook calls a second per source address; 0 is off (default 1000).
    pub source_rate_limit: u32,
    /// Most unexpired nonces one webhook remembers (default 10000).
    pub webhook_nonce_window: usize,
    /// Most metric series holding samples; past it, new ones get 429 (default 1000000).
    pub max_series: usize,
    /// Largest webhook body, bytes (default 65536).
    pub body_limit: usize,
    /// Largest metrics body, bytes (default 2097152, SPEC 3's limit for any body).
    pub metrics_body_limit: usize,
    /// Milliseconds of real time a request body has to arrive; at least 1 (default 10000).
    pub body_timeout_ms: u64,
    /// Connections one source address may hold open; 0 is no limit (default 256).
    pub max_connections_per_source: usize,
    /// Milliseconds of real time between alarm evaluations; at least 10 (default 1000).
    pub alarm_tick_ms: u64,
    /// Seconds after a period closes before it is evaluated; at most 600 (default 2).
    pub evaluation_delay_seconds: u32,
    /// The Prometheus queries are read from, if the operator set one.
    pub prometheus_url: Option<String>,
    /// HTTP worker threads; at least 1 (default 2).
    pub http_workers: usize,
    /// Threads hosting the objects' actors, if set; at least 1 (unset: see
    /// [`default_actor_threads`]).
    pub actor_threads: Option<usize>,
    /// Milliseconds of real time between convergence passes; at least 10 (default 1000).
    pub converge_tick_ms: u64,
    /// Milliseconds of real time between checkpoints; at least 10 (default 60000).
    pub checkpoint_interval_ms: u64,
    /// Sled's page cache, MiB; at least 1 (default 64).
    pub journal_cache_mb: u64,
    /// Seconds of the service clock an idle actor stays in memory; 0 keeps every actor
    /// (default 600).
    pub actor_idle_seconds: u32,
    /// The `whsec_` secret signing requests to `http` orchestrators whose launch configuration
    /// has none.
    pub provider_http_secret: Option<String>,
    /// Whether tenants may use the `process` provider (default false).
    pub allow_process_provider: bool,
    /// Threads making provider calls that may block; at least 1 (default 512).
    pub provider_threads: usize,
    /// The most of them one tenant's calls hold; 1 to `provider_threads` (default 64).
    pub provider_threads_per_tenant: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./flotilla-data"),
            database_url: None,
            node_id: None,
            cluster: false,
            public_url: None,
            webhook_tolerance_seconds: 300,
            webhook_rate_limit: 50,
            source_rate_limit: 1000,
            webhook_nonce_window: flotilla_actors::domain::nonce_window::DEFAULT_CAPACITY,
            max_series: flotilla_actors::domain::samples::DEFAULT_MAX_SERIES,
            body_limit: 64 * 1024,
            metrics_body_limit: crate::intake::MAX_BODY,
            body_timeout_ms: 10_000,
            max_connections_per_source: 256,
            alarm_tick_ms: 1000,
            evaluation_delay_seconds: 2,
            prometheus_url: None,
            http_workers: 2,
            actor_threads: None,
            converge_tick_ms: 1000,
            checkpoint_interval_ms: 60_000,
            journal_cache_mb: 16,
            actor_idle_seconds: 600,
            provider_http_secret: None,
            allow_process_provider: false,
            provider_threads: crate::providers::pool::DEFAULT_THREADS,
            provider_threads_per_tenant: crate::providers::pool::DEFAULT_PER_TENANT,
        }
    }
}

/// The actors' threads unless set: half the machine's cores, at least one; at least two on
/// PostgreSQL (`shared`), where an actor's reads of the journal (its state rebuilt, a snapshot's
/// anchor) are round trips that hold its thread, and with it every object on that thread.
///
/// Measured on 2 cores only: there, one thread beside the two HTTP workers and the journal's
/// writer took the load harness's webhooks to a median 0.318x of the bare handler against
/// 0.281x with two (7 alternating runs each, ahead in 6), at 6% less of the service's CPU a
/// call. Fewer threads than cores likely means fewer of a call's crossings wake a sleeping
/// thread. On PostgreSQL one thread did not pay: one node served a median 7,953 webhooks/s
/// (p99 10.74 ms) against 8,045 (9.73 ms) with two, in 5 alternating runs each. Whatever the
/// count, a group's objects share one thread ([`Placement`]).
///
/// [`Placement`]: flotilla_actors::supervisor::Placement
pub fn default_actor_threads(shared: bool) -> usize {
    let half = std::thread::available_parallelism().map_or(1, |cores| cores.get() / 2);
    half.max(if shared { 2 } else { 1 })
}

impl Settings {
    /// The actors' threads: as set, or [`default_actor_threads`].
    pub fn actor_threads(&self) -> usize {
        self.actor_threads
            .unwrap_or_else(|| default_actor_threads(self.database_url.is_some()))
    }

    /// Flags and environment over the file over the defaults.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let d = Settings::default();
        let public_url = args.public_url.clone().or(file.public_url);
        if let Some(url) = &public_url {
            // Every webhook URL handed out starts with it: one that is no URL would make each
            // of them unusable (a probe's `notaurl` gave `notaurl/v1/hooks/...`).
            let parsed = reqwest::Url::parse(url).ok().filter(|parsed| {
                matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some()
            });
            anyhow::ensure!(
                parsed.is_some(),
                "--public-url must be an http or https URL with a host, is {url:?}"
            );
        }
        let provider_threads = args
            .provider_threads
            .or(file.provider_threads)
            .unwrap_or(d.provider_threads)
            .max(1);
        Ok(Settings {
            listen: args.listen.clone().or(file.listen).unwrap_or(d.listen),
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(d.data_dir),
            database_url: args.database_url.clone().or(file.database_url),
            node_id: args.node_id.clone().or(file.node_id),
            cluster: args.cluster || file.cluster.unwrap_or(false),
            public_url,
            webhook_tolerance_seconds: args
                .webhook_tolerance_seconds
                .or(file.webhook_tolerance_seconds)
                .unwrap_or(d.webhook_tolerance_seconds),
            webhook_rate_limit: args
                .webhook_rate_limit
                .or(file.webhook_rate_limit)
                .unwrap_or(d.webhook_rate_limit),
            source_rate_limit: args
                .source_rate_limit
                .or(file.source_rate_limit)
                .unwrap_or(d.source_rate_limit),
            webhook_nonce_window: args
                .webhook_nonce_window
                .or(file.webhook_nonce_window)
                .unwrap_or(d.webhook_nonce_window),
            max_series: args.max_series.or(file.max_series).unwrap_or(d.max_series),
            body_limit: args.body_limit.or(file.body_limit).unwrap_or(d.body_limit),
            metrics_body_limit: args
                .metrics_body_limit
                .or(file.metrics_body_limit)
                .unwrap_or(d.metrics_body_limit),
            body_timeout_ms: args
                .body_timeout_ms
                .or(file.body_timeout_ms)
                .unwrap_or(d.body_timeout_ms)
                .max(1),
            max_connections_per_source: args
                .max_connections_per_source
                .or(file.max_connections_per_source)
                .unwrap_or(d.max_connections_per_source),
            prometheus_url: args.prometheus_url.clone().or(file.prometheus_url),
            evaluation_delay_seconds: args
                .evaluation_delay_seconds
                .or(file.evaluation_delay_seconds)
                .unwrap_or(d.evaluation_delay_seconds)
                .min(600),
            alarm_tick_ms: args
                .alarm_tick_ms
                .or(file.alarm_tick_ms)
                .unwrap_or(d.alarm_tick_ms)
                .max(10),
            http_workers: args
                .http_workers
                .or(file.http_workers)
                .unwrap_or(d.http_workers)
                .max(1),
            actor_threads: args
                .actor_threads
                .or(file.actor_threads)
                .map(|threads| threads.max(1)),
            converge_tick_ms: args
                .converge_tick_ms
                .or(file.converge_tick_ms)
                .unwrap_or(d.converge_tick_ms)
                .max(10),
            checkpoint_interval_ms: args
                .checkpoint_interval_ms
                .or(file.checkpoint_interval_ms)
                .unwrap_or(d.checkpoint_interval_ms)
                .max(10),
            journal_cache_mb: args
                .journal_cache_mb
                .or(file.journal_cache_mb)
                .unwrap_or(d.journal_cache_mb)
                .max(1),
            actor_idle_seconds: args
                .actor_idle_seconds
                .or(file.actor_idle_seconds)
                .unwrap_or(d.actor_idle_seconds),
            provider_http_secret: args
                .provider_http_secret
                .clone()
                .or(file.provider_http_secret),
            allow_process_provider: args.allow_process_provider
                || file.allow_process_provider.unwrap_or(false),
            provider_threads,
            provider_threads_per_tenant: args
                .provider_threads_per_tenant
                .or(file.provider_threads_per_tenant)
                .unwrap_or(d.provider_threads_per_tenant)
                .clamp(1, provider_threads),
        })
    }

    /// This node's id: the one set, or the host name and the port it listens on.
    pub fn node_id(&self, port: u16) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|host| host.trim().to_owned())
                .filter(|host| !host.is_empty())
                .unwrap_or_else(|| "flotilla".to_owned());
            format!("{host}:{port}")
        })
    }

    /// The base of webhook URLs.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

/// A PostgreSQL URL. It may hold a password, so it prints as `postgres://…` (its scheme only)
/// wherever settings are debugged or logged; [`DatabaseUrl::expose`] is for connecting.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL itself, to connect with. Never to be logged.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Ok(DatabaseUrl(url.to_owned()))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.0.split_once("://").map_or("?", |(scheme, _)| scheme);
        write!(f, "{scheme}://…")
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flotilla.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\nwebhook_rate_limit = 7\nactor_threads = 3\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            webhook_rate_limit: Some(9),
            ..ServeArgs::default()
        };
        let settings = Settings::resolve(&args).unwrap();
        assert_eq!(settings.listen, "0.0.0.0:9000");
        assert_eq!(settings.webhook_rate_limit, 9);
        assert_eq!(settings.source_rate_limit, 1000);
        assert_eq!(settings.actor_threads(), 3);
        let args = ServeArgs {
            config: Some(file),
            actor_threads: Some(0),
            ..ServeArgs::default()
        };
        assert_eq!(
            Settings::resolve(&args).unwrap().actor_threads(),
            1,
            "at least one"
        );
        // Unset: at least one, and at least two on PostgreSQL.
        assert!(Settings::default().actor_threads() >= 1);
        let shared = Settings {
            database_url: Some("postgres://flotilla@localhost/flotilla".parse().unwrap()),
            ..Settings::default()
        };
        assert!(shared.actor_threads() >= 2);
    }

    #[test]
    fn a_tenants_share_of_provider_threads_is_at_most_the_pool() {
        let with = |threads, per_tenant| {
            let settings = Settings::resolve(&ServeArgs {
                provider_threads: threads,
                provider_threads_per_tenant: per_tenant,
                ..ServeArgs::default()
            })
            .unwrap();
            (
                settings.provider_threads,
                settings.provider_threads_per_tenant,
            )
        };
        assert_eq!(with(None, None), (512, 64));
        assert_eq!(with(Some(8), None), (8, 8));
        assert_eq!(with(Some(8), Some(2)), (8, 2));
        assert_eq!(with(Some(0), Some(0)), (1, 1));
    }

    #[test]
    fn a_database_url_never_prints_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flotilla.toml");
        std::fs::write(&file, "database_url = \"postgres://app:s3cret@db/x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        };
        let settings = Settings::resolve(&args).unwrap();
        let url = settings.database_url.as_ref().unwrap();
        assert_eq!(url.expose(), "postgres://app:s3cret@db/x");
        let printed = format!("{settings:?} {args:?}");
        assert!(printed.contains("postgres://…"), "{printed}");
        assert!(!printed.contains("s3cret"), "{printed}");
    }

    #[test]
    fn a_public_url_must_be_an_http_url_with_a_host() {
        let with = |url: &str| {
            Settings::resolve(&ServeArgs {
                public_url: Some(url.into()),
                ..ServeArgs::default()
            })
        };
        assert!(with("https://flotilla.example").is_ok());
        assert!(with("http://10.0.0.5:8080/base").is_ok());
        for bad in ["notaurl", "ftp://flotilla.example", "http://", ""] {
            let error = with(bad).unwrap_err();
            assert!(
                format!("{error:#}").contains("--public-url"),
                "{bad}: {error:#}"
            );
        }
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flotilla.toml");
        std::fs::write(&file, "listen_port = 1\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        };
        let error = Settings::resolve(&args).unwrap_err();
        assert!(format!("{error:#}").contains("listen_port"), "{error:#}");
    }
}
