//! A signed webhook (SPEC section 4): a revocable capability that executes one policy.
//!
//! The domain keeps the webhook's secrets, its rotation grace, its revocation and the window of
//! accepted nonces. Checking signatures (HMAC over the raw body) is the service's job; it asks
//! [`Webhook::valid_secrets`] which keys to try, and only after a signature checks out does it
//! send [`WebhookCommand::AcceptNonce`].
//!
//! Edges, all inclusive/exclusive choices in one place:
//! - a request's timestamp is in window while `|now − timestamp| <= tolerance`;
//! - a nonce is remembered while `now <= expires_at`, `expires_at = timestamp + tolerance`;
//! - after a rotation, the previous secret is valid while `now < valid_until`; at `valid_until`
//!   it no longer is. Every secret replaced within the grace of another keeps its own grace (at
//!   most [`MAX_PREVIOUS_SECRETS`] at once: one more rotation is a 409).
//!
//! Secrets travel in the journal's events (a restart must know them) as `whsec_<base64>`, and
//! never through `Debug`, which prints `Secret(***)`.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::nonce_window::{NonceWindow, Refusal};
use super::{
    validate_cooldown, validate_name, DomainEvent, GroupId, PolicyId, Rejection, TenantId,
    WebhookId,
};
use crate::clock::{millis_to_secs_rounded_up, Timestamp};

/// The most replaced secrets that may be within their grace at once.
pub const MAX_PREVIOUS_SECRETS: usize = 8;

/// How long the previous secret stays valid after a rotation, by default: one day.
pub const DEFAULT_GRACE_SECONDS: u32 = 86_400;

/// The longest nonce, in characters.
pub const MAX_NONCE_CHARS: usize = 128;

/// A webhook's HMAC key: 32 bytes, written `whsec_` + their standard base64.
///
/// The service draws the 32 bytes from the operating system's random source and hands them in
/// ([`Secret::from_bytes`]); the domain draws no randomness of its own for secrets.
///
/// `Debug` hides it; there is no `Display`. Use [`Secret::to_whsec`] only to answer the one
/// request that returns it, and [`Secret::key`] for the HMAC. Comparing two secrets with `==` is
/// not constant-time: verify signatures with the HMAC's own constant-time check.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl Secret {
    /// The prefix of a secret's text form.
    pub const PREFIX: &'static str = "whsec_";

    /// A secret from its key bytes.
    pub const fn from_bytes(key: [u8; 32]) -> Self {
        Secret(key)
    }

    /// The HMAC key.
    pub fn key(&self) -> &[u8; 32] {
        &self.0
    }

    /// The text form, `whsec_<base64>`. Reveals the secret: never log it.
    pub fn to_whsec(&self) -> String {
        format!("{}{}", Self::PREFIX, STANDARD.encode(self.0))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a text is not a secret. Its message never echoes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is \"whsec_\" followed by the standard base64 of 32 bytes")]
pub struct MalformedSecret;

