//! Every object's state as of a point in the journal, folded with the same `apply` functions the
//! actors use (for `flotilla replay` and audits).

use std::collections::BTreeMap;

use flotilla_journal::Record;
use serde::Serialize;
use serde_json::Value;

use crate::aggregate::{
    Aggregate, Alarms, Groups, Policies, Receivers, Schedules, Tenants, Webhooks,
};
use crate::domain::{DomainEvent, Kind};
use crate::error::Error;

/// Where a replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// After the record with this sequence number.
    Seq(u64),
    /// Before the first record stamped later than this (Unix milliseconds): a prefix of the
    /// chain, so the states are ones that really existed together.
    Time(i64),
    /// The whole journal.
    End,
}

impl Until {
    fn admits(self, record: &Record) -> bool {
        match self {
            Until::Seq(seq) => record.seq <= seq,
            Until::Time(millis) => record.timestamp_ms <= millis,
            Until::End => true,
        }
    }
}

/// The states of every object, by kind and id.
#[derive(Debug, Default, Serialize)]
pub struct World {
    /// The last record folded in (0: none).
    pub seq: u64,
    /// Its timestamp, Unix milliseconds.
    pub timestamp_ms: Option<i64>,
    /// Tenants by id.
    pub tenants: BTreeMap<String, Value>,
    /// Groups by id.
    pub groups: BTreeMap<String, Value>,
    /// Policies by id.
    pub policies: BTreeMap<String, Value>,
    /// Webhooks by id, secrets redacted.
    pub webhooks: BTreeMap<String, Value>,
    /// Alarms by id.
    pub alarms: BTreeMap<String, Value>,
    /// Scheduled actions by id.
    pub schedules: BTreeMap<String, Value>,
    /// Alertmanager receivers by id (token hashes are not shown).
    pub receivers: BTreeMap<String, Value>,
}

#[derive(Default)]
struct States {
    tenants: BTreeMap<String, <Tenants as Aggregate>::State>,
    groups: BTreeMap<String, <Groups as Aggregate>::State>,
    policies: BTreeMap<String, <Policies as Aggregate>::State>,
    webhooks: BTreeMap<String, <Webhooks as Aggregate>::State>,
    alarms: BTreeMap<String, <Alarms as Aggregate>::State>,
    schedules: BTreeMap<String, <Schedules as Aggregate>::State>,
    receivers: BTreeMap<String, <Receivers as Aggregate>::State>,
}

fn fold<A: Aggregate>(
    states: &mut BTreeMap<String, A::State>,
    record: &Record,
) -> Result<(), Error> {
    let event: A::Event = record.decode(A::Event::SCHEMA)?;
    let state = states.remove(&record.stream).unwrap_or_default();
    states.insert(record.stream.clone(), A::apply(state, &event));
    Ok(())
}

fn render<S: Serialize>(states: BTreeMap<String, S>) -> Result<BTreeMap<String, Value>, Error> {
    states
        .into_iter()
        .map(|(id, state)| {
            let value = serde_json::to_value(state).map_err(|e| {
                Error::Journal(flotilla_journal::Error::InvalidEvent(e.to_string()))
            })?;
            Ok((id, value))
        })
        .filter(|entry| !matches!(entry, Ok((_, Value::Null))))
        .collect()
}

/// Folds `records` (a journal's, from its start) up to `until`.
pub fn replay(
    records: impl Iterator<Item = Result<Record, flotilla_journal::Error>>,
    until: Until,
) -> Result<World, Error> {
    let mut states = States::default();
    let mut world = World::default();
    for record in records {
        let record = record?;
        if !until.admits(&record) {
            break;
        }
        let stream = record.stream.as_str();
        match Kind::of(stream) {
            Some(Kind::Group) => fold::<Groups>(&mut states.groups, &record)?,
            Some(Kind::Policy) => fold::<Policies>(&mut states.policies, &record)?,
            Some(Kind::Webhook) => fold::<Webhooks>(&mut states.webhooks, &record)?,
            Some(Kind::Alarm) => fold::<Alarms>(&mut states.alarms, &record)?,
            Some(Kind::Tenant) => fold::<Tenants>(&mut states.tenants, &record)?,
            Some(Kind::Schedule) => fold::<Schedules>(&mut states.schedules, &record)?,
            Some(Kind::Receiver) => fold::<Receivers>(&mut states.receivers, &record)?,
            None => tracing::debug!(seq = record.seq, stream, "not an object stream; skipped"),
        }
        world.seq = record.seq;
        world.timestamp_ms = Some(record.timestamp_ms);
    }
    world.tenants = render(states.tenants)?;
    world.groups = render(states.groups)?;
    // An `http` launch's signing secret.
    for group in world.groups.values_mut() {
        redact_secrets(group);
    }
    world.policies = render(states.policies)?;
    world.webhooks = render(states.webhooks)?;
    for webhook in world.webhooks.values_mut() {
        redact_secrets(webhook);
    }
    world.alarms = render(states.alarms)?;
    world.schedules = render(states.schedules)?;
    world.receivers = render(states.receivers)?;
    for receiver in world.receivers.values_mut() {
        if let Some(map) = receiver.as_object_mut() {
            map.remove("token_hash");
        }
    }
    Ok(world)
}

/// Replaces every `secret` field (current and previous, at any depth) with a placeholder, for
/// output that people read (replay, audit log); exports keep them, as a restore needs them.
pub fn redact_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if key == "secret" {
                    *field = Value::String("[redacted]".into());
                } else {
                    redact_secrets(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}
