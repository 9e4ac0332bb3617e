//! The service's read model: who owns what, which token is whose, and what to list. It is fed
//! by the projector alone (see [`crate::projector`]): records taken in sequence order, from a
//! checkpoint and the journal at start, then each append as it becomes durable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use flotilla_actors::domain::alarm::AlarmEvent;
use flotilla_actors::domain::group::GroupEvent;
use flotilla_actors::domain::policy::PolicyEvent;
use flotilla_actors::domain::receiver::ReceiverEvent;
use flotilla_actors::domain::scheduled::ScheduledEvent;
use flotilla_actors::domain::tenant::TenantEvent;
use flotilla_actors::domain::webhook::WebhookEvent;
use flotilla_actors::domain::{
    AlarmId, DomainEvent, GroupId, Kind, PolicyId, ReceiverId, ScheduleId, TenantId, WebhookId,
};
use flotilla_journal::Record;

/// Who owns a policy, a webhook or an alarm, and where it hangs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    /// The tenant.
    pub tenant: TenantId,
    /// The group it belongs to.
    pub group: GroupId,
    /// For a webhook: the policy it executes.
    pub policy: Option<PolicyId>,
}

/// A metrics token's hash as the index keeps it: the 32 bytes of a SHA-256 hex digest (what
/// `token::hash` makes), inline, rather than 64 characters on the heap; any other text as it
/// is. With a token per server, the index held about 360 bytes a server in these maps before.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TokenHash {
    /// A lowercase SHA-256 hex digest, as its bytes.
    Digest([u8; 32]),
    /// Any other text, as it is.
    Text(Box<str>),
}

impl TokenHash {
    fn of(hash: &str) -> TokenHash {
        // Lowercase only, so that two different texts never make the same key.
        let lowercase = !hash.bytes().any(|b| b.is_ascii_uppercase());
        match flotilla_journal::parse_hex(hash) {
            Some(digest) if lowercase => TokenHash::Digest(digest),
            _ => TokenHash::Text(hash.into()),
        }
    }

    fn text(&self) -> String {
        match self {
            TokenHash::Digest(digest) => flotilla_journal::hex(digest),
            TokenHash::Text(text) => text.to_string(),
        }
    }
}

