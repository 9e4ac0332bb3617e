//! The HTTP API (SPEC section 3) on actix-web, in front of the supervisor.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use flotilla_actors::supervisor::Supervisor;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use flotilla_actors::aggregate::Aggregate;
use flotilla_actors::domain::GroupId;
use flotilla_actors::object::Executed;

use crate::alarms::Evaluator;
use crate::index::Index;
use crate::ratelimit::WebhookLimits;
use crate::settings::Settings;
use crate::telemetry::Telemetry;

pub mod alarms;
pub mod auth;
pub mod error;
pub mod groups;
pub mod hooks;
pub mod journal;
pub mod openapi;
pub mod ops;
pub mod policies;
pub mod receivers;
pub mod remote_write;
pub mod resource;
pub mod samples;
pub mod schedules;
pub mod tenants;
pub mod views;
pub mod webhooks;
pub mod whole;

pub use error::ApiError;

/// What every handler shares.
pub struct AppState {
    /// Hosts the objects' actors.
    pub supervisor: Supervisor,
    /// Who owns what.
    pub index: Arc<Index>,
    /// The service's settings.
    pub settings: Settings,
    /// sha256 of the operator token.
    pub operator_token_hash: String,
    /// Set once the journal is replayed into the index.
    pub ready: Arc<crate::service::Readiness>,
    /// Webhook call limits.
    pub limits: Arc<WebhookLimits>,
    /// Metric samples and the alarms' evaluation.
    pub evaluator: Arc<Evaluator>,
    /// The service's own metrics.
    pub telemetry: Arc<Telemetry>,
    /// Converges groups to their capacity through their providers.
    pub converger: Arc<crate::converger::Converger>,
    /// On a shared database, catches the read models up with other nodes on a miss.
    pub catch_up: CatchUp,
    /// The web console's sign-in sessions.
    pub sessions: crate::console::session::Sessions,
    /// Which groups this node owns, and who owns the others (SPEC 9).
    pub ownership: Arc<crate::cluster::Ownership>,
}

/// On a shared database the read models follow what other nodes append a moment behind (the
/// service's "other nodes" loop), so an object created through another node may not be known
/// here yet: a lookup that misses catches up once, then looks again, before it answers 404 or
/// 401. Catch-ups are taken one at a time, and a miss waits for one that started after it
/// rather than starting its own, so a burst of misses (anyone can post to a made-up webhook
/// id) costs the database one query at a time.
#[derive(Default)]
pub struct CatchUp {
    /// `None` alone with the journal (sled): the read models are never behind.
    journal: Option<flotilla_journal::Journal>,
    turn: tokio::sync::Mutex<()>,
    /// Catch-ups started, and the last one ended (they end in the order they start).
    started: std::sync::atomic::AtomicU64,
    ended: std::sync::atomic::AtomicU64,
}

impl CatchUp {
    /// Catches up with `journal` on a miss if it is shared by other nodes.
    pub fn new(journal: Option<flotilla_journal::Journal>) -> CatchUp {
        CatchUp {
            journal,
            ..CatchUp::default()
        }
    }

    /// Whether `check` holds, asked again after a catch-up that started after the first ask
    /// if it did not (and the journal is shared).
    pub async fn known(&self, check: impl Fn() -> bool) -> bool {
        use std::sync::atomic::Ordering;
        if check() {
            return true;
        }
        let Some(journal) = &self.journal else {
            return false;
        };
        let missed = self.started.load(Ordering::Acquire);
        let _turn = self.turn.lock().await;
        if self.ended.load(Ordering::Acquire) <= missed {
            let round = self.started.fetch_add(1, Ordering::AcqRel) + 1;
            if let Err(error) = journal.catch_up_async().await {
                tracing::warn!(%error, "could not catch up with other nodes on a miss");
                return false;
            }
            self.ended.store(round, Ordering::Release);
        }
        check()
    }
}

impl AppState {
    /// Whether the journal has been replayed.
    pub fn is_ready(&self) -> bool {
        self.ready.is_ready()
    }