impl FromStr for Secret {
    type Err = MalformedSecret;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let encoded = text.strip_prefix(Self::PREFIX).ok_or(MalformedSecret)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| MalformedSecret)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| MalformedSecret)?;
        Ok(Secret(key))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_whsec())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A secret replaced by a rotation, valid while `now < valid_until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    /// The old secret.
    pub secret: Secret,
    /// The first instant it is no longer valid.
    pub valid_until: Timestamp,
}

/// Reads `previous` as snapshots have held it: none (`null`), one (an object), or a list.
fn previous_secrets<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<PreviousSecret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Held {
        Many(Vec<PreviousSecret>),
        One(PreviousSecret),
    }
    Ok(match Option::<Held>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(Held::One(previous)) => vec![previous],
        Some(Held::Many(previous)) => previous,
    })
}

/// A webhook as its events built it (serialized only into snapshots, never into a response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Its id, part of its URL.
    pub id: WebhookId,
    /// The policy it executes.
    pub policy_id: PolicyId,
    /// That policy's group.
    pub group_id: GroupId,
    /// Its owner.
    pub tenant_id: TenantId,
    /// Its name.
    pub name: String,
    /// The current secret.
    pub secret: Secret,
    /// The secrets replaced by rotations and still within their grace when the last rotation
    /// happened, oldest first.
    #[serde(deserialize_with = "previous_secrets")]
    pub previous: Vec<PreviousSecret>,
    /// Whether it was revoked (its URL answers 404).
    pub revoked: bool,
    /// The nonces it accepted and still remembers.
    pub nonces: NonceWindow,
    /// When it was created.
    pub created_at: Timestamp,
}

impl Webhook {
    /// The secrets a signature may be made with at `now`: the current one, and each replaced
    /// one while `now < valid_until`, newest first.
    pub fn valid_secrets(&self, now: Timestamp) -> impl Iterator<Item = &Secret> {
        let previous = self
            .previous
            .iter()
            .rev()
            .filter(move |previous| now < previous.valid_until)
            .map(|previous| &previous.secret);
        std::iter::once(&self.secret).chain(previous)
    }
}

/// A webhook's state: `None` until its `Created` event.
pub type WebhookState = Option<Webhook>;

/// What can be asked of a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookCommand {
    /// Create it, with a secret the caller generated (so that `decide` stays deterministic).
    Create {
        /// The id, generated by the caller ([`WebhookId::generate`]).
        id: WebhookId,
        /// The policy it executes.
        policy_id: PolicyId,
        /// That policy's group.
        group_id: GroupId,
        /// The owner.
        tenant_id: TenantId,
        /// 1 to 255 characters.
        name: String,
        /// Its first secret.
        secret: Secret,
    },
    /// Replace the secret; the old one stays valid for the grace, and every older one still in
    /// its own grace stays so (409 past [`MAX_PREVIOUS_SECRETS`] of them).
    Rotate {
        /// The new secret.
        new_secret: Secret,
        /// How long the old one stays valid; [`DEFAULT_GRACE_SECONDS`] when absent, at most a week.
        grace_seconds: Option<u32>,
    },
    /// Revoke it for good.
    Revoke,
    /// Accept a signed request's nonce (its signature already checked).
    AcceptNonce {
        /// The request's `webhook-id`.
        nonce: String,
        /// The request's `webhook-timestamp` (Unix seconds, via [`Timestamp::from_secs`]).
        timestamp: Timestamp,
        /// The allowed skew between the timestamp and now.
        tolerance_seconds: u32,
        /// How many unexpired nonces the webhook may remember.
        window_capacity: usize,
    },
}

/// What happened to a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WebhookEvent {
    /// It was created.
    Created {
        /// Its id.
        id: WebhookId,
        /// Its policy.
        policy_id: PolicyId,
        /// Its group.
        group_id: GroupId,
        /// Its owner.
        tenant_id: TenantId,
        /// Its name.
        name: String,
        /// Its secret.
        secret: Secret,
        /// When.
        at: Timestamp,
    },
    /// Its secret was replaced; the old one is valid until `previous_valid_until`.
    Rotated {
        /// The new secret.
        secret: Secret,
        /// The first instant the old secret is no longer valid.
        previous_valid_until: Timestamp,
        /// When.
        at: Timestamp,
    },
    /// It was revoked.
    Revoked {
        /// When.
        at: Timestamp,
    },
    /// A request's nonce was accepted; it is remembered until `expires_at` inclusive.
    NonceAccepted {
        /// The nonce.
        nonce: String,
        /// The request's timestamp plus the tolerance.
        expires_at: Timestamp,
        /// When.
        at: Timestamp,
    },
}

impl DomainEvent for WebhookEvent {
    const SCHEMA: u16 = 1;

    fn kind(&self) -> &'static str {
        match self {
            WebhookEvent::Created { .. } => "created",
            WebhookEvent::Rotated { .. } => "rotated",
            WebhookEvent::Revoked { .. } => "revoked",
            WebhookEvent::NonceAccepted { .. } => "nonce_accepted",
        }
    }
}

/// Decides what a command does to a webhook at `now`. Holds every rule.
pub fn decide(
    state: &WebhookState,
    cmd: &WebhookCommand,
    now: Timestamp,
) -> Result<Vec<WebhookEvent>, Rejection> {
    if let WebhookCommand::Create {
        id,
        policy_id,
        group_id,
        tenant_id,
        name,
        secret,
    } = cmd
    {
        if state.is_some() {
            return Err(Rejection::already_exists("webhook"));
        }
        validate_name("name", name)?;
        return Ok(vec![WebhookEvent::Created {
            id: id.clone(),
            policy_id: policy_id.clone(),
            group_id: group_id.clone(),
            tenant_id: tenant_id.clone(),
            name: name.clone(),
            secret: secret.clone(),
            at: now,
        }]);
    }
    // A revoked webhook's call is refused where the whole route is decided (`route::check`),
    // together with the execution its nonce rides with; nothing else may be asked of one.
    let webhook = match state {
        Some(webhook) if !webhook.revoked || matches!(cmd, WebhookCommand::AcceptNonce { .. }) => {
            webhook
        }
        _ => return Err(Rejection::not_found("webhook")),
    };
    match cmd {
        WebhookCommand::Create { .. } => Err(Rejection::already_exists("webhook")),
        WebhookCommand::Rotate {
            new_secret,
            grace_seconds,
        } => {
            let grace = grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
            validate_cooldown("grace_seconds", grace)?;
            let in_grace = webhook
                .previous
                .iter()
                .filter(|previous| now < previous.valid_until)
                .count();
            if grace > 0 && in_grace >= MAX_PREVIOUS_SECRETS {
                return Err(Rejection::Conflict {
                    reason: format!(
                        "{in_grace} replaced secrets are still within their grace; wait for one \
                         to end, or rotate with grace_seconds 0"
                    ),
                });
            }
            Ok(vec![WebhookEvent::Rotated {
                secret: new_secret.clone(),
                previous_valid_until: now.plus_secs(grace),
                at: now,
            }])
        }
        WebhookCommand::Revoke => Ok(vec![WebhookEvent::Revoked { at: now }]),
        WebhookCommand::AcceptNonce {
            nonce,
            timestamp,
            tolerance_seconds,
            window_capacity,
        } => decide_accept_nonce(
            webhook,
            nonce,
            *timestamp,
            *tolerance_seconds,
            *window_capacity,
            now,
        ),
    }
}

fn decide_accept_nonce(
    webhook: &Webhook,
    nonce: &str,
    timestamp: Timestamp,
    tolerance_seconds: u32,
    window_capacity: usize,
    now: Timestamp,
) -> Result<Vec<WebhookEvent>, Rejection> {
    validate_nonce(nonce)?;
    let skew_millis = now.saturating_sub(timestamp).unsigned_abs();
    let tolerance_millis = u64::from(tolerance_seconds) * 1_000;
    if skew_millis > tolerance_millis {
        return Err(Rejection::TimestampOutOfWindow {
            skew_seconds: skew_millis.div_ceil(1_000),
            tolerance_seconds,
        });
    }
    match webhook.nonces.check(nonce, now, window_capacity) {
        Ok(()) => {}
        Err(Refusal::Replayed) => return Err(Rejection::Replayed),
        Err(Refusal::Full { earliest_expiry }) => {
            // The earliest nonce is forgotten one millisecond after its expiry.
            let retry_after_seconds = earliest_expiry
                .map_or(u64::from(tolerance_seconds), |expiry| {
                    millis_to_secs_rounded_up(expiry.plus_millis(1).saturating_sub(now))
                })
                .max(1);
            return Err(Rejection::NonceWindowFull {
                retry_after_seconds,
            });
        }
    }
    Ok(vec![WebhookEvent::NonceAccepted {
        nonce: nonce.to_owned(),
        expires_at: timestamp.plus_secs(tolerance_seconds),
        at: now,
    }])
}

/// A nonce is 1 to 128 printable ASCII characters without space (0x21 to 0x7e).
fn validate_nonce(nonce: &str) -> Result<(), Rejection> {
    if nonce.is_empty() || nonce.len() > MAX_NONCE_CHARS {
        return Err(Rejection::invalid(
            "nonce",
            format!("(the webhook-id) must have 1 to {MAX_NONCE_CHARS} characters"),
        ));
    }
    if !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Rejection::invalid(
            "nonce",
            "(the webhook-id) must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// Records what an event says. Holds no rules.
pub fn apply(state: WebhookState, event: &WebhookEvent) -> WebhookState {
    if let WebhookEvent::Created {
        id,
        policy_id,
        group_id,
        tenant_id,
        name,
        secret,
        at,
    } = event
    {
        return Some(Webhook {
            id: id.clone(),
            policy_id: policy_id.clone(),
            group_id: group_id.clone(),
            tenant_id: tenant_id.clone(),
            name: name.clone(),
            secret: secret.clone(),
            previous: Vec::new(),
            revoked: false,
            nonces: NonceWindow::new(),
            created_at: *at,
        });
    }
    let mut webhook = state?;
    match event {
        WebhookEvent::Created { .. } => {}
        WebhookEvent::Rotated {
            secret,
            previous_valid_until,
            at,
        } => {
            let old = std::mem::replace(&mut webhook.secret, secret.clone());
            webhook
                .previous
                .retain(|previous| *at < previous.valid_until);
            webhook.previous.push(PreviousSecret {
                secret: old,
                valid_until: *previous_valid_until,
            });
        }
        WebhookEvent::Revoked { .. } => webhook.revoked = true,
        WebhookEvent::NonceAccepted {
            nonce,
            expires_at,
            at,
        } => webhook.nonces.remember(nonce, *expires_at, *at),
    }
    Some(webhook)
}

/// Rebuilds a webhook from its events, oldest first.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a WebhookEvent>) -> WebhookState {
    events.into_iter().fold(None, apply)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_700_000_000);
    const TOLERANCE: u32 = 300;

    fn secret(byte: u8) -> Secret {
        Secret::from_bytes([byte; 32])
    }

    fn given_webhook() -> WebhookState {
        let create = WebhookCommand::Create {
            id: WebhookId::new("whk_1"),
            policy_id: PolicyId::new("pol_1"),
            group_id: GroupId::new("grp_1"),
            tenant_id: TenantId::new("ten_1"),
            name: "pager".into(),
            secret: secret(1),
        };
        replay(&decide(&None, &create, T0).unwrap())
    }

    fn accept(nonce: &str, timestamp: Timestamp, capacity: usize) -> WebhookCommand {
        WebhookCommand::AcceptNonce {
            nonce: nonce.into(),
            timestamp,
            tolerance_seconds: TOLERANCE,
            window_capacity: capacity,
        }
    }

    fn when(
        state: WebhookState,
        cmd: &WebhookCommand,
        now: Timestamp,
    ) -> Result<WebhookState, Rejection> {
        let events = decide(&state, cmd, now)?;
        Ok(events.iter().fold(state, apply))
    }

    #[test]
    fn a_secret_prints_as_stars_and_serializes_as_whsec_base64() {
        let s = secret(0xab);
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, format!("\"whsec_{}\"", STANDARD.encode([0xab; 32])));
        let back: Secret = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn a_secret_of_the_wrong_shape_is_refused_without_echoing_it() {
        for bad in [
            "",
            "whsec_",
            "sk_AAAA",
            "whsec_!!!!",
            &format!("whsec_{}", STANDARD.encode([1u8; 31])),
        ] {
            assert_eq!(bad.parse::<Secret>(), Err(MalformedSecret));
        }
        let error = serde_json::from_str::<Secret>("\"whsec_c2VjcmV0\"").unwrap_err();
        assert!(!error.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn a_webhook_state_never_shows_its_secret_in_debug() {
        let debug = format!("{:?}", given_webhook());
        assert!(!debug.contains(&secret(1).to_whsec()));
        assert!(debug.contains("Secret(***)"));
    }

    #[test]
    fn after_rotation_the_old_secret_is_valid_until_just_before_the_grace_ends() {
        let rotate = WebhookCommand::Rotate {
            new_secret: secret(2),
            grace_seconds: Some(60),
        };
        let state = when(given_webhook(), &rotate, T0).unwrap().unwrap();
        let end = T0.plus_secs(60u32);
        let before: Vec<_> = state.valid_secrets(end.plus_millis(-1)).cloned().collect();
        assert_eq!(before, vec![secret(2), secret(1)]);
        let at_end: Vec<_> = state.valid_secrets(end).cloned().collect();
        assert_eq!(at_end, vec![secret(2)]);
    }

    #[test]
    fn the_default_grace_is_one_day_and_more_than_a_week_is_refused() {
        let rotate = WebhookCommand::Rotate {
            new_secret: secret(2),
            grace_seconds: None,
        };
        let state = when(given_webhook(), &rotate, T0).unwrap().unwrap();
        assert_eq!(state.previous[0].valid_until, T0.plus_secs(86_400u32));
        let too_long = WebhookCommand::Rotate {
            new_secret: secret(2),
            grace_seconds: Some(86_400 * 7 + 1),
        };
        assert!(matches!(
            decide(&given_webhook(), &too_long, T0),
            Err(Rejection::Invalid {
                field: "grace_seconds",
                ..
            })
        ));
    }

    #[test]
    fn a_second_rotation_within_the_grace_keeps_every_secret_in_its_own_grace() {
        let rotate = |byte, grace| WebhookCommand::Rotate {
            new_secret: secret(byte),
            grace_seconds: Some(grace),
        };
        let state = when(given_webhook(), &rotate(2, 60), T0).unwrap();
        let state = when(state, &rotate(3, 600), T0.plus_secs(10u32)).unwrap();
        let at = |secs: u32| -> Vec<Secret> {
            let webhook = state.as_ref().unwrap();
            webhook.valid_secrets(T0.plus_secs(secs)).cloned().collect()
        };
        assert_eq!(at(30), vec![secret(3), secret(2), secret(1)]);
        assert_eq!(
            at(60),
            vec![secret(3), secret(2)],
            "the first ends at its own grace"
        );
        assert_eq!(at(610), vec![secret(3)]);
        // A rotation drops what had already ended by then.
        let state = when(state, &rotate(4, 60), T0.plus_secs(700u32))
            .unwrap()
            .unwrap();
        assert_eq!(state.previous.len(), 1);
    }

    #[test]
    fn past_the_most_secrets_in_grace_a_rotation_is_409_unless_it_grants_none() {
        let rotate = |byte, grace| WebhookCommand::Rotate {
            new_secret: secret(byte),
            grace_seconds: Some(grace),
        };
        let mut state = given_webhook();
        for byte in 0..MAX_PREVIOUS_SECRETS as u8 {
            state = when(state, &rotate(10 + byte, 600), T0).unwrap();
        }
        let refused = decide(&state, &rotate(99, 600), T0).unwrap_err();
        assert_eq!(refused.status(), 409);
        assert!(decide(&state, &rotate(99, 0), T0).is_ok());
        assert!(decide(&state, &rotate(99, 600), T0.plus_secs(600u32)).is_ok());
    }

    #[test]
    fn a_snapshot_with_one_previous_secret_or_none_still_decodes() {
        let webhook = given_webhook().unwrap();
        let mut saved = serde_json::to_value(&webhook).unwrap();
        saved["previous"] = serde_json::Value::Null;
        let none: Webhook = serde_json::from_value(saved.clone()).unwrap();
        assert!(none.previous.is_empty());
        saved["previous"] = serde_json::json!({"secret": secret(7).to_whsec(), "valid_until": 5});
        let one: Webhook = serde_json::from_value(saved).unwrap();
        assert_eq!(one.previous.len(), 1);
        assert_eq!(one.previous[0].secret, secret(7));
    }

    #[test]
    fn a_revoked_webhook_is_not_found_for_management_and_leaves_its_calls_to_the_route() {
        let revoked = when(given_webhook(), &WebhookCommand::Revoke, T0).unwrap();
        // A call's nonce is decided here, its liveness by `route::check` with the execution it
        // rides with, which refuses a revoked webhook: the nonce is then never recorded.
        assert!(decide(&revoked, &accept("n1", T0, 10), T0).is_ok());
        let commands = [
            WebhookCommand::Revoke,
            WebhookCommand::Rotate {
                new_secret: secret(2),
                grace_seconds: None,
            },
        ];
        for cmd in commands {
            assert_eq!(decide(&revoked, &cmd, T0).unwrap_err().status(), 404);
        }
        assert_eq!(
            decide(&None, &accept("n1", T0, 10), T0)
                .unwrap_err()
                .status(),
            404
        );
    }

    #[test]
    fn an_accepted_nonce_expires_at_its_timestamp_plus_the_tolerance() {
        let events = decide(&given_webhook(), &accept("n1", T0, 10), T0.plus_secs(5u32)).unwrap();
        assert_eq!(
            events,
            vec![WebhookEvent::NonceAccepted {
                nonce: "n1".into(),
                expires_at: T0.plus_secs(TOLERANCE),
                at: T0.plus_secs(5u32),
            }]
        );
    }

    #[test]
    fn a_timestamp_exactly_tolerance_away_is_in_window_and_one_millisecond_more_is_not() {
        let state = given_webhook();
        let now = T0.plus_secs(1_000u32);
        let edge = i64::from(TOLERANCE) * 1_000;
        for ts in [now.plus_millis(-edge), now.plus_millis(edge)] {
            assert!(decide(&state, &accept("n1", ts, 10), now).is_ok());
        }
        for ts in [now.plus_millis(-edge - 1), now.plus_millis(edge + 1)] {
            let rejection = decide(&state, &accept("n1", ts, 10), now).unwrap_err();
            assert_eq!(rejection.code(), "timestamp_out_of_window");
            assert_eq!(rejection.status(), 401);
        }
    }

    #[test]
    fn a_replay_is_refused_up_to_and_including_the_expiry_and_then_is_out_of_window() {
        let state = when(given_webhook(), &accept("n1", T0, 10), T0).unwrap();
        let expires_at = T0.plus_secs(TOLERANCE);
        for now in [T0, T0.plus_millis(1), expires_at] {
            let rejection = decide(&state, &accept("n1", T0, 10), now).unwrap_err();
            assert_eq!((rejection.code(), rejection.status()), ("replayed", 409));
        }
        let after = expires_at.plus_millis(1);
        let rejection = decide(&state, &accept("n1", T0, 10), after).unwrap_err();
        assert_eq!(rejection.code(), "timestamp_out_of_window");
    }

    #[test]
    fn a_forgotten_nonce_with_a_fresh_timestamp_is_accepted_again() {
        let state = when(given_webhook(), &accept("n1", T0, 10), T0).unwrap();
        let after = T0.plus_secs(TOLERANCE).plus_millis(1);
        assert!(decide(&state, &accept("n1", after, 10), after).is_ok());
    }

    #[test]
    fn a_full_window_refuses_with_a_retry_after_and_never_evicts() {
        let mut state = given_webhook();
        for (i, nonce) in ["a", "b"].iter().enumerate() {
            let now = T0.plus_secs(i as u32);
            state = when(state, &accept(nonce, now, 2), now).unwrap();
        }
        // "a" expires at T0 + 300 s and is forgotten one millisecond later.
        let now = T0.plus_secs(10u32);
        let rejection = decide(&state, &accept("c", now, 2), now).unwrap_err();
        assert_eq!(
            rejection,
            Rejection::NonceWindowFull {
                retry_after_seconds: 291
            }
        );
        assert_eq!(
            (rejection.status(), rejection.retry_after_seconds()),
            (429, Some(291))
        );
        let webhook = state.clone().unwrap();
        assert!(webhook.nonces.is_remembered("a", now) && webhook.nonces.is_remembered("b", now));

        let at_expiry = T0.plus_secs(TOLERANCE);
        let rejection = decide(&state, &accept("c", at_expiry, 2), at_expiry).unwrap_err();
        assert_eq!(rejection.retry_after_seconds(), Some(1));
        let after = at_expiry.plus_millis(1);
        let state = when(state, &accept("c", after, 2), after).unwrap().unwrap();
        assert!(!state.nonces.is_remembered("a", after));
        assert_eq!(state.nonces.len(), 2);
    }

    #[test]
    fn a_nonce_must_be_1_to_128_printable_ascii_characters() {
        let state = given_webhook();
        assert!(decide(&state, &accept(&"x".repeat(128), T0, 10), T0).is_ok());
        assert!(decide(&state, &accept("!~", T0, 10), T0).is_ok());
        for bad in [
            String::new(),
            "x".repeat(129),
            "a b".into(),
            "é".into(),
            "a\u{7f}".into(),
            "a\n".into(),
        ] {
            let rejection = decide(&state, &accept(&bad, T0, 10), T0).unwrap_err();
            assert_eq!(rejection.status(), 400, "{bad:?}");
        }
    }

    #[test]
    fn a_nonce_accepted_event_serializes_flat_with_millisecond_timestamps() {
        let event = WebhookEvent::NonceAccepted {
            nonce: "msg_1".into(),
            expires_at: T0.plus_secs(TOLERANCE),
            at: T0,
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({
                "type": "nonce_accepted",
                "nonce": "msg_1",
                "expires_at": 1_700_000_300_000i64,
                "at": 1_700_000_000_000i64
            })
        );
        assert_eq!(event.kind(), "nonce_accepted");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const CAPACITY: usize = 3;
        const SHORT_TOLERANCE: u32 = 2;

        fn command() -> impl Strategy<Value = WebhookCommand> {
            prop_oneof![
                1 => (1u8..4).prop_map(|byte| WebhookCommand::Create {
                    id: WebhookId::new("whk_1"),
                    policy_id: PolicyId::new("pol_1"),
                    group_id: GroupId::new("grp_1"),
                    tenant_id: TenantId::new("ten_1"),
                    name: "pager".into(),
                    secret: secret(byte),
                }),
                1 => ((1u8..9), proptest::option::of(0u32..4)).prop_map(|(byte, grace_seconds)| {
                    WebhookCommand::Rotate { new_secret: secret(byte), grace_seconds }
                }),
                1 => Just(WebhookCommand::Revoke),
                12 => (prop_oneof![Just("a"), Just("b"), Just("c"), Just("d"), Just("e"), Just("x y")], -3_000i64..3_000)
                    .prop_map(|(nonce, offset)| WebhookCommand::AcceptNonce {
                        nonce: nonce.into(),
                        // Offset from T0 for now; rebased on the current time below.
                        timestamp: Timestamp::from_millis(offset),
                        tolerance_seconds: SHORT_TOLERANCE,
                        window_capacity: CAPACITY,
                    }),
            ]
        }

        /// Makes an `AcceptNonce` timestamp relative to `now`.
        fn at_now(cmd: WebhookCommand, now: Timestamp) -> WebhookCommand {
            match cmd {
                WebhookCommand::AcceptNonce {
                    nonce,
                    timestamp,
                    tolerance_seconds,
                    window_capacity,
                } => WebhookCommand::AcceptNonce {
                    nonce,
                    timestamp: now.plus_millis(timestamp.as_millis()),
                    tolerance_seconds,
                    window_capacity,
                },
                other => other,
            }
        }

        proptest! {
            #[test]
            fn live_state_equals_the_replay_of_its_events_across_restarts_and_no_replay_is_accepted(
                steps in proptest::collection::vec((0i64..1_500, proptest::bool::weighted(0.1), command()), 1..80)
            ) {
                let mut now = T0;
                let mut live: WebhookState = None;
                let mut journal: Vec<WebhookEvent> = Vec::new();
                for (advance, restart, cmd) in steps {
                    now = now.plus_millis(advance);
                    if restart {
                        // A restart rebuilds the state from the journal alone.
                        live = replay(&journal);
                    }
                    let cmd = at_now(cmd, now);
                    let Ok(events) = decide(&live, &cmd, now) else { continue };
                    for event in events {
                        if let WebhookEvent::NonceAccepted { nonce, .. } = &event {
                            let replayed = journal.iter().any(|earlier| matches!(
                                earlier,
                                WebhookEvent::NonceAccepted { nonce: n, expires_at, .. } if n == nonce && now <= *expires_at
                            ));
                            prop_assert!(!replayed, "nonce {} accepted twice in its window", nonce);
                        }
                        live = apply(live, &event);
                        journal.push(event);
                    }
                    if let Some(webhook) = &live {
                        prop_assert!(webhook.nonces.len() <= CAPACITY);
                    }
                }
                prop_assert_eq!(&replay(&journal), &live);
                let lines: Vec<String> = journal.iter().map(|e| serde_json::to_string(e).unwrap()).collect();
                let decoded: Vec<WebhookEvent> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
                prop_assert_eq!(&decoded, &journal);
                prop_assert_eq!(replay(&decoded), live);
            }
        }
    }
}
