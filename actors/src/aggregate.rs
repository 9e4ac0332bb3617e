//! One trait over the domain's objects, so that one store and one actor serve them all.

use std::collections::BTreeSet;
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock::Timestamp;
use crate::domain::{
    alarm, group, policy, receiver, scheduled, server, tenant, webhook, DomainEvent, Rejection,
};
use crate::store::{Split, Whole, SNAPSHOT_EVERY};

/// A kind of object whose state is a fold of its events.
pub trait Aggregate: Send + Unpin + 'static {
    /// The kind's name, as logs and `replay` show it (`group`, `policy`, ...).
    const KIND: &'static str;
    /// The prefix of its ids, which are also its journal stream ids.
    const PREFIX: &'static str;
    /// Its state: `Default` is "not created".
    type State: Default + Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Unpin;
    /// What can be asked of it.
    type Command: Clone + Debug + Send + Unpin;
    /// What happened to it.
    type Event: DomainEvent + Clone + Debug + Send + Unpin;
    /// How its snapshots are saved: whole, or in parts ([`Split`]).
    type Split: Split<Self::State>;

    /// Every rule: what `command` does to `state` at `now`.
    fn decide(
        state: &Self::State,
        command: &Self::Command,
        now: Timestamp,
    ) -> Result<Vec<Self::Event>, Rejection>;

    /// No rules: what `event` makes of `state`.
    fn apply(state: Self::State, event: &Self::Event) -> Self::State;

    /// How many events may follow the last snapshot before the next is saved. A snapshot costs
    /// about the state's size, so a state that grows with its events (a webhook's nonce window,
    /// up to 10,000 nonces) is snapshotted less often: a bounded cost per event, traded for a
    /// longer (still bounded) replay when its actor starts.
    fn snapshot_every(_state: &Self::State) -> u64 {
        SNAPSHOT_EVERY
    }

    /// The group whose lease `command` is its owner's work under (the converger's reports,
    /// alarm evaluation and actions, target tracking, schedules), if it is: on a shared
    /// database the command is refused unless this node holds the group's shard, and its append
    /// carries the lease's fencing token (SPEC 9). API calls are none of these: any node
    /// decides them, against the journal's current state.
    fn leased_by(_id: &str, _state: &Self::State, _command: &Self::Command) -> Option<String> {
        None
    }
}

/// The `split` an [`aggregate!`] names, or [`Whole`].
macro_rules! split_or_whole {
    () => {
        Whole
    };
    ($split:ty) => {
        $split
    };
}

macro_rules! aggregate {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $module:ident, $id:ty, $state:ty, $command:ty, $event:ty $(, snapshot_every = $every:expr)? $(, split = $split:ty)? $(, leased_by = $leased:expr)?) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl Aggregate for $name {
            const KIND: &'static str = $kind;
            const PREFIX: &'static str = <$id>::PREFIX;
            type State = $state;
            type Command = $command;
            type Event = $event;
            type Split = split_or_whole!($($split)?);

            fn decide(
                state: &Self::State,
                command: &Self::Command,
                now: Timestamp,
            ) -> Result<Vec<Self::Event>, Rejection> {
                $module::decide(state, command, now)
            }

            fn apply(state: Self::State, event: &Self::Event) -> Self::State {
                $module::apply(state, event)
            }

            $(
                fn snapshot_every(state: &Self::State) -> u64 {
                    $every(state)
                }
            )?

            $(
                fn leased_by(
                    id: &str,
                    state: &Self::State,
                    command: &Self::Command,
                ) -> Option<String> {
                    $leased(id, state, command)
                }
            )?
        }
    };
}

