//! `POST /v1/hooks/{webhook_id}`: a signed webhook call (SPEC section 4).
//!
//! In order: the source address's rate limit (every call counts), a known webhook id (so a flood
//! of made-up ids starts no actor), the 64 KiB body limit, the headers' form; then, inside the
//! webhook's actor, the signature over the raw bytes against the secrets valid now (constant
//! time), the timestamp window and the nonce window; only for a call that passed them all, the
//! webhook's rate limit (so neither knowing the URL nor replaying a captured call can starve
//! its signed caller); then the group decides the whole route's liveness and the execution, and
//! records it with the nonce in one append. Neither the secret nor the signature is ever logged.

use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::Arc;

use flotilla_actors::domain::{Rejection, WebhookId};
use flotilla_actors::error::Error as ActorError;
use flotilla_actors::object::{Admission, SignatureCheck, SignedCall};
use flotilla_actors::supervisor::PolicyExecution;

use super::error::ErrorBody;
use super::views::{ExecutionView, OutcomeKind};
use super::{ApiError, AppState};
use crate::signature::{Call, Refusal};

fn header<'r>(req: &'r HttpRequest, name: &str) -> Result<Option<&'r str>, ApiError> {
    req.headers()
        .get(name)
        .map(|value| {
            value.to_str().map_err(|_| {
                ApiError::bad_request("invalid_header", format!("{name} is not ASCII"))
            })
        })
        .transpose()
}

fn refused(refusal: Refusal) -> ActorError {
    match refusal {
        Refusal::InvalidSignature => ActorError::InvalidSignature,
        Refusal::Malformed { code, message } => ActorError::Malformed { code, message },
    }
}

/// 202 with the execution's outcome. Every call counts in `flotilla_webhooks_total`, by its
/// outcome or its rejection's code.
#[utoipa::path(
    post,
    path = "/v1/hooks/{wid}",
    tag = "hooks",
    params(("wid" = String, Path, description = "webhook id"), ("webhook-id" = Option<String>, Header, description = "the nonce, 1-128 printable ASCII characters (header form)"), ("webhook-timestamp" = Option<i64>, Header, description = "Unix seconds (header form)"), ("webhook-signature" = String, Header, description = "space-separated `v1,<base64 HMAC-SHA256>`")),
    request_body(content = Object, content_type = "application/json", description = "any JSON; in the body form it carries top-level `nonce` and `timestamp`"),
    responses(
        (status = 202, description = "accepted: the execution's outcome", body = ExecutionView),
        (status = 400, description = "malformed headers or body", body = ErrorBody),
        (status = 401, description = "`invalid_signature`, or `timestamp_out_of_window`", body = ErrorBody),
        (status = 404, description = "no such object (another tenant's included)", body = ErrorBody),
        (status = 409, description = "`replayed`: this nonce was already accepted; or `conflict`: the policy's group is being deleted and executes nothing (nothing is recorded, the nonce included)", body = ErrorBody),
        (status = 413, description = "body over the limit", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the request body did not arrive in time", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds to wait"))),
        (status = 405, description = "`method_not_allowed`: the path is served with the methods `Allow` names", body = ErrorBody, headers(("Allow" = String, description = "the methods the path serves"))),
        (status = 500, description = "a fault of the service", body = ErrorBody),
        (status = 503, description = "the journal is still being replayed, or the object is restarting", body = ErrorBody),
    ),
    description = "Standard Webhooks v1 signature over the raw body (SPEC 4). 401 `invalid_signature` or `timestamp_out_of_window`, 409 `replayed` (or `conflict`, a group being deleted).",
)]
pub async fn execute(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let delivered = deliver(&state, &req, path.into_inner(), payload).await;
    match &delivered {
        Ok(run) => state
            .telemetry
            .webhook(OutcomeKind::from(&run.outcome).as_str().into()),
        Err(error) => state.telemetry.webhook(error.code_label()),
    }
    Ok(HttpResponse::Accepted().json(ExecutionView::from(&delivered?)))
}

async fn deliver(
    state: &AppState,
    req: &HttpRequest,
    id: String,
    payload: web::Payload,
) -> Result<PolicyExecution, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::not_ready());
    }
    if let Some(peer) = req.peer_addr() {
        state.limits.source.check(&peer.ip()).map_err(|retry| {
            ApiError::rate_limited("too many webhook calls from this address", retry)
        })?;
    }
    let id = WebhookId::new(id);
    // Only whether the id is known (and unrevoked): whether the webhook, its policy and its
    // group are all live is the domain's to decide, with the execution (`route::check`).
    if !state
        .catch_up
        .known(|| state.index.webhook(&id).is_some())
        .await
    {
        return Err(ApiError::not_found("webhook"));
    }
    let body = super::read_body(payload, state.settings.body_limit).await?;
    let call = Call::parse(
        header(req, "webhook-id")?,
        header(req, "webhook-timestamp")?,
        header(req, "webhook-signature")?,
    )
    .map_err(refused)?;
    let check: SignatureCheck = Arc::new(move |secrets| {
        let keys = secrets.iter().map(|secret| secret.key().as_slice());
        let (nonce, timestamp) = call.verify(keys, &body).map_err(refused)?;
        // A step policy's breach, if the (JSON) body names one.
        let breach = super::policies::breach_in(&body)?;
        Ok(SignedCall {
            nonce,
            timestamp,
            breach,
        })
    });
    let (limits, key) = (state.limits.clone(), id.to_string());
    let admit: Admission = Arc::new(move || {
        let spent = limits.webhook.check(&key);
        spent.map_err(|retry_after_seconds| {
            let limited = Rejection::RateLimited {
                what: "too many calls to this webhook",
                retry_after_seconds,
            };
            limited.into()
        })
    });
    let delivered = state.supervisor.deliver_webhook(&id, check, Some(admit));
    Ok(delivered.await?)
}
