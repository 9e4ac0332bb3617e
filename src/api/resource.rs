//! One lookup and one pager for every resource handler: whether the tenant owns the object a
//! path names (another tenant's object is as absent as a missing one: 404, never 403), the
//! object's live state, and a page of them.

use actix_web::HttpResponse;
use flotilla_actors::aggregate::{
    Aggregate, Alarms, Groups, Policies, Receivers, Schedules, Webhooks,
};
use flotilla_actors::domain::alarm::Alarm;
use flotilla_actors::domain::group::Group;
use flotilla_actors::domain::policy::Policy;
use flotilla_actors::domain::receiver::Receiver;
use flotilla_actors::domain::scheduled::Scheduled;
use flotilla_actors::domain::webhook::Webhook;
use flotilla_actors::domain::{
    AlarmId, GroupId, Kind, PolicyId, ReceiverId, ScheduleId, TenantId, WebhookId,
};
use serde::Serialize;

use super::{ApiError, AppState, List};
use crate::index::Page;

/// A kind of object the API serves to its tenant.
pub trait Resource: Aggregate {
    /// Its kind.
    const OF: Kind;
    /// Its id.
    type Id: AsRef<str> + std::fmt::Display + for<'a> From<&'a str>;
    /// What a live object of it is.
    type Object;

    /// The object of `state`, if it is live: created, and not deleted (or revoked).
    fn live(state: Self::State) -> Option<Self::Object>;
}

impl Resource for Groups {
    const OF: Kind = Kind::Group;
    type Id = GroupId;
    type Object = Group;

    fn live(state: Self::State) -> Option<Group> {
        state.filter(|group| !group.deleted)
    }
}

impl Resource for Policies {
    const OF: Kind = Kind::Policy;
    type Id = PolicyId;
    type Object = Policy;

    fn live(state: Self::State) -> Option<Policy> {
        state.filter(|policy| !policy.deleted)
    }
}

impl Resource for Webhooks {
    const OF: Kind = Kind::Webhook;
    type Id = WebhookId;
    type Object = Webhook;

    fn live(state: Self::State) -> Option<Webhook> {
        state.filter(|webhook| !webhook.revoked)
    }
}

impl Resource for Alarms {
    const OF: Kind = Kind::Alarm;
    type Id = AlarmId;
    type Object = Alarm;

    fn live(state: Self::State) -> Option<Alarm> {
        state.filter(|alarm| !alarm.deleted)
    }
}

impl Resource for Schedules {
    const OF: Kind = Kind::Schedule;
    type Id = ScheduleId;
    type Object = Scheduled;

    fn live(state: Self::State) -> Option<Scheduled> {
        state.filter(|scheduled| !scheduled.deleted)
    }
}

impl Resource for Receivers {
    const OF: Kind = Kind::Receiver;
    type Id = ReceiverId;
    type Object = Receiver;

    fn live(state: Self::State) -> Option<Receiver> {
        state.filter(|receiver| !receiver.deleted)
    }
}

/// Object `id` of kind `R`, if `tenant` owns it and, for one that hangs from a parent in its
/// path (a policy from its group, a webhook from its policy), it hangs from `parent`.
pub async fn owned<R: Resource>(
    state: &AppState,
    tenant: &TenantId,
    id: &str,
    parent: Option<&str>,
) -> Result<R::Id, ApiError> {
    let hangs = |owner: &crate::index::Owner| match (R::OF, parent) {
        (_, None) => true,
        (Kind::Webhook, Some(policy)) => {
            owner.policy.as_ref().is_some_and(|p| p.as_str() == policy)
        }
        (_, Some(group)) => owner.group.as_str() == group,
    };
    let owned = || {
        state
            .index
            .owner(R::OF, id)
            .is_some_and(|owner| &owner.tenant == tenant && hangs(&owner))
    };
    // Known here, or made through another node a moment ago. Another tenant's object takes
    // the same catch-up as a missing one, so that neither answers sooner (SPEC 3).
    if state.catch_up.known(owned).await {
        Ok(R::Id::from(id))
    } else {
        Err(ApiError::not_found(R::KIND))
    }
}

/// Object `id` of kind `R` under group `group` in the path (a scheduled action, a receiver),
/// if `tenant` owns both: the group's 404 first, then the object's.
pub async fn owned_in_group<R: Resource>(
    state: &AppState,
    tenant: &TenantId,
    group: &str,
    id: &str,
) -> Result<R::Id, ApiError> {
    let group = super::groups::owned(state, tenant, group).await?;
    owned::<R>(state, tenant, id, Some(group.as_str())).await
}

/// The live state of object `id` of kind `R` (404 once deleted or revoked).
pub async fn load<R: Resource>(state: &AppState, id: &R::Id) -> Result<R::Object, ApiError> {
    let observed = state.supervisor.get::<R>(id.as_ref()).await?;
    R::live(observed.state).ok_or_else(|| ApiError::not_found(R::KIND))
}

/// A page of ids answered as a [`List`] of the views of those still live (one deleted since the
/// page was read is left out), continued after the page's last id.
pub async fn page<R: Resource, V: Serialize>(
    state: &AppState,
    page: Page<R::Id>,
    view: impl Fn(&R::Object) -> V,
) -> HttpResponse {
    let mut items = Vec::with_capacity(page.items.len());
    for id in &page.items {
        if let Ok(object) = load::<R>(state, id).await {
            items.push(view(&object));
        }
    }
    HttpResponse::Ok().json(List {
        items,
        next_cursor: page.next.map(|id| id.to_string()),
    })
}
