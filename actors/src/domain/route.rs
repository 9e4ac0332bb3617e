//! Whether a policy execution may go ahead: "this webhook, its policy and its group are all
//! live" decided here, once, for every way in. A webhook call passes through its webhook and
//! its policy to the group; an alarm's action and a tenant's `execute` through the policy. The
//! group's `decide` asks [`check`] with what the execution passed through, in the same step that
//! decides the outcome and records it (with the webhook's nonce, all or none), so no link can die
//! between the check and the record.
//!
//! Edges:
//! - a webhook must be unrevoked and name the executed policy;
//! - a policy must exist, be undeleted and belong to the group;
//! - the group must exist and be undeleted;
//! - behind a webhook, any dead link is the webhook's 404: a capability whose target is gone is
//!   as gone as a revoked one. Without one, the 404 names the first dead object.

use super::group::{Group, GroupState};
use super::policy::{Policy, PolicyState};
use super::{PolicyId, Rejection, WebhookId};

/// What a webhook call passed through, as the webhook's actor held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The webhook that was called.
    pub webhook_id: WebhookId,
    /// The policy it executes.
    pub policy_id: PolicyId,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A policy execution on its way to its group: the policy as its actor held it, and the webhook
/// it came through, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The policy's id.
    pub policy_id: PolicyId,
    /// The policy's state.
    pub policy: PolicyState,
    /// The webhook called, for a webhook call.
    pub via: Option<Via>,
}

impl Route {
    /// The route of `policy` executed directly (by a tenant, an alarm or a schedule).
    pub fn direct(policy: Policy) -> Route {
        Route {
            policy_id: policy.id.clone(),
            policy: Some(policy),
            via: None,
        }
    }
}

/// The group and the policy of a live route, or the 404 of its first dead link.
pub fn check<'a>(
    route: &'a Route,
    group: &'a GroupState,
) -> Result<(&'a Group, &'a Policy), Rejection> {
    let dead = |object| match route.via {
        Some(_) => Rejection::not_found("webhook"),
        None => Rejection::not_found(object),
    };
    if let Some(via) = &route.via {
        if via.revoked || via.policy_id != route.policy_id {
            return Err(dead("webhook"));
        }
    }
    let policy = match &route.policy {
        Some(policy) if !policy.deleted && policy.id == route.policy_id => policy,
        _ => return Err(dead("policy")),
    };
    match group {
        Some(group) if !group.deleted && group.id == policy.group_id => Ok((group, policy)),
        _ => Err(dead("group")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::domain::group::{self, GroupCommand, NewGroup};
    use crate::domain::policy::PolicyDefinition;
    use crate::domain::scaling::AdjustmentType;
    use crate::domain::{GroupId, TenantId};

    fn group(id: &str) -> GroupState {
        let new = NewGroup {
            id: GroupId::new(id),
            tenant_id: TenantId::new("ten_1"),
            name: "web".into(),
            min_size: 0,
            max_size: 5,
            desired_capacity: None,
            cooldown_seconds: None,
            launch: serde_json::json!({"provider": "simulated"}),
            metadata: None,
            metrics_token_hash: String::new(),
        };
        let events = group::decide(&None, &GroupCommand::Create(new), Timestamp::EPOCH).unwrap();
        events.iter().fold(None, group::apply)
    }

    fn policy(group: &str) -> Policy {
        Policy {
            id: PolicyId::new("pol_1"),
            group_id: GroupId::new(group),
            tenant_id: TenantId::new("ten_1"),
            definition: PolicyDefinition::simple("up", AdjustmentType::Change, 1),
            deleted: false,
            created_at: Timestamp::EPOCH,
        }
    }

    fn route(policy: Option<Policy>, via: Option<Via>) -> Route {
        Route {
            policy_id: PolicyId::new("pol_1"),
            policy,
            via,
        }
    }

    fn via(revoked: bool) -> Option<Via> {
        Some(Via {
            webhook_id: WebhookId::new("whk_1"),
            policy_id: PolicyId::new("pol_1"),
            revoked,
        })
    }

    fn refused(route: &Route, group: &GroupState) -> &'static str {
        match check(route, group) {
            Err(Rejection::NotFound { object }) => object,
            other => panic!("expected a 404, got {other:?}"),
        }
    }

    #[test]
    fn a_live_webhook_policy_and_group_go_ahead() {
        let g = group("grp_1");
        assert!(check(&route(Some(policy("grp_1")), via(false)), &g).is_ok());
        assert!(check(&route(Some(policy("grp_1")), None), &g).is_ok());
    }

    #[test]
    fn behind_a_webhook_every_dead_link_is_the_webhooks_404() {
        let g = group("grp_1");
        assert_eq!(
            refused(&route(Some(policy("grp_1")), via(true)), &g),
            "webhook"
        );
        assert_eq!(refused(&route(None, via(false)), &g), "webhook");
        let mut deleted = policy("grp_1");
        deleted.deleted = true;
        assert_eq!(refused(&route(Some(deleted), via(false)), &g), "webhook");
        assert_eq!(
            refused(&route(Some(policy("grp_1")), via(false)), &None),
            "webhook"
        );
    }

    #[test]
    fn without_a_webhook_the_404_names_the_first_dead_object() {
        let g = group("grp_1");
        assert_eq!(refused(&route(None, None), &g), "policy");
        assert_eq!(refused(&route(Some(policy("grp_1")), None), &None), "group");
        let mut gone = g.clone();
        if let Some(group) = &mut gone {
            group.deleted = true;
        }
        assert_eq!(refused(&route(Some(policy("grp_1")), None), &gone), "group");
    }

    #[test]
    fn a_link_to_another_object_is_as_dead_as_a_missing_one() {
        let g = group("grp_1");
        assert_eq!(refused(&route(Some(policy("grp_2")), None), &g), "group");
        let mut elsewhere = via(false);
        if let Some(via) = &mut elsewhere {
            via.policy_id = PolicyId::new("pol_2");
        }
        assert_eq!(
            refused(&route(Some(policy("grp_1")), elsewhere), &g),
            "webhook"
        );
    }
}
