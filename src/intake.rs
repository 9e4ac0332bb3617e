//! The HTTP server's edge (SPEC 3): before any handler runs, a request's body must arrive within
//! a deadline (else 408) and within a bound (else 413), and one source address holds at most so
//! many connections at once (else 429). A client that sends a byte a minute, or opens thousands
//! of connections, then holds nothing for long.
//!
//! Deadlines here are real time, as every network timeout is: they bound what a socket may hold,
//! and say nothing of the service's clock.

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use futures_util::StreamExt;

use crate::api::error::ApiError;

/// The largest body any route reads (SPEC 3: 2 MiB), unless a route's own limit is larger.
pub const MAX_BODY: usize = 2 << 20;

/// The most a body's buffer holds before its bytes arrive.
const INITIAL_BUFFER: usize = 16 * 1024;

/// What the edge enforces.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// How long a request's body may take to arrive, once its head has.
    pub body_timeout: Duration,
    /// The largest body read.
    pub max_body: usize,
}

/// Reads the request's body within `bounds`, then hands the request on with it; a body that
/// does not arrive in time gets 408, one too large 413, and either closes the connection (the
/// rest of the body may still be on its way). A connection over its source's limit
/// ([`Sources`]) gets 429 and is closed.
pub async fn bounded(
    bounds: Bounds,
    mut req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req
        .conn_data::<Connection>()
        .is_some_and(|connection| connection.over)
    {
        let refusal = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            "too many connections from this address; close some and try again",
        )
        .retry_after(1);
        return Ok(req.into_response(closing(&refusal)));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > bounds.max_body) {
        return Ok(req.into_response(closing(&too_large(bounds.max_body))));
    }
    let mut payload = req.take_payload();
    let body = actix_web::rt::time::timeout(bounds.body_timeout, async {
        // Grown as bytes arrive: a declared length reserves nothing before it is sent.
        let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(INITIAL_BUFFER));
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|error| ApiError::bad_request("invalid_body", error.to_string()))?;
            if body.len() + chunk.len() > bounds.max_body {
                return Err(too_large(bounds.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    })
    .await;
    match body {
        Ok(Ok(body)) => {
            req.set_payload(Bytes::into(body));
            next.call(req).await
        }
        Ok(Err(refusal)) => Ok(req.into_response(closing(&refusal))),
        Err(_) => {
            let late = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    bounds.body_timeout.as_millis()
                ),
            );
            Ok(req.into_response(closing(&late)))
        }
    }
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the request body is over {max} bytes"),
    )
}

/// `error`'s answer, closing the connection after it.
fn closing(error: &ApiError) -> HttpResponse {
    let mut response = error.error_response();
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

/// Connections open per source address, at most `limit` each (0: no limit). The server's
/// `on_connect` hook counts each connection in ([`Sources::connected`]); the count goes down
/// when the connection closes.
#[derive(Debug)]
pub struct Sources {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection, counted against its source while it is open.
#[derive(Debug)]
struct Connection {
    source: IpAddr,
    sources: Arc<Sources>,
    /// Whether it came over its source's limit: its requests are refused.
    over: bool,
}

impl Sources {
    /// At most `limit` connections per source address; 0 is no limit.
    pub fn new(limit: usize) -> Arc<Sources> {
        Arc::new(Sources {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `on_connect` hook: counts a new TCP connection in.
    pub fn connected(self: &Arc<Self>, connection: &dyn Any, data: &mut Extensions) {
        if self.limit == 0 {
            return;
        }
        let Some(source) = connection
            .downcast_ref::<actix_web::rt::net::TcpStream>()
            .and_then(|stream| stream.peer_addr().ok())
            .map(|addr| addr.ip())
        else {
            return;
        };
        let mut open = self.open();
        let count = open.entry(source).or_default();
        *count += 1;
        let over = *count > self.limit;
        drop(open);
        data.insert(Connection {
            source,
            sources: self.clone(),
            over,
        });
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut open = self.sources.open();
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}
