//! The pure domain of Flotilla: for each object, a state, its commands, its past-tense events,
//! `decide` (every rule: returns what happened, or why not) and `apply` (no rules: records what an
//! event says). Nothing here knows of actors, HTTP, sled or the system clock; "now" is passed in.
//!
//! This module holds what the objects share: ids, [`Rejection`], [`Cause`], [`DomainEvent`] and
//! the name rule.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod alarm;
pub mod evaluation;
pub mod group;
pub mod json;
pub mod nonce_window;
pub mod policy;
pub mod receiver;
pub mod route;
pub mod samples;
pub mod scaling;
pub mod schedule;
pub mod scheduled;
pub mod server;
pub mod tenant;
pub mod tracking;
pub mod webhook;

/// Defines a string id newtype with a prefix and a random constructor.
///
/// The text is shared (`Arc<str>`): an id is cloned into every read model that names it (the
/// index's owners and listings, the alarm table, the series store), and a clone is a count, not
/// a copy. With 100k groups, policies and alarms resident that is about 90 MB less.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            /// The prefix of every generated id of this kind.
            pub const PREFIX: &'static str = $prefix;

            /// Wraps an existing id (one read from a path or a journal).
            pub fn new(id: impl Into<String>) -> Self {
                $name(std::sync::Arc::from(id.into()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(std::sync::Arc::from(id))
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Hash and Eq are derived from the inner `str`, so they agree with `str`'s: a map
        // keyed by ids can be asked with a borrowed `&str`, allocating nothing.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A tenant's id, `ten_` followed by a v4 uuid.
    TenantId,
    "ten_"
);
string_id!(
    /// A group's id, `grp_` followed by a v4 uuid.
    GroupId,
    "grp_"
);
string_id!(
    /// A policy's id, `pol_` followed by a v4 uuid.
    PolicyId,
    "pol_"
);
string_id!(
    /// An alarm's id, `alm_` followed by a v4 uuid.
    AlarmId,
    "alm_"
);
string_id!(
    /// A scheduled action's id, `sch_` followed by a v4 uuid.
    ScheduleId,
    "sch_"
);
string_id!(
    /// An Alertmanager receiver's id, `rcv_` followed by a v4 uuid.
    ReceiverId,
    "rcv_"
);
string_id!(
    /// A webhook's id. It is part of a capability URL, so it is unguessable: `whk_` followed by
    /// two v4 uuids (244 random bits).
    WebhookId,
    "whk_"
);

/// The kinds of object, each with the prefix of its ids (which are also its journal stream ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A tenant (`ten_`).
    Tenant,
    /// A group (`grp_`).
    Group,
    /// A policy (`pol_`).
    Policy,
    /// A webhook (`whk_`).
    Webhook,
    /// An alarm (`alm_`).
    Alarm,
    /// A scheduled action (`sch_`).
    Schedule,
    /// An Alertmanager receiver (`rcv_`).
    Receiver,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 7] = [
        Kind::Tenant,
        Kind::Group,
        Kind::Policy,
        Kind::Webhook,
        Kind::Alarm,
        Kind::Schedule,
        Kind::Receiver,
    ];

    /// The kind of the object (or stream) `id`, from its prefix.
    pub fn of(id: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|kind| id.starts_with(kind.prefix()))
    }

    /// The prefix of its ids.
    pub const fn prefix(self) -> &'static str {
        match self {
            Kind::Tenant => TenantId::PREFIX,
            Kind::Group => GroupId::PREFIX,
            Kind::Policy => PolicyId::PREFIX,
            Kind::Webhook => WebhookId::PREFIX,
            Kind::Alarm => AlarmId::PREFIX,
            Kind::Schedule => ScheduleId::PREFIX,
            Kind::Receiver => ReceiverId::PREFIX,
        }
    }

    /// Whether an event of type `event_type` in a stream of this kind can change who owns what,
    /// or which token is whose: a creation, a deletion or revocation, a server's launch or
    /// deletion (each mints or retires a metrics token). A reader of ownership (the service's
    /// index) decodes only those; the test below ties each name to its event.
    pub fn changes_ownership(self, event_type: &str) -> bool {
        match self {
            Kind::Tenant => matches!(event_type, "created" | "token_rotated"),
            Kind::Policy | Kind::Alarm | Kind::Schedule | Kind::Receiver => {
                matches!(event_type, "created" | "deleted")
            }
            Kind::Webhook => matches!(event_type, "created" | "revoked"),
            Kind::Group => matches!(
                event_type,
                "created"
                    | "deleted"
                    | "metrics_token_rotated"
                    | "server_launch_requested"
                    | "server_deleted"
            ),
        }
    }

    /// Its name, as logs, errors and `replay` show it.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Tenant => "tenant",
            Kind::Group => "group",
            Kind::Policy => "policy",
            Kind::Webhook => "webhook",
            Kind::Alarm => "alarm",
            Kind::Schedule => "schedule",
            Kind::Receiver => "receiver",
        }
    }
}

fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl TenantId {
    /// A fresh random id.
    pub fn generate() -> Self {
        TenantId::new(format!("{}{}", Self::PREFIX, random_suffix()))
    }
}

impl GroupId {
    /// A fresh random id.
    pub fn generate() -> Self {
        GroupId::new(format!("{}{}", Self::PREFIX, random_suffix()))
    }
}

impl PolicyId {
    /// A fresh random id.
    pub fn generate() -> Self {
        PolicyId::new(format!("{}{}", Self::PREFIX, random_suffix()))
    }
}

impl ReceiverId {
    /// A fresh random id.
    pub fn generate() -> Self {
        ReceiverId::new(format!("{}{}", Self::PREFIX, random_suffix()))
    }
}

impl ScheduleId {
    /// A fresh random id.
    pub fn generate() -> Self {
        ScheduleId::new(format!("{}{}", Self::PREFIX, random_suffix()))
    }
}

impl AlarmId {
    /// A fresh random id.
    pub fn generate() -> Self {
        AlarmId::new(format!("{}{}", Self::PREFIX, random_suffix()))
    }
}

impl WebhookId {
    /// A fresh unguessable id (two v4 uuids, 244 random bits).
    pub fn generate() -> Self {
        WebhookId::new(format!(
            "{}{}{}",
            Self::PREFIX,
            random_suffix(),
            random_suffix()
        ))
    }
}

/// Why a command was refused. Each variant has a stable snake_case [`code`](Rejection::code) and
/// the HTTP [`status`](Rejection::status) it maps to, written beside it.
///
/// A rejection is a normal answer, not a fault: faults of storage live in another error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// 400 `invalid_input`: a field's value breaks a rule. The message names the field.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, as named in the API (`min_size`, `launch.provider`, ...).
        field: &'static str,
        /// What is wrong with it, in lowercase prose.
        reason: String,
    },
    /// 404 `not_found`: the object does not exist, was deleted, or (webhooks) was revoked.
    #[error("{object} not found")]
    NotFound {
        /// The kind of object: `group`, `policy`, ...
        object: &'static str,
    },
    /// 409 `already_exists`: a create for an id that already has a history.
    #[error("{object} already exists")]
    AlreadyExists {
        /// The kind of object.
        object: &'static str,
    },
    /// 409 `conflict`: the object's current state forbids the request (e.g. deleting a group
    /// that still has servers, without `force`).
    #[error("conflict: {reason}")]
    Conflict {
        /// What stands in the way, in lowercase prose.
        reason: String,
    },
    /// 401 `timestamp_out_of_window`: a signed request's timestamp is too far from now.
    #[error("timestamp is {skew_seconds} s away from now, beyond the tolerance of {tolerance_seconds} s")]
    TimestampOutOfWindow {
        /// |now − timestamp|, rounded up to whole seconds.
        skew_seconds: u64,
        /// The allowed skew.
        tolerance_seconds: u32,
    },
    /// 409 `replayed`: this nonce was already accepted for this webhook and is still remembered.
    #[error("nonce already used")]
    Replayed,
    /// 413 `too_large`: a field's JSON is over its size limit (an object's `metadata` or
    /// `launch`: 64 KiB), so that no object is accepted that the journal would then refuse.
    #[error("{field} is {size} bytes of JSON, over the limit of {limit}")]
    TooLarge {
        /// The field, as named in the API.
        field: &'static str,
        /// Its size, in bytes of compact JSON.
        size: usize,
        /// The most it may have.
        limit: usize,
    },
    /// 429 `rate_limited`: the caller spent its rate limit; it may try again after
    /// `retry_after_seconds` (the `Retry-After` header).
    #[error("{what}; retry after {retry_after_seconds} s")]
    RateLimited {
        /// Whose limit, in lowercase prose.
        what: &'static str,
        /// Seconds until a call is allowed again.
        retry_after_seconds: u64,
    },
    /// 400 `metric_value_required`: a step policy executed without the breach its step is
    /// chosen by (`metric_value` and `breach_threshold`).
    #[error(
        "a step policy chooses its step by the breach: send metric_value and breach_threshold"
    )]
    MetricValueRequired,
    /// 429 `nonce_window_full`: the webhook remembers as many nonces as it may; none expires
    /// early, so the caller must wait `retry_after_seconds` (the `Retry-After` header).
    #[error("too many recent calls to this webhook; retry after {retry_after_seconds} s")]
    NonceWindowFull {
        /// Seconds until the earliest remembered nonce is forgotten.
        retry_after_seconds: u64,
    },
}