aggregate!(
    /// Tenants.
    Tenants, "tenant", tenant, crate::domain::TenantId,
    tenant::TenantState, tenant::TenantCommand, tenant::TenantEvent
);
aggregate!(
    /// Groups.
    Groups, "group", group, crate::domain::GroupId,
    group::GroupState, group::GroupCommand, group::GroupEvent,
    snapshot_every = |state: &group::GroupState| {
        // A snapshot writes every server that changed since the last (in parts: see
        // `GroupServers`), at worst all of them: one every as many events as the group has
        // servers writes about one server per event, and a start replays at most that many
        // events (a group has at most 10,000 servers, `MAX_GROUP_SIZE`, and those being
        // deleted).
        let servers = state.as_ref().map_or(0, |group| group.servers.len()) as u64;
        SNAPSHOT_EVERY.max(servers)
    },
    split = GroupServers,
    leased_by = group::leased_by
);

/// A group's snapshots, split by its servers' ids into [`server::PARTS`] parts (see
/// [`server::part_of`]) once it has [`server::SPLIT_FROM`] servers: a snapshot saves the group
/// without its servers, and the parts whose servers changed since the last snapshot.
#[derive(Debug)]
pub struct GroupServers;

impl Split<group::GroupState> for GroupServers {
    type Basis = server::Servers;
    const PARTS: usize = server::PARTS;

    fn worth_splitting(state: &group::GroupState) -> bool {
        state
            .as_ref()
            .is_some_and(|group| group.servers.len() >= server::SPLIT_FROM)
    }

    fn basis(state: &group::GroupState) -> server::Servers {
        state
            .as_ref()
            .map(|group| group.servers.clone())
            .unwrap_or_default()
    }

    fn changed(before: &server::Servers, now: &server::Servers) -> BTreeSet<usize> {
        server::changed_parts(before, now)
    }

    fn head(state: &group::GroupState) -> group::GroupState {
        state.as_ref().map(|group| group::Group {
            servers: server::Servers::new(),
            ..group.clone()
        })
    }

    fn part(state: &group::GroupState, part: usize) -> serde_json::Result<Vec<u8>> {
        let servers = state.as_ref().map(|group| &group.servers);
        server::encode_part(servers.unwrap_or(&server::Servers::new()), part)
    }

    fn join(
        mut head: group::GroupState,
        part: usize,
        bytes: &[u8],
    ) -> serde_json::Result<group::GroupState> {
        if let Some(group) = head.as_mut() {
            server::decode_part(&mut group.servers, part, bytes)?;
        } else if bytes != b"[]" {
            return Err(serde::de::Error::custom(
                "servers of a group that is not there",
            ));
        }
        Ok(head)
    }
}
aggregate!(
    /// Policies.
    Policies, "policy", policy, crate::domain::PolicyId,
    policy::PolicyState, policy::PolicyCommand, policy::PolicyEvent
);
aggregate!(
    /// Webhooks.
    Webhooks, "webhook", webhook, crate::domain::WebhookId,
    webhook::WebhookState, webhook::WebhookCommand, webhook::WebhookEvent,
    snapshot_every = |state: &webhook::WebhookState| {
        // A quarter of the window, at most 1,024: copying the window costs at most 4 nonces per
        // call, or about 10 when full, and a start replays at most 1,024 calls.
        let nonces = state.as_ref().map_or(0, |webhook| webhook.nonces.len()) as u64;
        SNAPSHOT_EVERY.max(nonces / 4).min(1024)
    }
);
aggregate!(
    /// Alarms.
    Alarms, "alarm", alarm, crate::domain::AlarmId,
    Option<alarm::Alarm>, alarm::AlarmCommand, alarm::AlarmEvent,
    leased_by = alarm::leased_by
);
aggregate!(
    /// Scheduled actions.
    Schedules, "schedule", scheduled, crate::domain::ScheduleId,
    scheduled::ScheduledState, scheduled::ScheduledCommand, scheduled::ScheduledEvent
);
aggregate!(
    /// Alertmanager receivers.
    Receivers, "receiver", receiver, crate::domain::ReceiverId,
    receiver::ReceiverState, receiver::ReceiverCommand, receiver::ReceiverEvent
);
