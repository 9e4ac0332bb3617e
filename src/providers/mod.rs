//! Providers start and delete a group's servers (SPEC 6); the launch configuration's `provider`
//! picks one.
//!
//! - [`process`]: each server is a local child process.
//! - [`http`]: an external orchestrator is asked, with signed requests.
//! - [`simulated`]: in-memory servers with a start latency and a failure rate, on the clock.
//!
//! Every call may block (a process's grace period, an HTTP round trip), so the converger makes
//! them on the [`pool`]'s threads, shared fairly among tenants, unless [`Provider::blocks`] says
//! otherwise. Each call gets the
//! group's launch configuration, so that a provider holds no per-group state and a restart of
//! Flotilla loses nothing a handle does not say.

use std::sync::Arc;

use flotilla_actors::clock::Clock;
use flotilla_actors::domain::GroupId;
use serde_json::Value;

pub mod http;
pub mod pool;
pub mod process;
pub mod simulated;

/// Why a provider call did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ProviderError {
    /// Why, in lowercase prose (it is recorded in the server's `server_failed` event).
    pub reason: String,
    /// Whether the provider itself could not be reached (an orchestrator that timed out,
    /// refused the connection or answered an error of its own): any other call made now would
    /// likely fail the same way, so a pass makes no more.
    pub unreachable: bool,
}

impl ProviderError {
    /// A refusal of this call.
    pub fn new(reason: impl Into<String>) -> ProviderError {
        ProviderError {
            reason: reason.into(),
            unreachable: false,
        }
    }

    /// The provider could not be reached.
    pub fn unreachable(reason: impl Into<String>) -> ProviderError {
        ProviderError {
            reason: reason.into(),
            unreachable: true,
        }
    }
}

/// What a provider says of a launched server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It runs.
    Running,
    /// It is gone (exited, crashed, deleted behind our back).
    Exited,
    /// Not known yet (starting, or an answer that says neither).
    Unknown,
    /// The provider could not be reached (an orchestrator that timed out, refused the
    /// connection or answered 5xx, after its retries): a pass asks it about no more servers.
    Unreachable,
}

/// Everything a launch needs.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The group.
    pub group_id: GroupId,
    /// The server (its slot).
    pub server_id: String,
    /// The group's launch configuration.
    pub config: Value,
    /// Where the server posts its samples: the public URL + `/v1/metrics`.
    pub metrics_url: String,
    /// The metrics token minted for this launch (only its hash is journaled).
    pub metrics_token: String,
    /// The lease of the group's shard this node launches under, on a shared database (SPEC 9);
    /// the `http` provider sends its token so an orchestrator can refuse a stale node.
    pub fence: Option<flotilla_journal::Fence>,
}

impl Launch {
    /// The environment every server receives.
    pub fn flotilla_env(&self) -> [(&'static str, String); 4] {
        [
            ("FLOTILLA_GROUP_ID", self.group_id.to_string()),
            ("FLOTILLA_SERVER_ID", self.server_id.clone()),
            ("FLOTILLA_METRICS_URL", self.metrics_url.clone()),
            ("FLOTILLA_METRICS_TOKEN", self.metrics_token.clone()),
        ]
    }
}

/// Starts, deletes and watches servers of one kind.
pub trait Provider: Send + Sync {
    /// Starts server `launch.server_id`; answers its handle (a JSON object).
    fn launch(&self, launch: &Launch) -> Result<Value, ProviderError>;
    /// Deletes the server behind `handle`; a server already gone is deleted.
    fn delete(&self, config: &Value, handle: &Value) -> Result<(), ProviderError>;
    /// What became of the server behind `handle`.
    fn status(&self, config: &Value, handle: &Value) -> Status;
    /// How long after a round of a group's sweep began the next may begin: each active server
    /// of the group is asked about at most once in it (pending ones at every pass). An
    /// orchestrator's API is rate-limited; a local process or a simulated server is not.
    fn status_interval(&self, _config: &Value) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Whether calls may block (then they run on the [`pool`]'s threads).
    fn blocks(&self) -> bool {
        true
    }
}

/// One provider of each kind.
pub struct Providers {
    /// `process`.
    pub process: process::ProcessProvider,
    /// `http`.
    pub http: http::HttpProvider,
    /// `simulated`.
    pub simulated: simulated::SimulatedProvider,
}

impl Providers {
    /// The providers, on `clock`; `http_secret` signs orchestrator requests whose launch
    /// configuration has no `secret`.
    pub fn new(clock: Arc<dyn Clock>, http_secret: Option<String>) -> Providers {
        Providers {
            process: process::ProcessProvider::default(),
            http: http::HttpProvider::new(clock.clone(), http_secret),
            simulated: simulated::SimulatedProvider::new(clock),
        }
    }

    /// The provider `config` names, if it names one.
    pub fn of(&self, config: &Value) -> Option<&dyn Provider> {
        match config.get("provider").and_then(Value::as_str)? {
            "process" => Some(&self.process),
            "http" => Some(&self.http),
            "simulated" => Some(&self.simulated),
            _ => None,
        }
    }
}