impl Rejection {
    /// A 400 naming `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Rejection::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// A 404 for a kind of object.
    pub fn not_found(object: &'static str) -> Self {
        Rejection::NotFound { object }
    }

    /// A 409 for a create over an existing history.
    pub fn already_exists(object: &'static str) -> Self {
        Rejection::AlreadyExists { object }
    }

    /// The stable snake_case code of the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Invalid { .. } => "invalid_input",
            Rejection::NotFound { .. } => "not_found",
            Rejection::AlreadyExists { .. } => "already_exists",
            Rejection::Conflict { .. } => "conflict",
            Rejection::TimestampOutOfWindow { .. } => "timestamp_out_of_window",
            Rejection::Replayed => "replayed",
            Rejection::NonceWindowFull { .. } => "nonce_window_full",
            Rejection::RateLimited { .. } => "rate_limited",
            Rejection::TooLarge { .. } => "too_large",
            Rejection::MetricValueRequired => "metric_value_required",
        }
    }

    /// The HTTP status this rejection answers with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Invalid { .. } | Rejection::MetricValueRequired => 400,
            Rejection::TimestampOutOfWindow { .. } => 401,
            Rejection::NotFound { .. } => 404,
            Rejection::AlreadyExists { .. } | Rejection::Conflict { .. } | Rejection::Replayed => {
                409
            }
            Rejection::TooLarge { .. } => 413,
            Rejection::NonceWindowFull { .. } | Rejection::RateLimited { .. } => 429,
        }
    }

    /// Seconds to put in a `Retry-After` header, for the rejections that have one.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Rejection::NonceWindowFull {
                retry_after_seconds,
            }
            | Rejection::RateLimited {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            _ => None,
        }
    }
}

/// What set a scaling in motion; recorded with every capacity change and policy execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Cause {
    /// A tenant's direct request (`.../execute`, or setting the capacity).
    Direct,
    /// A signed webhook call.
    Webhook {
        /// The webhook that was called.
        webhook_id: WebhookId,
    },
    /// An alarm's action.
    Alarm {
        /// The alarm whose state caused it.
        alarm_id: AlarmId,
        /// The alarm's reason: the datapoints that decided it.
        reason: String,
    },
    /// A scheduled action.
    Schedule {
        /// The action (absent in records from before it was named).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schedule_id: Option<ScheduleId>,
    },
    /// An Alertmanager notification (SPEC 5.3).
    Alertmanager {
        /// The receiver it came to.
        receiver_id: ReceiverId,
        /// The alert's `alertname` label.
        alertname: String,
        /// The alert's fingerprint.
        fingerprint: String,
    },
    /// A target-tracking decision: the event's `tracking` names each policy's datapoint and
    /// recommendation.
    TargetTracking,
    /// A change of the group's bounds that forced its capacity into range.
    Bounds,
}

/// Implemented by every event enum: what the journal needs to store and name an event.
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The version of this enum's serialized shape; bumped on an incompatible change.
    const SCHEMA: u16;

    /// The snake_case name of the event, the same as its serialized `type` (`policy_executed`).
    fn kind(&self) -> &'static str;
}

/// The longest name, in characters, of any object.
pub const MAX_NAME_CHARS: usize = 255;

/// The longest allowed cooldown or rotation grace: one week, in seconds.
pub const MAX_COOLDOWN_SECONDS: u32 = 86_400 * 7;

/// The most bytes of compact JSON an object's free-form field may hold (a group's `metadata`,
/// its `launch`): far below the journal's 1 MiB a record, with every field of the object
/// together.
pub const MAX_FIELD_JSON_BYTES: usize = 64 * 1024;