/// Pairs sorted by key: as a checkpoint keeps them.
fn sorted<K: Ord, V>(mut pairs: Vec<(K, V)>) -> Vec<(K, V)> {
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

/// A map's entry, cloned.
fn clone_pair<K: Clone, V: Clone>((k, v): (&K, &V)) -> (K, V) {
    (k.clone(), v.clone())
}

/// Objects that hang from a group (policies, scheduled actions, receivers): who owns each, and
/// each group's, in id order, for listing.
struct OfGroups<Id> {
    owners: HashMap<Id, Owner, foldhash::fast::RandomState>,
    by_group: BTreeSet<(GroupId, Id)>,
}

impl<Id> Default for OfGroups<Id> {
    fn default() -> Self {
        OfGroups {
            owners: HashMap::default(),
            by_group: BTreeSet::new(),
        }
    }
}

impl<Id: Clone + Ord + std::hash::Hash> OfGroups<Id> {
    fn created(&mut self, id: &Id, tenant: &TenantId, group: &GroupId) {
        let owner = Owner {
            tenant: tenant.clone(),
            group: group.clone(),
            policy: None,
        };
        self.owners.insert(id.clone(), owner);
        self.by_group.insert((group.clone(), id.clone()));
    }

    fn deleted(&mut self, id: &Id) {
        if let Some(owner) = self.owners.remove(id) {
            self.by_group.remove(&(owner.group, id.clone()));
        }
    }

    fn owner(&self, id: &Id) -> Option<Owner> {
        self.owners.get(id).cloned()
    }

    fn page(&self, group: &GroupId, cursor: Option<&Id>, limit: usize) -> Page<Id> {
        page(&self.by_group, group, cursor, limit)
    }

    fn restore(saved: Vec<(Id, Owner)>) -> Self {
        let by_group = saved
            .iter()
            .map(|(id, owner)| (owner.group.clone(), id.clone()))
            .collect();
        OfGroups {
            owners: saved.into_iter().collect(),
            by_group,
        }
    }
}

#[derive(Default)]
struct Data {
    /// Token hash → tenant.
    tokens: HashMap<String, TenantId>,
    /// Metrics token hash → group.
    metrics_tokens: HashMap<TokenHash, GroupId>,
    /// Group → the hash of its own metrics token (the one shown at creation or rotation).
    group_tokens: HashMap<GroupId, TokenHash>,
    /// Group → server → the hash of the metrics token minted for that server's launch.
    server_tokens: HashMap<GroupId, HashMap<Box<str>, TokenHash>>,
    /// Hashed with foldhash: a remote write asks about hundreds of groups at once.
    groups: HashMap<GroupId, TenantId, foldhash::fast::RandomState>,
    policies: OfGroups<PolicyId>,
    /// Hashed with foldhash, as the ones that follow: every webhook call asks.
    webhooks: HashMap<WebhookId, Owner, foldhash::fast::RandomState>,
    alarms: HashMap<AlarmId, Owner, foldhash::fast::RandomState>,
    schedules: OfGroups<ScheduleId>,
    receivers: OfGroups<ReceiverId>,
    /// (tenant, group) for listing a tenant's groups in id order.
    tenant_groups: BTreeSet<(TenantId, GroupId)>,
    /// (policy, webhook).
    policy_webhooks: BTreeSet<(PolicyId, WebhookId)>,
    /// (tenant, alarm).
    tenant_alarms: BTreeSet<(TenantId, AlarmId)>,
}

/// The index's maps as lists of pairs, at one of two stages: [`Copied`] as [`Index::copy`] takes
/// them, in no order and each token hash as the index keeps it; then [`Saved`], as a checkpoint
/// holds them, each sorted by key and every token hash as its text. The listing sets are derived
/// from them; two indexes that hold the same are saved the same.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Maps<Hash, Server> {
    tokens: Vec<(String, TenantId)>,
    metrics_tokens: Vec<(Hash, GroupId)>,
    group_tokens: Vec<(GroupId, Hash)>,
    server_tokens: Vec<((GroupId, Server), Hash)>,
    groups: Vec<(GroupId, TenantId)>,
    policies: Vec<(PolicyId, Owner)>,
    webhooks: Vec<(WebhookId, Owner)>,
    alarms: Vec<(AlarmId, Owner)>,
    /// Required: a checkpoint from before schedules does not decode, and is rebuilt.
    schedules: Vec<(ScheduleId, Owner)>,
    receivers: Vec<(ReceiverId, Owner)>,
}

/// The index as a checkpoint holds it.
pub type Saved = Maps<String, String>;

/// The index as [`Index::copy`] takes it, before it is sorted.
pub type Copied = Maps<TokenHash, Box<str>>;

impl Copied {
    /// The copy as a checkpoint keeps it: each map sorted by key, token hashes as their text.
    pub fn sorted(self) -> Saved {
        let text = |pairs: Vec<(GroupId, TokenHash)>| pairs.into_iter().map(|(g, h)| (g, h.text()));
        Saved {
            tokens: sorted(self.tokens),
            metrics_tokens: sorted(
                (self.metrics_tokens.into_iter())
                    .map(|(hash, group)| (hash.text(), group))
                    .collect(),
            ),
            group_tokens: sorted(text(self.group_tokens).collect()),
            server_tokens: sorted(
                (self.server_tokens.into_iter())
                    .map(|((group, server), hash)| ((group, server.into()), hash.text()))
                    .collect(),
            ),
            groups: sorted(self.groups),
            policies: sorted(self.policies),
            webhooks: sorted(self.webhooks),
            alarms: sorted(self.alarms),
            schedules: sorted(self.schedules),
            receivers: sorted(self.receivers),
        }
    }
}

impl Saved {
    /// Whether it holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.groups.is_empty()
    }
}

/// The read model. All methods take `&self`; it is shared by every HTTP worker.
#[derive(Default)]
pub struct Index {
    data: RwLock<Data>,
}

