//! `POST /v1/hooks/{webhook_id}`: a signed webhook call (SPEC section 4).
//!
//! In order: the source address's rate limit, the webhook's existence (404), its rate limit, the
//! 64 KiB body limit, the headers' form; then, inside the webhook's actor, the signature over
//! the raw bytes against the secrets valid now (constant time), the timestamp window and the
//! nonce window (recording the nonce); then the policy's execution. Neither the secret nor the
//! signature is ever logged.

use actix_web::{web, HttpRequest, HttpResponse};
use flotilla_actors::domain::WebhookId;
use flotilla_actors::error::Error as ActorError;
use flotilla_actors::object::{SignatureCheck, SignedCall};
use flotilla_actors::supervisor::PolicyExecution;

use super::policies::{execution_body, outcome_name};
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
pub async fn execute(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let delivered = deliver(&state, &req, path.into_inner(), payload).await;
    match &delivered {
        Ok(run) => state.telemetry.webhook(outcome_name(&run.outcome)),
        Err(error) => state.telemetry.webhook(error.code()),
    }
    Ok(HttpResponse::Accepted().json(execution_body(&delivered?)))
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
    if state.index.webhook(&id).is_none() {
        return Err(ApiError::not_found("webhook"));
    }
    state
        .limits
        .webhook
        .check(&id.to_string())
        .map_err(|retry| ApiError::rate_limited("too many calls to this webhook", retry))?;
    let limit = state.settings.body_limit;
    let body = payload
        .to_bytes_limited(limit)
        .await
        .map_err(|_| {
            ApiError::new(
                actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {limit} bytes"),
            )
        })?
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let call = Call::parse(
        header(req, "webhook-id")?,
        header(req, "webhook-timestamp")?,
        header(req, "webhook-signature")?,
    )
    .map_err(refused)?;
    let check: SignatureCheck = Box::new(move |secrets| {
        let keys = secrets.iter().map(|secret| secret.key().as_slice());
        let (nonce, timestamp) = call.verify(keys, &body).map_err(refused)?;
        Ok(SignedCall { nonce, timestamp })
    });
    Ok(state.supervisor.deliver_webhook(&id, check).await?)
}