    /// Runs `command` against object `id`. The read models hold its events by the time it
    /// answers: the projector took them in before the journal acknowledged them.
    pub async fn execute<A: Aggregate>(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, ApiError> {
        Ok(self.supervisor.execute::<A>(id, command).await?)
    }

    /// [`Self::execute`] for a new object of group `group`, or a change to one, while the group
    /// is live: a deletion of the group racing it refuses it (404 `not_found`, the group), so
    /// no object is recorded after its group is gone. A new object's actor is started on its
    /// group's arbiter ([`flotilla_actors::supervisor::Placement`]).
    pub async fn create<A: Aggregate>(
        &self,
        group: &GroupId,
        id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, ApiError> {
        Ok(self
            .supervisor
            .execute_in_live::<A>(group, id, command)
            .await?)
    }

    /// [`Self::create`]'s guard for a change to an object of group `group`: none is recorded
    /// after the group's deletion.
    pub async fn change<A: Aggregate>(
        &self,
        group: &GroupId,
        id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, ApiError> {
        self.create::<A>(group, id, command).await
    }

    /// The tenant whose token has sha256 `hash`: one made (or a token given) through another
    /// node a moment ago is known once this node catches up.
    pub async fn tenant_of_token(&self, hash: &str) -> Option<flotilla_actors::domain::TenantId> {
        let of = || self.index.tenant_of_token(hash);
        self.catch_up.known(|| of().is_some()).await;
        of()
    }
}

/// `?limit=&cursor=` of every list. Each list documents them itself, with its cursor's pattern.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// At most this many items (default 100).
    pub limit: Option<usize>,
    /// Continue after this cursor: the `next_cursor` of the page before.
    pub cursor: Option<String>,
}

impl ListQuery {
    /// The cursor, if one was given, checked to be an id of the listed kind (`prefix`, then up
    /// to 255 printable ASCII characters): a list's cursor is the last id of the page before,
    /// so anything else did not come from `next_cursor` (400 `invalid_cursor`).
    pub fn cursor<I: for<'a> From<&'a str>>(&self, prefix: &str) -> Result<Option<I>, ApiError> {
        let Some(cursor) = self.cursor.as_deref() else {
            return Ok(None);
        };
        let printable = cursor.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if !cursor.starts_with(prefix) || !printable || cursor.len() > 255 {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "cursor must come from next_cursor",
            ));
        }
        Ok(Some(I::from(cursor)))
    }

    /// The page size, checked.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(n @ 1..=1000) => Ok(n),
            Some(_) => Err(ApiError::bad_request(
                "invalid_limit",
                "limit must be 1 to 1000",
            )),
        }
    }
}

/// A request's body, read whole up to `limit` bytes: past it, 413 `too_large` in the API's
/// error shape (actix's own limits answer in plain text).
pub async fn read_body(payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    payload
        .to_bytes_limited(limit)
        .await
        .map_err(|_| {
            ApiError::new(
                actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {limit} bytes"),
            )
        })?
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))
}

/// The raw body of a route that reads it itself (an optional JSON body, Alertmanager's
/// notification), up to SPEC 3's 2 MiB ([`crate::intake::MAX_BODY`]): `web::Bytes` would stop
/// at actix's 256 KiB and answer past it in plain text.
pub struct Body {
    /// Its bytes.
    pub bytes: web::Bytes,
    /// Whether it was declared JSON, or not declared at all.
    json: bool,
}

impl actix_web::FromRequest for Body {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(
        req: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        let json = declared_json(req.headers().get(actix_web::http::header::CONTENT_TYPE));
        let payload = web::Payload::from_request(req, payload).into_inner();
        Box::pin(async move {
            let payload =
                payload.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
            Ok(Body {
                bytes: read_body(payload, crate::intake::MAX_BODY).await?,
                json,
            })
        })
    }
}

/// Whether a request's `Content-Type` says JSON: `application/json` or an `application/...+json`
/// type, in any case, with or without parameters (and spaces before them); or no type at all.
fn declared_json(value: Option<&actix_web::http::header::HeaderValue>) -> bool {
    let Some(value) = value else { return true };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.is_empty()
        || essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.len() > 5 && subtype.ends_with("+json"))
}

impl Body {
    /// An optional JSON body: none when the body is empty (or only whitespace); otherwise as
    /// [`Self::json`] reads it.
    pub fn optional_json<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, ApiError> {
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        self.json().map(Some)
    }

    /// The body as `T`, or 415 when it was declared another type than JSON, or 400
    /// `invalid_json` naming the field at fault (`launch.seed: number out of range at line 1
    /// column 52`), where serde alone names none.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        if !self.json {
            return Err(ApiError::new(
                actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send application/json",
            ));
        }
        from_json(&self.bytes)
    }
}

/// `bytes` as `T`, or a 400 `invalid_json` naming the field at fault, where serde alone names
/// none. The path is sought only once the plain read failed: a good body costs no more.
pub fn from_json<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    // Every body of the API is an object; serde would read an array into a struct's fields in
    // their order (`["web", 0, 1]` a group).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object, not an array",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|error| ApiError::bad_request("invalid_json", fault::<T>(bytes, &error, "")))
}