impl Index {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Data> {
        self.data
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Data> {
        self.data
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The index as a checkpoint holds it: [`Index::copy`], then [`Copied::sorted`].
    pub fn save(&self) -> Saved {
        self.copy().sorted()
    }

    /// A copy of the index's maps, unsorted: each object's id a count, not a copy (server ids
    /// and tenants' token hashes are copied), and every metrics token hash as the index keeps
    /// it. What a checkpoint takes while the journal's writer waits; the
    /// sorting and the tokens' text are [`Copied::sorted`]'s, done after.
    pub fn copy(&self) -> Copied {
        let data = self.read();
        let servers = data.server_tokens.iter();
        Copied {
            tokens: data.tokens.iter().map(clone_pair).collect(),
            metrics_tokens: data.metrics_tokens.iter().map(clone_pair).collect(),
            group_tokens: data.group_tokens.iter().map(clone_pair).collect(),
            server_tokens: servers
                .flat_map(|(group, servers)| {
                    (servers.iter())
                        .map(|(server, hash)| ((group.clone(), server.clone()), hash.clone()))
                })
                .collect(),
            groups: data.groups.iter().map(clone_pair).collect(),
            policies: data.policies.owners.iter().map(clone_pair).collect(),
            webhooks: data.webhooks.iter().map(clone_pair).collect(),
            alarms: data.alarms.iter().map(clone_pair).collect(),
            schedules: data.schedules.owners.iter().map(clone_pair).collect(),
            receivers: data.receivers.owners.iter().map(clone_pair).collect(),
        }
    }

    /// Replaces the index with a checkpoint's.
    pub fn restore(&self, saved: Saved) {
        let mut guard = self.write();
        *guard = Data::default();
        let data = &mut *guard;
        data.tenant_groups = saved
            .groups
            .iter()
            .map(|(g, t)| (t.clone(), g.clone()))
            .collect();
        data.policy_webhooks = saved
            .webhooks
            .iter()
            .filter_map(|(w, o)| Some((o.policy.clone()?, w.clone())))
            .collect();
        data.tenant_alarms = saved
            .alarms
            .iter()
            .map(|(a, o)| (o.tenant.clone(), a.clone()))
            .collect();
        data.tokens = saved.tokens.into_iter().collect();
        data.groups = saved.groups.into_iter().collect();
        // Each token's group as the group map holds it, so that a server's token holds a
        // count on the group's id rather than a copy of it, as it does live.
        let groups = &data.groups;
        let held = |group: GroupId| {
            groups
                .get_key_value(&group)
                .map_or(group, |(g, _)| g.clone())
        };
        data.metrics_tokens = (saved.metrics_tokens.into_iter())
            .map(|(hash, group)| (TokenHash::of(&hash), held(group)))
            .collect();
        data.group_tokens = (saved.group_tokens.into_iter())
            .map(|(group, hash)| (group, TokenHash::of(&hash)))
            .collect();
        for ((group, server), hash) in saved.server_tokens {
            (data.server_tokens.entry(held(group)).or_default())
                .insert(server.into(), TokenHash::of(&hash));
        }
        data.policies = OfGroups::restore(saved.policies);
        data.webhooks = saved.webhooks.into_iter().collect();
        data.alarms = saved.alarms.into_iter().collect();
        data.schedules = OfGroups::restore(saved.schedules);
        data.receivers = OfGroups::restore(saved.receivers);
    }

    /// Whether `record` can change the index: only creations, deletions, revocations and
    /// servers do; the rest of a journal (policy executions, accepted nonces) is skipped
    /// without decoding its payload.
    pub fn wants(record: &Record) -> bool {
        Kind::of(&record.stream).is_some_and(|kind| kind.changes_ownership(&record.event_type))
    }

    /// Takes in one journaled record: the index's only entry, called by the projector in
    /// sequence order.
    pub fn take(&self, record: &Record) -> anyhow::Result<()> {
        if !Self::wants(record) {
            return Ok(());
        }
        let stream = record.stream.as_str();
        match Kind::of(stream) {
            Some(Kind::Tenant) => {
                self.tenant_event(&TenantId::new(stream), &record.decode(TenantEvent::SCHEMA)?);
            }
            Some(Kind::Group) => {
                self.group_event(&GroupId::new(stream), &record.decode(GroupEvent::SCHEMA)?);
            }
            Some(Kind::Policy) => {
                self.policy_event(&PolicyId::new(stream), &record.decode(PolicyEvent::SCHEMA)?);
            }
            Some(Kind::Webhook) => self.webhook_event(
                &WebhookId::new(stream),
                &record.decode(WebhookEvent::SCHEMA)?,
            ),
            Some(Kind::Alarm) => {
                self.alarm_event(&AlarmId::new(stream), &record.decode(AlarmEvent::SCHEMA)?);
            }
            Some(Kind::Receiver) => self.receiver_event(
                &ReceiverId::new(stream),
                &record.decode(ReceiverEvent::SCHEMA)?,
            ),
            Some(Kind::Schedule) => self.schedule_event(
                &ScheduleId::new(stream),
                &record.decode(ScheduledEvent::SCHEMA)?,
            ),
            None => {}
        }
        Ok(())
    }

    /// Takes in a tenant's event.
    fn tenant_event(&self, id: &TenantId, event: &TenantEvent) {
        let mut data = self.write();
        match event {
            TenantEvent::Created { token_hash, .. } => {
                data.tokens.insert(token_hash.clone(), id.clone());
            }
            TenantEvent::TokenRotated { token_hash, .. } => {
                // The old token stops working at once.
                data.tokens.retain(|_, tenant| tenant != id);
                data.tokens.insert(token_hash.clone(), id.clone());
            }
        }
    }

    /// Takes in a group's event.
    fn group_event(&self, id: &GroupId, event: &GroupEvent) {
        let mut data = self.write();
        match event {
            GroupEvent::Created {
                tenant_id,
                metrics_token_hash,
                ..
            } => {
                data.groups.insert(id.clone(), tenant_id.clone());
                data.tenant_groups.insert((tenant_id.clone(), id.clone()));
                if !metrics_token_hash.is_empty() {
                    let hash = TokenHash::of(metrics_token_hash);
                    data.metrics_tokens.insert(hash.clone(), id.clone());
                    data.group_tokens.insert(id.clone(), hash);
                }
            }
            GroupEvent::MetricsTokenRotated {
                metrics_token_hash, ..
            } => {
                // The old token stops working at once; the servers' own tokens are untouched.
                if let Some(old) = data.group_tokens.remove(id) {
                    data.metrics_tokens.remove(&old);
                }
                let hash = TokenHash::of(metrics_token_hash);
                data.metrics_tokens.insert(hash.clone(), id.clone());
                data.group_tokens.insert(id.clone(), hash);
            }
            GroupEvent::Deleted { .. } => {
                if let Some(tenant) = data.groups.remove(id) {
                    data.tenant_groups.remove(&(tenant, id.clone()));
                }
                let servers = data.server_tokens.remove(id).unwrap_or_default();
                let group = data.group_tokens.remove(id);
                for hash in servers.values().chain(&group) {
                    if data.metrics_tokens.get(hash) == Some(id) {
                        data.metrics_tokens.remove(hash);
                    }
                }
            }
            GroupEvent::ServerLaunchRequested {
                server_id,
                metrics_token_hash,
                ..
            } => {
                let data = &mut *data;
                // The group's id as the index already holds it: `id` is a new copy, made from
                // this record, and a token a server would otherwise keep one of its own.
                let group =
                    (data.groups.get_key_value(id)).map_or_else(|| id.clone(), |(g, _)| g.clone());
                let servers = data.server_tokens.entry(group.clone()).or_default();
                if let Some(old) = servers.remove(server_id.as_str()) {
                    data.metrics_tokens.remove(&old);
                }
                if !metrics_token_hash.is_empty() {
                    let hash = TokenHash::of(metrics_token_hash);
                    data.metrics_tokens.insert(hash.clone(), group);
                    servers.insert(server_id.as_str().into(), hash);
                }
            }
            GroupEvent::ServerDeleted { server_id, .. } => {
                let data = &mut *data;
                let old =
                    (data.server_tokens.get_mut(id)).and_then(|s| s.remove(server_id.as_str()));
                if let Some(old) = old {
                    data.metrics_tokens.remove(&old);
                }
            }
            _ => {}
        }
    }

    /// Every group, in id order (the converger's round).
    pub fn all_groups(&self) -> Vec<GroupId> {
        let data = self.read();
        let mut groups: Vec<GroupId> = data.groups.keys().cloned().collect();
        groups.sort();
        groups
    }

    /// Takes in a policy's event.
    fn policy_event(&self, id: &PolicyId, event: &PolicyEvent) {
        let mut data = self.write();
        match event {
            PolicyEvent::Created {
                group_id,
                tenant_id,
                ..
            } => data.policies.created(id, tenant_id, group_id),
            PolicyEvent::Deleted { .. } => data.policies.deleted(id),
            _ => {}
        }
    }

    /// Takes in a webhook's event.
    fn webhook_event(&self, id: &WebhookId, event: &WebhookEvent) {
        let mut data = self.write();
        match event {
            WebhookEvent::Created {
                policy_id,
                group_id,
                tenant_id,
                ..
            } => {
                let owner = Owner {
                    tenant: tenant_id.clone(),
                    group: group_id.clone(),
                    policy: Some(policy_id.clone()),
                };
                data.webhooks.insert(id.clone(), owner);
                data.policy_webhooks.insert((policy_id.clone(), id.clone()));
            }
            WebhookEvent::Revoked { .. } => {
                if let Some(Owner {
                    policy: Some(policy),
                    ..
                }) = data.webhooks.remove(id)
                {
                    data.policy_webhooks.remove(&(policy, id.clone()));
                }
            }
            _ => {}
        }
    }

    /// Takes in an alarm's event.
    fn alarm_event(&self, id: &AlarmId, event: &AlarmEvent) {
        let mut data = self.write();
        match event {
            AlarmEvent::Created {
                tenant_id,
                definition,
                ..
            } => {
                let owner = Owner {
                    tenant: tenant_id.clone(),
                    group: definition.group_id.clone(),
                    policy: None,
                };
                data.tenant_alarms
                    .insert((owner.tenant.clone(), id.clone()));
                data.alarms.insert(id.clone(), owner);
            }
            AlarmEvent::Deleted { .. } => {
                if let Some(owner) = data.alarms.remove(id) {
                    data.tenant_alarms.remove(&(owner.tenant, id.clone()));
                }
            }
            _ => {}
        }
    }

    /// Takes in a receiver's event.
    fn receiver_event(&self, id: &ReceiverId, event: &ReceiverEvent) {
        let mut data = self.write();
        match event {
            ReceiverEvent::Created {
                group_id,
                tenant_id,
                ..
            } => data.receivers.created(id, tenant_id, group_id),
            ReceiverEvent::Deleted { .. } => data.receivers.deleted(id),
            _ => {}
        }
    }

    /// Takes in a scheduled action's event.
    fn schedule_event(&self, id: &ScheduleId, event: &ScheduledEvent) {
        let mut data = self.write();
        match event {
            ScheduledEvent::Created {
                group_id,
                tenant_id,
                ..
            } => data.schedules.created(id, tenant_id, group_id),
            ScheduledEvent::Deleted { .. } => data.schedules.deleted(id),
            _ => {}
        }
    }

    /// Who owns live object `id` of `kind`, and where it hangs (a group hangs from itself);
    /// `None` for a tenant, or an object that is not live.
    pub fn owner(&self, kind: Kind, id: &str) -> Option<Owner> {
        let data = self.read();
        match kind {
            Kind::Group => {
                let group = GroupId::new(id);
                let tenant = data.groups.get(&group)?.clone();
                Some(Owner {
                    tenant,
                    group,
                    policy: None,
                })
            }
            Kind::Policy => data.policies.owner(&PolicyId::new(id)),
            Kind::Webhook => data.webhooks.get(&WebhookId::new(id)).cloned(),
            Kind::Alarm => data.alarms.get(&AlarmId::new(id)).cloned(),
            Kind::Schedule => data.schedules.owner(&ScheduleId::new(id)),
            Kind::Receiver => data.receivers.owner(&ReceiverId::new(id)),
            Kind::Tenant => None,
        }
    }

    /// The group live object `id` belongs to, its kind told by its prefix (a policy, webhook,
    /// alarm, schedule or receiver; a group is its own), allocating nothing: where the
    /// supervisor places the object's actor ([`flotilla_actors::supervisor::Placement`]).
    pub fn group_of(&self, id: &str) -> Option<GroupId> {
        let data = self.read();
        let owner = if id.starts_with(PolicyId::PREFIX) {
            data.policies.owners.get(id)
        } else if id.starts_with(WebhookId::PREFIX) {
            data.webhooks.get(id)
        } else if id.starts_with(AlarmId::PREFIX) {
            data.alarms.get(id)
        } else if id.starts_with(ScheduleId::PREFIX) {
            data.schedules.owners.get(id)
        } else if id.starts_with(ReceiverId::PREFIX) {
            data.receivers.owners.get(id)
        } else {
            None
        };
        owner.map(|owner| owner.group.clone())
    }

    /// The tenant a token hash belongs to.
    pub fn tenant_of_token(&self, token_hash: &str) -> Option<TenantId> {
        self.read().tokens.get(token_hash).cloned()
    }

    /// The group a metrics token hash belongs to.
    pub fn group_of_metrics_token(&self, token_hash: &str) -> Option<GroupId> {
        (self.read().metrics_tokens)
            .get(&TokenHash::of(token_hash))
            .cloned()
    }

    /// Whether `tenant` owns live group `id`.
    pub fn owns_group(&self, tenant: &TenantId, id: &GroupId) -> bool {
        self.owns_group_named(tenant, id.as_str())
    }

    /// [`Index::owns_group`] with the id as text (a label), allocating nothing.
    pub fn owns_group_named(&self, tenant: &TenantId, id: &str) -> bool {
        self.read().groups.get(id) == Some(tenant)
    }

    /// For each of `ids` (group ids as text), whether `tenant` owns it, under one read lock.
    pub fn owns_groups_named(&self, tenant: &TenantId, ids: &[&str]) -> Vec<bool> {
        let data = self.read();
        ids.iter()
            .map(|id| data.groups.get(*id) == Some(tenant))
            .collect()
    }

    /// The owner of live policy `id`.
    pub fn policy(&self, id: &PolicyId) -> Option<Owner> {
        self.read().policies.owner(id)
    }

    /// The owner of live (unrevoked) webhook `id`.
    pub fn webhook(&self, id: &WebhookId) -> Option<Owner> {
        self.read().webhooks.get(id).cloned()
    }

    /// The owner of live alarm `id`.
    pub fn alarm(&self, id: &AlarmId) -> Option<Owner> {
        self.read().alarms.get(id).cloned()
    }

    /// Up to `limit` of `tenant`'s groups after `cursor`, and whether more follow.
    pub fn groups_of(
        &self,
        tenant: &TenantId,
        cursor: Option<&GroupId>,
        limit: usize,
    ) -> Page<GroupId> {
        let data = self.read();
        page(&data.tenant_groups, tenant, cursor, limit)
    }

    /// Up to `limit` of `group`'s policies after `cursor`.
    pub fn policies_of(
        &self,
        group: &GroupId,
        cursor: Option<&PolicyId>,
        limit: usize,
    ) -> Page<PolicyId> {
        let data = self.read();
        data.policies.page(group, cursor, limit)
    }

    /// Up to `limit` of `group`'s scheduled actions after `cursor`.
    pub fn schedules_of(
        &self,
        group: &GroupId,
        cursor: Option<&ScheduleId>,
        limit: usize,
    ) -> Page<ScheduleId> {
        let data = self.read();
        data.schedules.page(group, cursor, limit)
    }

    /// Up to `limit` of `group`'s receivers after `cursor`.
    pub fn receivers_of(
        &self,
        group: &GroupId,
        cursor: Option<&ReceiverId>,
        limit: usize,
    ) -> Page<ReceiverId> {
        let data = self.read();
        data.receivers.page(group, cursor, limit)
    }

    /// Up to `limit` of `policy`'s live webhooks after `cursor`.
    pub fn webhooks_of(
        &self,
        policy: &PolicyId,
        cursor: Option<&WebhookId>,
        limit: usize,
    ) -> Page<WebhookId> {
        let data = self.read();
        page(&data.policy_webhooks, policy, cursor, limit)
    }

    /// Up to `limit` of `tenant`'s alarms after `cursor`.
    pub fn alarms_of(
        &self,
        tenant: &TenantId,
        cursor: Option<&AlarmId>,
        limit: usize,
    ) -> Page<AlarmId> {
        let data = self.read();
        page(&data.tenant_alarms, tenant, cursor, limit)
    }

    /// Counts of live objects by kind.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let data = self.read();
        BTreeMap::from([
            ("tenants", data.tokens.len()),
            ("groups", data.groups.len()),
            ("policies", data.policies.owners.len()),
            ("webhooks", data.webhooks.len()),
            ("alarms", data.alarms.len()),
            ("schedules", data.schedules.owners.len()),
            ("receivers", data.receivers.owners.len()),
        ])
    }
}

/// One page of ids, and the cursor of the next page if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The ids.
    pub items: Vec<T>,
    /// The last id of this page, when more follow.
    pub next: Option<T>,
}

