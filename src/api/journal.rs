//! `GET /v1/journal` (operator): the journal as stored, streamed as export lines, so that
//! `audit verify`, `audit log` and `replay` can read through a running service (`--url`), which
//! holds the data directory locked.

use std::io::Write;

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use flotilla_journal::export;
use tokio::sync::mpsc;

use super::auth::Operator;
use super::error::ErrorBody;
use super::{ApiError, AppState};

/// Chunks in flight between the reading thread and the response.
const CHUNKS: usize = 16;

/// A `Write` that hands its bytes to the response, waiting while the client is slow.
struct Chunks(mpsc::Sender<Bytes>);

impl Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(bytes))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams every record, then the head.
#[utoipa::path(
    get,
    path = "/v1/journal",
    tag = "journal",
    responses(
        (status = 200, description = "JSON lines: one record each (seq, stream, version, type, schema, timestamp_ms, payload, prev_hash, hash), then `{\"head\": {seq, hash}}`", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "the operator token is required", body = ErrorBody),
        (status = 403, description = "a tenant's token: only the operator may read the journal", body = ErrorBody),
        (status = 405, description = "`method_not_allowed`: the path is served with the methods `Allow` names", body = ErrorBody, headers(("Allow" = String, description = "the methods the path serves"))),
        (status = 503, description = "the journal is still being replayed", body = ErrorBody),
    ),
    security(("bearer" = [])),
    description = "Requires the operator token. What `audit verify|log --url` and `replay --url` read.",
)]
pub async fn dump(state: web::Data<AppState>, _: Operator) -> Result<HttpResponse, ApiError> {
    let journal = state.supervisor.journal().clone();
    let (tx, rx) = mpsc::channel(CHUNKS);
    std::thread::spawn(move || {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, Chunks(tx));
        if let Err(error) = export::dump(&journal, &mut out) {
            tracing::warn!(%error, "journal dump ended early");
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, actix_web::Error>(chunk), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(body))
}