/// A free-form field holds at most [`MAX_FIELD_JSON_BYTES`] of compact JSON (413 naming it).
pub(crate) fn validate_json_size(
    field: &'static str,
    value: &impl Serialize,
) -> Result<(), Rejection> {
    let size = serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_FIELD_JSON_BYTES {
        return Err(Rejection::TooLarge {
            field,
            size,
            limit: MAX_FIELD_JSON_BYTES,
        });
    }
    Ok(())
}

/// The bidirectional embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069):
/// in a name, they make the console and a terminal show it in another order than it is read
/// ("Trojan Source", CVE-2021-42574). A right-to-left name needs none of them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// [`validate_name`], of a name that replaces `current` (when the object has one): a name sent
/// back unchanged is not judged again, so a rule added since it was taken refuses no change of
/// the object's other fields.
pub(crate) fn validate_renamed(
    field: &'static str,
    name: &str,
    current: Option<&str>,
) -> Result<(), Rejection> {
    if current == Some(name) {
        return Ok(());
    }
    validate_name(field, name)
}

/// The characters of the Basic Multilingual Plane that show nothing: a soft hyphen, the
/// combining grapheme joiner, the Arabic letter mark, the Hangul fillers, the Mongolian vowel
/// separator, zero-width spaces and joiners, the directional marks, word joiners and invisible
/// operators, variation selectors, the byte-order mark. A name of nothing else (or spaces)
/// shows as none.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2060}'..='\u{2064}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
    )
}