/// What is wrong with `bytes` read as `T`, which failed with `error`: the field at fault
/// (found by reading them again, tracking the path), within `within` (a path, or none), then
/// serde's message; cut at 1 KiB, as serde may quote the caller's value or key whole.
pub fn fault<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    error: &serde_json::Error,
    within: &str,
) -> String {
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let field = match serde_path_to_error::deserialize::<_, T>(&mut reader) {
        Err(error) => field_of(error.path()),
        // The value read whole: what follows it is at fault, no field.
        Ok(_) => None,
    };
    let path = match (within, field) {
        ("", field) => field,
        (within, None) => Some(within.to_owned()),
        (within, Some(field)) if field.starts_with('[') => Some(format!("{within}{field}")),
        (within, Some(field)) => Some(format!("{within}.{field}")),
    };
    let mut message = match path {
        Some(path) => format!("{path}: {error}"),
        None => error.to_string(),
    };
    cut(&mut message, MAX_MESSAGE_SHOWN);
    message
}

/// The field a path names (`launch.seed`, `steps[1].lower`), as far as it is known: a syntax
/// error between a key and its value leaves the rest unknown. None for the whole body.
fn field_of(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut field = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => field.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
            }
            Segment::Unknown => break,
        }
    }
    // Keys are the caller's, up to the body's 2 MiB: an error names the start of a long one.
    cut(&mut field, MAX_FIELD_SHOWN);
    (!field.is_empty()).then_some(field)
}

/// `text` cut to at most `most` bytes (at a character's start) and an ellipsis, if longer.
fn cut(text: &mut String, most: usize) {
    if text.len() > most {
        let end = (0..=most)
            .rev()
            .find(|at| text.is_char_boundary(*at))
            .unwrap_or(0);
        text.truncate(end);
        text.push('…');
    }
}

/// The most bytes of a field's path an error shows.
const MAX_FIELD_SHOWN: usize = 256;

/// The most bytes of a bad body's message.
const MAX_MESSAGE_SHOWN: usize = 1024;

/// A required JSON body of type `T`, as [`Body::json`] reads it: up to SPEC 3's 2 MiB, JSON
/// declared or no type at all, and a bad one a 400 that names its field.
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for Json<T> {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(
        req: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        let body = Body::from_request(req, payload);
        Box::pin(async move { body.await?.json().map(Json) })
    }
}

/// `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    /// The page.
    pub items: Vec<T>,
    /// Where the next page starts, or null.
    pub next_cursor: Option<String>,
}

/// A path of the API and the methods it serves (`allow`, as the `Allow` header says them): any
/// other method on it answers 405 with `Allow`, not 404.
pub(crate) fn resource(path: &'static str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::method_not_allowed(allow))
    }))
}

