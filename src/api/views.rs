//! What the API shows of each object (never a secret or a token hash).

use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::alarm::Alarm;
use flotilla_actors::domain::group::Group;
use flotilla_actors::domain::policy::Policy;
use flotilla_actors::domain::server::{Server, ServerState};
use flotilla_actors::domain::webhook::Webhook;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::audit::format_millis;

fn time(at: Timestamp) -> String {
    format_millis(at.as_millis())
}

/// A group.
#[derive(Debug, Serialize)]
pub struct GroupView {
    pub id: String,
    pub name: String,
    pub min_size: u32,
    pub max_size: u32,
    pub desired_capacity: u32,
    pub cooldown_seconds: u32,
    pub launch: Value,
    pub metadata: Map<String, Value>,
    pub paused: bool,
    /// Servers running.
    pub active: u32,
    /// Servers starting.
    pub pending: u32,
    pub cooldown_until: Option<String>,
    pub created_at: String,
}

impl From<&Group> for GroupView {
    fn from(g: &Group) -> Self {
        GroupView {
            id: g.id.to_string(),
            name: g.name.clone(),
            min_size: g.min_size,
            max_size: g.max_size,
            desired_capacity: g.desired_capacity,
            cooldown_seconds: g.cooldown_seconds,
            launch: g.launch.clone(),
            metadata: g.metadata.clone(),
            paused: g.paused,
            active: g.count(ServerState::Active),
            pending: g.count(ServerState::Pending),
            cooldown_until: g.cooldown_until.map(time),
            created_at: time(g.created_at),
        }
    }
}

/// A server of a group.
#[derive(Debug, Serialize)]
pub struct ServerView {
    pub id: String,
    pub group_id: String,
    pub state: ServerState,
    /// The provider's handle (`{"pid": .., "start_time": ..}` for `process`); null until launched.
    pub provider: Value,
    pub launched_at: String,
    /// How many times this server's slot failed.
    pub failures: u32,
    /// Why it failed last.
    pub last_failure: Option<String>,
    pub last_failure_at: Option<String>,
}

impl ServerView {
    /// The view of server `s` of `group`.
    pub fn new(group: &Group, s: &Server) -> Self {
        ServerView {
            id: s.id.clone(),
            group_id: group.id.to_string(),
            state: s.state,
            provider: s.provider.clone(),
            launched_at: time(s.launched_at),
            failures: s.failures,
            last_failure: s.last_failure.as_ref().map(|(why, _)| why.clone()),
            last_failure_at: s.last_failure.as_ref().map(|(_, at)| time(*at)),
        }
    }
}

/// A policy.
#[derive(Debug, Serialize)]
pub struct PolicyView {
    pub id: String,
    pub group_id: String,
    pub name: String,
    pub adjustment_type: Value,
    pub adjustment: i64,
    pub min_adjustment_step: Option<u32>,
    pub cooldown_seconds: Option<u32>,
    pub created_at: String,
}

impl From<&Policy> for PolicyView {
    fn from(p: &Policy) -> Self {
        PolicyView {
            id: p.id.to_string(),
            group_id: p.group_id.to_string(),
            name: p.definition.name.clone(),
            adjustment_type: serde_json::to_value(p.definition.adjustment_type)
                .unwrap_or(Value::Null),
            adjustment: p.definition.adjustment,
            min_adjustment_step: p.definition.min_adjustment_step,
            cooldown_seconds: p.definition.cooldown_seconds,
            created_at: time(p.created_at),
        }
    }
}

/// A webhook; `secret` only in the answers to create and rotate.
#[derive(Debug, Serialize)]
pub struct WebhookView {
    pub id: String,
    pub name: String,
    pub url: String,
    pub policy_id: String,
    pub group_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// When the previous secret stops being valid, during a rotation's grace.
    pub previous_secret_valid_until: Option<String>,
    pub created_at: String,
}

impl WebhookView {
    /// The view of `w`, reachable at `public_url`.
    pub fn new(w: &Webhook, public_url: &str, with_secret: bool) -> Self {
        WebhookView {
            id: w.id.to_string(),
            name: w.name.clone(),
            url: format!("{}/v1/hooks/{}", public_url.trim_end_matches('/'), w.id),
            policy_id: w.policy_id.to_string(),
            group_id: w.group_id.to_string(),
            secret: with_secret.then(|| w.secret.to_whsec()),
            previous_secret_valid_until: w.previous.as_ref().map(|p| time(p.valid_until)),
            created_at: time(w.created_at),
        }
    }
}

/// An alarm: its definition, state and reason.
#[derive(Debug, Serialize)]
pub struct AlarmView {
    #[serde(flatten)]
    pub alarm: Value,
    pub state_changed_at: String,
    pub created_at: String,
}

impl From<&Alarm> for AlarmView {
    fn from(a: &Alarm) -> Self {
        let mut alarm = serde_json::to_value(a).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut alarm {
            map.remove("deleted");
            map.remove("tenant_id");
            map.remove("state_changed_at");
            map.remove("created_at");
        }
        AlarmView {
            alarm,
            state_changed_at: time(a.state_changed_at),
            created_at: time(a.created_at),
        }
    }
}