/// A name shows something, has at most [`MAX_NAME_CHARS`] characters, and neither control
/// characters nor bidirectional embeddings, overrides or isolates.
pub fn validate_name(field: &'static str, name: &str) -> Result<(), Rejection> {
    if name.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err(Rejection::invalid(
            field,
            "must not be empty, or only spaces and invisible characters",
        ));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(Rejection::invalid(
            field,
            format!("must have at most {MAX_NAME_CHARS} characters, has {chars}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Rejection::invalid(
            field,
            "must not contain control characters",
        ));
    }
    if let Some(c) = name.chars().find(|c| is_bidi_control(*c)) {
        return Err(Rejection::invalid(
            field,
            format!(
                "must not contain bidirectional embeddings, overrides or isolates (U+202A to \
                 U+202E, U+2066 to U+2069); has U+{:04X}",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// A cooldown (or grace) is at most [`MAX_COOLDOWN_SECONDS`].
pub(crate) fn validate_cooldown(field: &'static str, seconds: u32) -> Result<(), Rejection> {
    if seconds > MAX_COOLDOWN_SECONDS {
        return Err(Rejection::invalid(
            field,
            format!("must be at most {MAX_COOLDOWN_SECONDS} seconds (one week), is {seconds}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_carry_their_prefix_and_differ() {
        let a = GroupId::generate();
        let b = GroupId::generate();
        assert!(a.as_str().starts_with("grp_"));
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 4 + 32);
    }

    #[test]
    fn webhook_ids_hold_two_uuids_of_randomness() {
        let id = WebhookId::generate();
        assert!(id.as_str().starts_with("whk_"));
        assert_eq!(id.as_str().len(), 4 + 64);
    }

    #[test]
    fn a_kind_is_read_from_an_id_prefix() {
        assert_eq!(Kind::of(GroupId::generate().as_str()), Some(Kind::Group));
        assert_eq!(
            Kind::of(WebhookId::generate().as_str()),
            Some(Kind::Webhook)
        );
        assert_eq!(Kind::of("ten_1"), Some(Kind::Tenant));
        assert_eq!(Kind::of("pol_1"), Some(Kind::Policy));
        assert_eq!(Kind::of("alm_1"), Some(Kind::Alarm));
        assert_eq!(Kind::of("srv_1"), None);
        for kind in Kind::ALL {
            assert_eq!(Kind::of(kind.prefix()), Some(kind));
        }
    }

    #[test]
    fn the_events_that_change_ownership_are_named_by_their_own_kinds() {
        use crate::clock::Timestamp;
        let at = Timestamp::EPOCH;
        let named = [
            (Kind::Group, group::GroupEvent::Deleted { at }.kind()),
            (
                Kind::Group,
                group::GroupEvent::ServerDeleted {
                    server_id: "srv_1".into(),
                    at,
                }
                .kind(),
            ),
            (Kind::Policy, policy::PolicyEvent::Deleted { at }.kind()),
            (
                Kind::Group,
                group::GroupEvent::MetricsTokenRotated {
                    metrics_token_hash: String::new(),
                    at,
                }
                .kind(),
            ),
            (
                Kind::Tenant,
                tenant::TenantEvent::TokenRotated {
                    token_hash: String::new(),
                    at,
                }
                .kind(),
            ),
            (Kind::Webhook, webhook::WebhookEvent::Revoked { at }.kind()),
            (Kind::Alarm, alarm::AlarmEvent::Deleted { at }.kind()),
            (
                Kind::Schedule,
                scheduled::ScheduledEvent::Deleted { at_time: at }.kind(),
            ),
            (
                Kind::Receiver,
                receiver::ReceiverEvent::Deleted { at }.kind(),
            ),
        ];
        for (kind, event_type) in named {
            assert!(kind.changes_ownership(event_type), "{kind:?} {event_type}");
        }
        assert!(!Kind::Group.changes_ownership("policy_executed"));
        assert!(!Kind::Webhook.changes_ownership("nonce_accepted"));
        assert!(!Kind::Alarm.changes_ownership("state_changed"));
    }

    #[test]
    fn ids_serialize_as_plain_strings() {
        let json = serde_json::to_string(&PolicyId::new("pol_1")).unwrap();
        assert_eq!(json, "\"pol_1\"");
    }

    #[test]
    fn each_rejection_maps_to_its_code_and_status() {
        let cases = [
            (Rejection::invalid("name", "x"), "invalid_input", 400),
            (Rejection::not_found("group"), "not_found", 404),
            (Rejection::already_exists("group"), "already_exists", 409),
            (
                Rejection::TimestampOutOfWindow {
                    skew_seconds: 1,
                    tolerance_seconds: 0,
                },
                "timestamp_out_of_window",
                401,
            ),
            (Rejection::Conflict { reason: "x".into() }, "conflict", 409),
            (Rejection::Replayed, "replayed", 409),
            (
                Rejection::NonceWindowFull {
                    retry_after_seconds: 3,
                },
                "nonce_window_full",
                429,
            ),
        ];
        for (rejection, code, status) in cases {
            assert_eq!(rejection.code(), code);
            assert_eq!(rejection.status(), status);
        }
    }

    #[test]
    fn an_invalid_input_message_names_the_field() {
        let rejection = Rejection::invalid("min_size", "must be at most max_size (3), is 5");
        assert_eq!(
            rejection.to_string(),
            "invalid min_size: must be at most max_size (3), is 5"
        );
    }

    #[test]
    fn a_cause_serializes_with_its_type() {
        let cause = Cause::Alarm {
            alarm_id: AlarmId::new("alm_1"),
            reason: "3 of 3 datapoints breached".into(),
        };
        let json = serde_json::to_value(&cause).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "alarm", "alarm_id": "alm_1", "reason": "3 of 3 datapoints breached"})
        );
    }

    #[test]
    fn names_must_be_non_blank_and_short() {
        assert!(validate_name("name", "web").is_ok());
        assert!(validate_name("name", "  ").is_err());
        assert!(validate_name("name", &"x".repeat(255)).is_ok());
        assert!(validate_name("name", &"x".repeat(256)).is_err());
        assert!(validate_name("name", "a\nb").is_err());
        // Nothing visible is no name; a visible character among invisible ones is.
        for blank in ["\u{FEFF}", " \u{200B} ", "\u{00AD}\u{2060}"] {
            assert!(validate_name("name", blank).is_err(), "{blank:?}");
        }
        assert!(validate_name("name", "\u{FEFF}web").is_ok());
        // Right-to-left text is a name; the controls that reorder it are not.
        assert!(validate_name("name", "שרתים").is_ok());
        for control in ['\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}'] {
            let name = format!("web{control}gpj.exe");
            let refused = validate_name("name", &name).unwrap_err();
            assert_eq!(refused.status(), 400, "{control:?}");
            // Sent back unchanged, a name taken before the rule is not judged again.
            assert!(validate_renamed("name", &name, Some(&name)).is_ok());
            assert!(validate_renamed("name", &name, Some("web")).is_err());
        }
    }
}