/// Every route of the API.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use web::{delete, get, patch, post};
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| error::query_error(e)))
        .app_data(web::PathConfig::default().error_handler(|e, _| error::path_error(e)))
        .service(resource("/healthz", "GET").route(get().to(ops::healthz)))
        .service(resource("/readyz", "GET").route(get().to(ops::readyz)))
        .service(resource("/metrics", "GET").route(get().to(ops::metrics)))
        .service(resource("/openapi.json", "GET").route(get().to(openapi::document)))
        .service(
            web::scope("/v1")
                // The routes called at rate first: the router tries each pattern in order, and
                // matching a pattern with a segment (`{wid}`) costs a regular expression's run.
                .service(resource("/hooks/{wid}", "POST").route(post().to(hooks::execute)))
                .service(resource("/metrics", "POST").route(post().to(samples::ingest)))
                .service(resource("/write", "POST").route(post().to(remote_write::write)))
                .service(resource("/tenants", "POST").route(post().to(tenants::create)))
                .service(
                    resource("/tenants/{id}/token", "POST").route(post().to(tenants::rotate_token)),
                )
                .service(resource("/journal", "GET").route(get().to(journal::dump)))
                .service(
                    resource("/groups", "GET, POST")
                        .route(post().to(groups::create))
                        .route(get().to(groups::list)),
                )
                .service(
                    resource("/groups/{id}", "GET, PATCH, DELETE")
                        .route(get().to(groups::show))
                        .route(patch().to(groups::update))
                        .route(delete().to(groups::delete)),
                )
                .service(
                    resource("/groups/{id}/metrics-token", "POST")
                        .route(post().to(groups::rotate_metrics_token)),
                )
                .service(resource("/groups/{id}/pause", "POST").route(post().to(groups::pause)))
                .service(resource("/groups/{id}/resume", "POST").route(post().to(groups::resume)))
                .service(resource("/groups/{id}/servers", "GET").route(get().to(groups::servers)))
                .service(resource("/groups/{id}/activity", "GET").route(get().to(groups::activity)))
                .service(
                    resource("/groups/{id}/policies", "GET, POST")
                        .route(post().to(policies::create))
                        .route(get().to(policies::list)),
                )
                .service(
                    resource("/groups/{id}/policies/{pid}", "GET, PATCH, DELETE")
                        .route(get().to(policies::show))
                        .route(patch().to(policies::update))
                        .route(delete().to(policies::delete)),
                )
                .service(
                    resource("/groups/{id}/policies/{pid}/execute", "POST")
                        .route(post().to(policies::execute)),
                )
                .service(
                    resource("/groups/{id}/policies/{pid}/webhooks", "GET, POST")
                        .route(post().to(webhooks::create))
                        .route(get().to(webhooks::list)),
                )
                .service(
                    resource("/groups/{id}/policies/{pid}/webhooks/{wid}", "GET, DELETE")
                        .route(get().to(webhooks::show))
                        .route(delete().to(webhooks::revoke)),
                )
                .service(
                    resource("/groups/{id}/policies/{pid}/webhooks/{wid}/rotate", "POST")
                        .route(post().to(webhooks::rotate)),
                )
                .service(
                    resource("/groups/{id}/schedules", "GET, POST")
                        .route(post().to(schedules::create))
                        .route(get().to(schedules::list)),
                )
                .service(
                    resource("/groups/{id}/schedules/{sid}", "GET, PATCH, DELETE")
                        .route(get().to(schedules::show))
                        .route(patch().to(schedules::update))
                        .route(delete().to(schedules::delete)),
                )
                .service(
                    resource("/groups/{id}/receivers", "GET, POST")
                        .route(post().to(receivers::create))
                        .route(get().to(receivers::list)),
                )
                .service(
                    resource("/groups/{id}/receivers/{rid}", "GET, DELETE")
                        .route(get().to(receivers::show))
                        .route(delete().to(receivers::delete)),
                )
                .service(
                    resource("/alertmanager/{rid}", "POST").route(post().to(receivers::notify)),
                )
                .service(
                    resource("/alarms", "GET, POST")
                        .route(post().to(alarms::create))
                        .route(get().to(alarms::list)),
                )
                .service(
                    resource("/alarms/{aid}", "GET, PATCH, DELETE")
                        .route(get().to(alarms::show))
                        .route(patch().to(alarms::update))
                        .route(delete().to(alarms::delete)),
                ),
        )
        .configure(crate::console::routes)
        .default_service(web::to(ops::not_found));
}

/// The metric of a body that names a `metric` or a `query` (SPEC 5.2): empty with a query,
/// which needs the operator's `--prometheus-url`; both, or neither, is a 400 (the domain names
/// the field).
pub fn source(
    state: &AppState,
    metric: Option<String>,
    query: Option<&str>,
) -> Result<String, ApiError> {
    let invalid =
        |reason: &str| ApiError::from(flotilla_actors::domain::Rejection::invalid("query", reason));
    match (metric, query) {
        (Some(_), Some(_)) => Err(invalid("give a metric or a query, not both")),
        (_, Some(_)) if state.settings.prometheus_url.is_none() => Err(invalid(
            "a query needs a Prometheus: the operator has not set --prometheus-url",
        )),
        (Some(metric), None) => Ok(metric),
        (None, _) => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_actors::domain::GroupId;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_cursor_is_an_id_of_the_listed_kind_or_a_400(cursor in ".{0,300}", limit in any::<usize>()) {
            let query = ListQuery { limit: Some(limit), cursor: Some(cursor.clone()) };
            match query.cursor::<GroupId>(GroupId::PREFIX) {
                Ok(Some(id)) => {
                    prop_assert!(id.as_str().starts_with("grp_"));
                    prop_assert!(id.as_str().bytes().all(|b| (0x21..=0x7e).contains(&b)));
                }
                Ok(None) => prop_assert!(false, "a given cursor vanished"),
                Err(error) => prop_assert_eq!(error.code(), "invalid_cursor"),
            }
            let limited = query.limit();
            prop_assert_eq!(limited.is_ok(), (1..=1000).contains(&limit));
        }
    }
}