fn page<P: Ord + Clone, T: Ord + Clone>(
    set: &BTreeSet<(P, T)>,
    parent: &P,
    cursor: Option<&T>,
    limit: usize,
) -> Page<T> {
    use std::ops::Bound::{Excluded, Unbounded};
    let start = match cursor {
        Some(after) => Excluded((parent.clone(), after.clone())),
        None => Unbounded,
    };
    let mut items: Vec<T> = set
        .range((start, Unbounded))
        .skip_while(|(p, _)| p < parent)
        .take_while(|(p, _)| p == parent)
        .take(limit + 1)
        .map(|(_, id)| id.clone())
        .collect();
    let next = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().cloned()
    });
    Page {
        items,
        next: next.flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_actors::clock::Timestamp;

    const AT: Timestamp = Timestamp::from_millis(1_700_000_000_000);

    fn created(group: &GroupId, hash: &str) -> GroupEvent {
        GroupEvent::Created {
            id: group.clone(),
            tenant_id: TenantId::from("ten_1"),
            name: "g".into(),
            min_size: 0,
            max_size: 10,
            desired_capacity: 0,
            cooldown_seconds: 0,
            launch: serde_json::Value::Null,
            metadata: serde_json::Map::new(),
            metrics_token_hash: hash.into(),
            at: AT,
        }
    }

    fn launched(server: &str, hash: &str) -> GroupEvent {
        GroupEvent::ServerLaunchRequested {
            server_id: server.into(),
            metrics_token_hash: hash.into(),
            at: AT,
            because: None,
            replacement: false,
        }
    }

    /// A SHA-256 hex digest like `token::hash` makes, from `n`.
    fn digest(n: u8) -> String {
        flotilla_journal::hex(&[n; 32])
    }

    #[test]
    fn the_group_of_a_policy_or_webhook_is_where_its_actor_is_placed() {
        use flotilla_actors::domain::policy::PolicyDefinition;
        use flotilla_actors::domain::scaling::AdjustmentType;
        use flotilla_actors::domain::webhook::Secret;
        let index = Index::default();
        let (group, tenant) = (GroupId::from("grp_1"), TenantId::from("ten_1"));
        let (policy, webhook) = (PolicyId::from("pol_1"), WebhookId::from("whk_1"));
        index.group_event(&group, &created(&group, &digest(1)));
        index.policy_event(
            &policy,
            &PolicyEvent::Created {
                id: policy.clone(),
                group_id: group.clone(),
                tenant_id: tenant.clone(),
                definition: PolicyDefinition::simple("up", AdjustmentType::Change, 1),
                at: AT,
            },
        );
        index.webhook_event(
            &webhook,
            &WebhookEvent::Created {
                id: webhook.clone(),
                policy_id: policy.clone(),
                group_id: group.clone(),
                tenant_id: tenant,
                name: "h".into(),
                secret: Secret::from_bytes([7; 32]),
                at: AT,
            },
        );
        assert_eq!(index.group_of("pol_1"), Some(group.clone()));
        assert_eq!(index.group_of("whk_1"), Some(group.clone()));
        // Unknown, of another kind, or a group (placed by its own id): none.
        for id in ["pol_2", "whk_2", "grp_1", "ten_1", "x"] {
            assert_eq!(index.group_of(id), None, "{id}");
        }
        // A revoked webhook is placed by its own id again.
        index.webhook_event(&webhook, &WebhookEvent::Revoked { at: AT });
        assert_eq!(index.group_of("whk_1"), None);
    }

    #[test]
    fn metrics_tokens_follow_servers_and_groups_and_survive_a_checkpoint() {
        let index = Index::default();
        let (one, two) = (GroupId::from("grp_1"), GroupId::from("grp_2"));
        index.group_event(&one, &created(&one, &digest(1)));
        index.group_event(&two, &created(&two, &digest(2)));
        index.group_event(&one, &launched("srv_a", &digest(10)));
        index.group_event(&one, &launched("srv_b", &digest(11)));
        // A hash that is not a lowercase digest is kept as its text, and told apart.
        index.group_event(&two, &launched("srv_c", "not-a-digest"));
        let upper = digest(12).to_uppercase();
        index.group_event(&two, &launched("srv_d", &upper));
        // `parse_hex` once took this for the digest of 12s.
        let signed = "+c".repeat(32);
        index.group_event(&two, &launched("srv_e", &signed));
        let of = |hash: &str| index.group_of_metrics_token(hash);
        assert_eq!(of(&digest(10)), Some(one.clone()));
        assert_eq!(of("not-a-digest"), Some(two.clone()));
        assert_eq!(of(&upper), Some(two.clone()));
        assert_eq!(of(&digest(12)), None);
        assert_eq!(of(&signed), Some(two.clone()));
        // A relaunch replaces the server's token; a deletion ends it.
        index.group_event(&one, &launched("srv_a", &digest(20)));
        assert_eq!(of(&digest(10)), None);
        assert_eq!(of(&digest(20)), Some(one.clone()));
        let deleted = GroupEvent::ServerDeleted {
            server_id: "srv_b".into(),
            at: AT,
        };
        index.group_event(&one, &deleted);
        assert_eq!(of(&digest(11)), None);
        // The checkpoint holds the same, and restores it, through its encoding as a checkpoint
        // is kept (so every id in it is a copy of its own).
        let saved = serde_json::from_slice(&serde_json::to_vec(&index.save()).unwrap()).unwrap();
        let restored = Index::default();
        restored.restore(saved);
        assert_eq!(restored.save(), index.save());
        assert_eq!(
            restored.group_of_metrics_token(&digest(20)),
            Some(one.clone())
        );
        assert_eq!(restored.group_of_metrics_token(&upper), Some(two.clone()));
        // Restored, a server's token holds the group's id as the group map does, not a copy.
        {
            let data = restored.read();
            let (group, _) = data.groups.get_key_value(&one).unwrap();
            for token in [digest(20), digest(1)] {
                let token = &data.metrics_tokens[&TokenHash::of(&token)];
                assert_eq!(token.as_str().as_ptr(), group.as_str().as_ptr());
            }
            let (servers, _) = data.server_tokens.get_key_value(&one).unwrap();
            assert_eq!(servers.as_str().as_ptr(), group.as_str().as_ptr());
        }
        // Deleting a group ends its own token and its servers', and only those.
        restored.group_event(&one, &GroupEvent::Deleted { at: AT });
        for gone in [digest(1), digest(20)] {
            assert_eq!(restored.group_of_metrics_token(&gone), None);
        }
        assert_eq!(restored.group_of_metrics_token(&digest(2)), Some(two));
    }

    #[test]
    fn pages_stay_within_their_parent_and_continue_from_the_cursor() {
        let set: BTreeSet<(u8, u8)> = [(1, 1), (2, 1), (2, 2), (2, 3), (3, 1)].into();
        let first = page(&set, &2, None, 2);
        assert_eq!(
            first,
            Page {
                items: vec![1, 2],
                next: Some(2)
            }
        );
        let second = page(&set, &2, first.next.as_ref(), 2);
        assert_eq!(
            second,
            Page {
                items: vec![3],
                next: None
            }
        );
        assert_eq!(page(&set, &4, None, 10).items, Vec::<u8>::new());
    }
}
