//! The shared back end: the journal in PostgreSQL, for several nodes on one database.
//!
//! ```text
//! flotilla_events       seq PRIMARY KEY, stream, version, UNIQUE (stream, version), the
//!                       record's fields, prev_hash and hash: the same chain as on sled
//! flotilla_head         one row: the last record's seq and hash, written with the records,
//!                       so a tail cut off behind the journal's back shows (as sled's head key)
//! flotilla_snapshots    stream PRIMARY KEY → value (as `layout::encode_snapshot`); a split
//!                       snapshot's parts under the stream id, 0x1f and the part's number;
//!                       its named snapshots under the stream id, 0x1e and the name
//! flotilla_checkpoints  name PRIMARY KEY → value (as `layout::encode_checkpoint`)
//! flotilla_leases       name PRIMARY KEY, holder, expires_at (the database's clock), token
//! flotilla_secrets      name PRIMARY KEY → value: what every node shares (the operator token)
//! flotilla_migrations   the schema versions applied
//! ```
//!
//! A batch of the writer is one READ COMMITTED transaction with `synchronous_commit` on, whatever
//! the server's defaults, that first takes a transaction-scoped advisory lock ([`APPEND_LOCK`]),
//! then reads the head and the versions of the streams it appends to, then inserts its records
//! and moves the head in one statement, and commits. READ COMMITTED matters: each statement
//! sees what committed before it, so the reads after the lock see the last holder's batch.
//! The statements are pipelined (sent together, run in order): a batch costs three round trips,
//! begin-lock-head, the versions of all its streams, insert-commit. So appends from every node are serialised: commit order is
//! sequence order, and a reader that has seen sequence number n never later finds a smaller one
//! committing (the gap a `bigserial` would leave). `UNIQUE (stream, version)` is the backstop:
//! a violation (SQLSTATE 23505) is the same [`Error::Conflict`] sled's writer answers.
//!
//! tokio-postgres's connections do their I/O on a small runtime of the journal's own, so they
//! outlive no caller's runtime (each actix worker has its own); callers wait on the client's
//! futures, which need no runtime, from whichever thread they are on. A connection that has
//! closed is opened again at the next use. Connections time out rather than hang: on connecting,
//! on a silent peer (TCP keepalives and user timeout), and on a transaction left idle by a stuck
//! node, which would otherwise hold [`APPEND_LOCK`] from every other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use crate::backend::{Reads, Records, Table};
use crate::writer::Log;
use crate::{Error, ExpectedVersion, Fence, Hash, Head, Lease, Record, Result};

/// The advisory lock every batch of appends holds until it commits.
pub const APPEND_LOCK: i64 = 0x666c_6f74_696c_6c61; // "flotilla"
/// The advisory lock migrations hold, so that nodes starting together migrate once.
const MIGRATION_LOCK: i64 = APPEND_LOCK + 1;
/// The session advisory lock a sole service's writer holds for as long as its connection lives
/// (see `Config::sole_service`).
const SERVICE_LOCK: i64 = APPEND_LOCK + 2;

/// Schema versions, applied in order, each once, in the transaction that records it.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE flotilla_events (
        seq bigint PRIMARY KEY CHECK (seq > 0),
        stream text NOT NULL,
        version bigint NOT NULL CHECK (version > 0),
        event_type text NOT NULL,
        schema integer NOT NULL,
        timestamp_ms bigint NOT NULL,
        payload bytea NOT NULL,
        prev_hash bytea NOT NULL CHECK (length(prev_hash) = 32),
        hash bytea NOT NULL CHECK (length(hash) = 32),
        CONSTRAINT flotilla_events_stream_version UNIQUE (stream, version)
    );
    CREATE TABLE flotilla_head (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        seq bigint NOT NULL CHECK (seq >= 0),
        hash bytea NOT NULL CHECK (length(hash) = 32)
    );
    INSERT INTO flotilla_head (seq, hash) VALUES (0, decode(repeat('00', 32), 'hex'));
    CREATE TABLE flotilla_snapshots (stream text PRIMARY KEY, value bytea NOT NULL);
    CREATE TABLE flotilla_checkpoints (name text PRIMARY KEY, value bytea NOT NULL);
",
    "
    CREATE TABLE flotilla_leases (
        name text PRIMARY KEY,
        holder text NOT NULL,
        expires_at timestamptz NOT NULL,
        token bigint NOT NULL CHECK (token > 0)
    );
",
    "
    CREATE TABLE flotilla_secrets (name text PRIMARY KEY, value text NOT NULL);
",
];

/// Acquires or renews a lease ($1 name, $2 holder, $3 milliseconds): a new lease starts at token
/// 1; a takeover, or a return after expiry, adds one; a renewal keeps it. No row comes back while
/// another holder's lease has not expired. Expiry is the database's clock (`clock_timestamp()`,
/// not the transaction's start).
const ACQUIRE: &str = "
    INSERT INTO flotilla_leases AS l (name, holder, expires_at, token)
    VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 millisecond', 1)
    ON CONFLICT (name) DO UPDATE SET
        holder = EXCLUDED.holder,
        expires_at = EXCLUDED.expires_at,
        token = l.token + CASE WHEN l.holder <> EXCLUDED.holder OR l.expires_at <= clock_timestamp()
                               THEN 1 ELSE 0 END
    WHERE l.expires_at <= clock_timestamp() OR l.holder = EXCLUDED.holder
    RETURNING token, (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint";

/// Whether a fence holds ($1 name, $2 holder, $3 token), locking the lease's row against a
/// takeover until the batch commits.
const FENCE: &str = "
    SELECT 1 FROM flotilla_leases
    WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp()
    FOR SHARE";

const COLUMNS: &str =
    "seq, stream, version, event_type, schema, timestamp_ms, payload, prev_hash, hash";

/// Rows a reader fetches at a time.
const PAGE: i64 = 1_000;

/// One connection and its prepared statements.
struct Connection {
    client: Client,
    lock: Statement,
    head: Statement,
    stored_head: Statement,
    fence: Statement,
    versions: Statement,
    version: Statement,
    by_seq: Statement,
    stream_forward: Statement,
    stream_back: Statement,
    record: Statement,
    anchor: Statement,
    insert: Statement,
    get_snapshot: Statement,
    put_snapshot: Statement,
    get_snapshots: Statement,
    put_snapshots_if: Statement,
    put_snapshot_dropping: Statement,
    anchors: Statement,
    get_checkpoint: Statement,
    put_checkpoint: Statement,
}

/// Where connections are opened: the parsed URL and the runtime their I/O runs on.
#[derive(Clone)]
struct Database {
    config: tokio_postgres::Config,
    runtime: Arc<Runtime>,
}

/// The journal's runtime, shut down without waiting when the last user lets go of it (which
/// may be inside another runtime, where waiting is not allowed).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Connects to `url`, migrates the schema, and answers the readers' and the writer's sides.
pub(crate) fn connect(url: &str, sole_service: bool) -> Result<(PgReads, PgLog)> {
    // The URL may hold a password, so no error repeats it.
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|_| Error::Postgres("the database URL does not parse".into()))?;
    bounded(&mut config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("journal-postgres")
        .enable_all()
        .build()?;
    let database = Database {
        config,
        runtime: Arc::new(Runtime(Some(runtime))),
    };
    let writer = database.open()?;
    migrate(&writer)?;
    let writer = Connection::prepare(writer)?;
    if sole_service {
        writer.hold()?;
    }
    let reader = Connection::prepare(database.open()?)?;
    let reads = PgReads {
        database: database.clone(),
        connection: Mutex::new(Arc::new(reader)),
    };
    let log = PgLog {
        database,
        connection: writer,
        in_transaction: false,
        sole_service,
    };
    Ok((reads, log))
}

/// Bounds how long a connection may hang, where the URL does not say otherwise: connecting,
/// a peer gone silent, and (on the server) a transaction left idle by a client that stopped.
fn bounded(config: &mut tokio_postgres::Config) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(30));
    let options = config.get_options().unwrap_or_default();
    if !options.contains("idle_in_transaction_session_timeout") {
        let options = format!("{options} -c idle_in_transaction_session_timeout=30000");
        config.options(options.trim_start());
    }
}

impl Database {
    /// Opens a connection whose I/O runs on the journal's runtime.
    fn open(&self) -> Result<Client> {
        let runtime = self.runtime.0.as_ref().ok_or(Error::Closed)?;
        let config = self.config.clone();
        let connecting = runtime.spawn(async move { config.connect(NoTls).await });
        let (client, connection) = wait(connecting).map_err(|_| Error::Closed)??;
        runtime.spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "a journal connection to PostgreSQL ended");
            }
        });
        Ok(client)
    }
}

/// Waits for `future` on this thread. tokio-postgres's client futures only exchange messages
/// with their connection's task, so they need no runtime here.
fn wait<F: std::future::Future>(future: F) -> F::Output {
    futures_executor::block_on(future)
}

/// Applies the migrations this database lacks, under [`MIGRATION_LOCK`], in one transaction.
fn migrate(client: &Client) -> Result<()> {
    wait(async {
        client.batch_execute("BEGIN").await?;
        let applied = async {
            client
                .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS flotilla_migrations (
                        version integer PRIMARY KEY,
                        applied_at timestamptz NOT NULL DEFAULT now())",
                )
                .await?;
            let row = client
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM flotilla_migrations",
                    &[],
                )
                .await?;
            let at: i32 = row.try_get(0)?;
            let known = MIGRATIONS.len() as i32;
            if known < at {
                return Err(Error::Postgres(format!(
                    "the database's schema is at version {at}; this build knows up to {known}"
                )));
            }
            for (version, sql) in (1..).zip(MIGRATIONS).skip(at as usize) {
                client.batch_execute(sql).await?;
                client
                    .execute(
                        "INSERT INTO flotilla_migrations (version) VALUES ($1)",
                        &[&version],
                    )
                    .await?;
                tracing::info!(version, "applied a journal schema migration");
            }
            Ok(())
        }
        .await;
        match applied {
            Ok(()) => client.batch_execute("COMMIT").await.map_err(Error::from),
            Err(error) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(error)
            }
        }
    })
}

impl Connection {
    fn prepare(client: Client) -> Result<Connection> {
        wait(async {
            let by_seq = format!(
                "SELECT {COLUMNS} FROM flotilla_events
                 WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3"
            );
            let stream_forward = format!(
                "SELECT {COLUMNS} FROM flotilla_events
                 WHERE stream = $1 AND version >= $2 AND version <= $3
                 ORDER BY version LIMIT $4"
            );
            let stream_back = format!(
                "SELECT {COLUMNS} FROM flotilla_events
                 WHERE stream = $1 AND version >= $2 AND version <= $3
                 ORDER BY version DESC LIMIT $4"
            );
            let record = format!("SELECT {COLUMNS} FROM flotilla_events WHERE seq = $1");
            let insert = format!(
                "WITH inserted AS (
                     INSERT INTO flotilla_events ({COLUMNS})
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[],
                         $5::integer[], $6::bigint[], $7::bytea[], $8::bytea[], $9::bytea[]))
                 UPDATE flotilla_head SET seq = $10, hash = $11"
            );
            Ok(Connection {
                lock: client.prepare("SELECT pg_advisory_xact_lock($1)").await?,
                head: client
                    .prepare("SELECT seq, hash FROM flotilla_head")
                    .await?,
                // One statement, one snapshot: read apart, another node's commit in between
                // would look like a broken chain.
                stored_head: client
                    .prepare(
                        "SELECT h.seq, h.hash, (SELECT coalesce(max(seq), 0) FROM flotilla_events)
                         FROM flotilla_head h",
                    )
                    .await?,
                fence: client.prepare(FENCE).await?,
                versions: client
                    .prepare(
                        // One index probe per stream (a plain `stream = ANY($1)` may be
                        // planned as a scan of the whole table).
                        "SELECT s.stream, coalesce((SELECT max(version) FROM flotilla_events e
                                                    WHERE e.stream = s.stream), 0)
                         FROM unnest($1::text[]) AS s(stream)",
                    )
                    .await?,
                version: client
                    .prepare(
                        "SELECT coalesce(max(version), 0) FROM flotilla_events WHERE stream = $1",
                    )
                    .await?,
                by_seq: client.prepare(&by_seq).await?,
                stream_forward: client.prepare(&stream_forward).await?,
                stream_back: client.prepare(&stream_back).await?,
                record: client.prepare(&record).await?,
                anchor: client
                    .prepare("SELECT hash FROM flotilla_events WHERE stream = $1 AND version = $2")
                    .await?,
                insert: client.prepare(&insert).await?,
                get_snapshot: client
                    .prepare("SELECT value FROM flotilla_snapshots WHERE stream = $1")
                    .await?,
                put_snapshot: client
                    .prepare(
                        "INSERT INTO flotilla_snapshots (stream, value) VALUES ($1, $2)
                         ON CONFLICT (stream) DO UPDATE SET value = EXCLUDED.value",
                    )
                    .await?,
                get_snapshots: client
                    .prepare(
                        "SELECT stream, value FROM flotilla_snapshots
                         WHERE stream = ANY($1::text[])",
                    )
                    .await?,
                // One statement, so all or none; the guard's row is locked and read afresh
                // once a writer ahead commits, so of two writers that read the same guard
                // only the first saves (with no row yet, there is nothing to lock: see
                // `Journal::save_snapshot_parts`).
                put_snapshots_if: client
                    .prepare(
                        "WITH guard AS (
                             SELECT value FROM flotilla_snapshots WHERE stream = $1 FOR UPDATE
                         )
                         INSERT INTO flotilla_snapshots (stream, value)
                         SELECT * FROM unnest($2::text[], $3::bytea[])
                         WHERE (SELECT value FROM guard) IS NOT DISTINCT FROM $4::bytea
                         ON CONFLICT (stream) DO UPDATE SET value = EXCLUDED.value",
                    )
                    .await?,
                // One statement, so both or neither. The head's row is locked first (the
                // DELETE's condition reads it before it scans), as `put_snapshots_if` locks
                // it before the parts, so two writers of one stream's snapshot never wait on
                // each other in opposite orders; the upsert, named by nothing, runs last.
                put_snapshot_dropping: client
                    .prepare(
                        "WITH head AS (
                             SELECT 1 FROM flotilla_snapshots WHERE stream = $1 FOR UPDATE
                         ),
                         saved AS (
                             INSERT INTO flotilla_snapshots (stream, value) VALUES ($1, $2)
                             ON CONFLICT (stream) DO UPDATE SET value = EXCLUDED.value
                         )
                         DELETE FROM flotilla_snapshots
                         WHERE stream = ANY($3::text[]) AND (SELECT count(*) FROM head) >= 0",
                    )
                    .await?,
                anchors: client
                    .prepare(
                        "SELECT version, hash FROM flotilla_events
                         WHERE stream = $1 AND version = ANY($2::bigint[])",
                    )
                    .await?,
                get_checkpoint: client
                    .prepare("SELECT value FROM flotilla_checkpoints WHERE name = $1")
                    .await?,
                put_checkpoint: client
                    .prepare(
                        "INSERT INTO flotilla_checkpoints (name, value) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    )
                    .await?,
                client,
            })
        })
    }

    /// Takes the service lock for as long as this connection lives, or answers [`Error::Held`].
    fn hold(&self) -> Result<()> {
        let row = wait(
            self.client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&SERVICE_LOCK]),
        )?;
        match row.try_get(0)? {
            true => Ok(()),
            false => Err(Error::Held),
        }
    }

    fn head(&self) -> Result<Head> {
        head_of(&wait(self.client.query_one(&self.head, &[]))?)
    }

    /// The head, and the last stored record's sequence number (0 when there is none), as of
    /// one instant.
    fn stored_head(&self) -> Result<(Head, u64)> {
        let row = wait(self.client.query_one(&self.stored_head, &[]))?;
        Ok((head_of(&row)?, unsigned(row.try_get(2)?, 0, "seq")?))
    }

    fn stream_version(&self, stream: &str) -> Result<u64> {
        let row = wait(self.client.query_one(&self.version, &[&stream]))?;
        unsigned(row.try_get(0)?, 0, "version")
    }

    /// The rows `first..=last`, a page of at most [`PAGE`], each read as a record or not.
    fn rows(&self, first: u64, last: u64) -> Result<Vec<(u64, Result<Record>)>> {
        let (first, last) = (signed(first), signed(last));
        let rows = wait(self.client.query(&self.by_seq, &[&first, &last, &PAGE]))?;
        rows.iter()
            .map(|row| Ok((raw_seq(row)?, record(row))))
            .collect()
    }
}

/// The writer's side: one connection, one transaction per batch.
pub(crate) struct PgLog {
    database: Database,
    connection: Connection,
    in_transaction: bool,
    /// Whether the writer's connection must hold the service lock to append.
    sole_service: bool,
}

impl PgLog {
    fn execute(&mut self, sql: &str) -> Result<()> {
        wait(self.connection.client.batch_execute(sql))?;
        Ok(())
    }

    /// Ends the open transaction, if any, keeping nothing of it.
    fn roll_back(&mut self) {
        if std::mem::take(&mut self.in_transaction) {
            if let Err(error) = self.execute("ROLLBACK") {
                tracing::warn!(%error, "rolling back a journal batch failed");
            }
        }
    }
}

impl Drop for PgLog {
    fn drop(&mut self) {
        // Let go of the service lock before the connection closes, so that the next service
        // finds it free at once rather than once the server has noticed the closed socket.
        if self.sole_service && !self.connection.client.is_closed() {
            let unlock = self
                .connection
                .client
                .execute("SELECT pg_advisory_unlock($1)", &[&SERVICE_LOCK]);
            if let Err(error) = wait(unlock) {
                tracing::warn!(%error, "letting go of the journal's service lock failed");
            }
        }
    }
}

impl Log for PgLog {
    fn stored_head(&mut self) -> Result<(Head, u64)> {
        self.connection.stored_head()
    }

    fn begin(&mut self) -> Result<Option<Head>> {
        self.roll_back();
        if self.connection.client.is_closed() {
            // The lock went with the old connection: another service may have it by now.
            let connection = Connection::prepare(self.database.open()?)?;
            if self.sole_service {
                connection.hold()?;
            }
            self.connection = connection;
        }
        // Pipelined, so each must go out at its first poll, in this order: a statement not
        // prepared yet would wait for its preparation and let the head be read before the lock
        // is held.
        let connection = &self.connection;
        let (began, locked, head) = wait(async {
            futures_util::join!(
                connection.client.batch_execute(
                    "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = on"
                ),
                connection.client.execute(&connection.lock, &[&APPEND_LOCK]),
                connection.client.query_one(&connection.head, &[]),
            )
        });
        // Sent, so possibly open (BEGIN may have passed and SET failed): rolled back below
        // whatever happened, a ROLLBACK outside a transaction being only a warning.
        self.in_transaction = true;
        let head = began
            .and(locked)
            .and(head)
            .map_err(Error::from)
            .and_then(|row| head_of(&row));
        if head.is_err() {
            self.roll_back();
        }
        head.map(Some)
    }

    fn stream_versions(&mut self, streams: &[&str]) -> Result<Vec<u64>> {
        let rows = wait(
            self.connection
                .client
                .query(&self.connection.versions, &[&streams]),
        )?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let stream: &str = row.try_get(0)?;
            found.insert(stream, unsigned(row.try_get(1)?, 0, "version")?);
        }
        Ok(streams
            .iter()
            .map(|stream| found.get(stream).copied().unwrap_or(0))
            .collect())
    }

    fn stream_version(&mut self, stream: &str) -> Result<u64> {
        self.connection.stream_version(stream)
    }

    fn write(&mut self, records: &[Record], head: Head) -> Result<()> {
        if !self.in_transaction {
            // Outside the batch's transaction the insert would commit on its own, without
            // the lock that orders appends.
            return Err(Error::Postgres("no batch transaction is open".into()));
        }
        let mut seqs = Vec::with_capacity(records.len());
        let mut versions = Vec::with_capacity(records.len());
        let mut schemas = Vec::with_capacity(records.len());
        let mut times = Vec::with_capacity(records.len());
        for record in records {
            seqs.push(signed(record.seq));
            versions.push(signed(record.version));
            schemas.push(i32::from(record.schema));
            times.push(record.timestamp_ms);
        }
        let streams: Vec<&str> = records.iter().map(|r| r.stream.as_str()).collect();
        let types: Vec<&str> = records.iter().map(|r| r.event_type.as_str()).collect();
        let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
        let prevs: Vec<&[u8]> = records.iter().map(|r| r.prev_hash.as_slice()).collect();
        let hashes: Vec<&[u8]> = records.iter().map(|r| r.hash.as_slice()).collect();
        let head_seq = signed(head.seq);
        let head_hash = head.hash.as_slice();
        let params: [&(dyn ToSql + Sync); 11] = [
            &seqs, &streams, &versions, &types, &schemas, &times, &payloads, &prevs, &hashes,
            &head_seq, &head_hash,
        ];
        // Sent together: a COMMIT after a failed insert ends the aborted transaction, keeping
        // nothing.
        let connection = &self.connection;
        let (inserted, committed) = wait(async {
            futures_util::join!(
                connection.client.execute(&connection.insert, &params),
                connection.client.batch_execute("COMMIT"),
            )
        });
        self.in_transaction = false;
        if let Err(error) = inserted {
            if error.as_db_error().is_some() {
                // The server refused the insert: the COMMIT behind it rolled back.
                return Err(conflict(&error).unwrap_or_else(|| error.into()));
            }
            // The connection failed: the COMMIT may have reached the server all the same.
            return Err(Error::Postgres(format!(
                "the batch's connection failed, and whether it landed is unknown until the \
                 journal is read: {error}"
            )));
        }
        // A COMMIT the server refused kept nothing; but one whose answer was lost with the
        // connection may have landed. Either way the appenders are told that they must read the
        // journal to know, as after a failed flush on sled.
        committed.map_err(|error| {
            Error::Postgres(format!(
                "the batch's commit failed, and whether it landed is unknown until the journal \
                 is read: {error}"
            ))
        })
    }

    fn abandon(&mut self) {
        self.roll_back();
    }

    fn flush(&mut self) -> Result<()> {
        // A committed transaction is durable.
        Ok(())
    }

    fn fence_holds(&mut self, fence: &Fence) -> Result<bool> {
        let token = signed(fence.token);
        let row = wait(self.connection.client.query_opt(
            &self.connection.fence,
            &[&fence.lease, &fence.holder, &token],
        ))?;
        Ok(row.is_some())
    }

    fn read(&mut self, first: u64, last: u64) -> Result<Vec<Record>> {
        let mut read = Vec::new();
        let mut next = first;
        while next <= last {
            let page = self.connection.rows(next, last)?;
            let Some((end, _)) = page.last() else { break };
            next = end + 1;
            for (_, record) in page {
                read.push(record?);
            }
        }
        Ok(read)
    }
}

/// Everyone else's side: one shared connection, its queries pipelined.
pub(crate) struct PgReads {
    database: Database,
    connection: Mutex<Arc<Connection>>,
}

impl PgReads {
    /// The shared connection, opened again if it has closed. The new one is opened without
    /// holding the lock, so a slow connect holds up no reader with a working connection.
    fn connection(&self) -> Result<Arc<Connection>> {
        let current = self.shared().clone();
        if !current.client.is_closed() {
            return Ok(current);
        }
        let fresh = Arc::new(Connection::prepare(self.database.open()?)?);
        let mut shared = self.shared();
        if shared.client.is_closed() {
            *shared = fresh;
        }
        Ok(shared.clone())
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Arc<Connection>> {
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn table(&self, table: Table) -> Result<(Arc<Connection>, Statement, Statement)> {
        let connection = self.connection()?;
        let (get, put) = match table {
            Table::Snapshots => (&connection.get_snapshot, &connection.put_snapshot),
            Table::Checkpoints => (&connection.get_checkpoint, &connection.put_checkpoint),
        };
        let (get, put) = (get.clone(), put.clone());
        Ok((connection, get, put))
    }
}

impl Reads for PgReads {
    fn head(&self) -> Result<Head> {
        self.connection()?.head()
    }

    fn stream_version(&self, stream: &str) -> Result<u64> {
        self.connection()?.stream_version(stream)
    }

    fn records(&self, first: u64, last: u64) -> Records<'_> {
        Box::new(Pages {
            reads: self,
            at: Cursor::Seq { next: first, last },
            page: Vec::new().into_iter(),
            done: false,
        })
    }

    fn stream(&self, stream: &str, from: u64, to: u64, back: bool) -> Records<'_> {
        Box::new(Pages {
            reads: self,
            at: Cursor::Stream {
                stream: stream.to_owned(),
                from,
                to,
                back,
            },
            page: Vec::new().into_iter(),
            done: false,
        })
    }

    fn record(&self, seq: u64) -> Result<Option<Record>> {
        let connection = self.connection()?;
        let row = wait(
            connection
                .client
                .query_opt(&connection.record, &[&signed(seq)]),
        )?;
        row.as_ref().map(record).transpose()
    }

    fn anchor(&self, stream: &str, version: u64) -> Result<Option<Hash>> {
        let connection = self.connection()?;
        let version = signed(version);
        let row = wait(
            connection
                .client
                .query_opt(&connection.anchor, &[&stream, &version]),
        )?;
        match row {
            Some(row) => Ok(Some(hash(row.try_get(0)?, 0)?)),
            None => Ok(None),
        }
    }

    fn put(&self, table: Table, key: &str, value: Vec<u8>) -> Result<()> {
        let (connection, _, put) = self.table(table)?;
        wait(connection.client.execute(&put, &[&key, &value]))?;
        Ok(())
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        let (connection, get, _) = self.table(table)?;
        let row = wait(connection.client.query_opt(&get, &[&key]))?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    fn put_snapshots_if(
        &self,
        guard: &str,
        expected: Option<&[u8]>,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<bool> {
        let (keys, values): (Vec<String>, Vec<Vec<u8>>) = entries.into_iter().unzip();
        let connection = self.connection()?;
        let saved = wait(connection.client.execute(
            &connection.put_snapshots_if,
            &[&guard, &keys, &values, &expected],
        ))?;
        Ok(saved > 0 || keys.is_empty())
    }

    fn put_snapshot_dropping(&self, key: &str, value: Vec<u8>, drop: &[String]) -> Result<()> {
        let connection = self.connection()?;
        wait(
            connection
                .client
                .execute(&connection.put_snapshot_dropping, &[&key, &value, &drop]),
        )?;
        Ok(())
    }

    fn drop_snapshots(&self, keys: &[String]) -> Result<()> {
        let connection = self.connection()?;
        wait(connection.client.execute(
            "DELETE FROM flotilla_snapshots WHERE stream = ANY($1)",
            &[&keys],
        ))?;
        Ok(())
    }

    fn get_snapshots(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let connection = self.connection()?;
        let rows = wait(connection.client.query(&connection.get_snapshots, &[&keys]))?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            found.insert(row.try_get::<_, String>(0)?, row.try_get::<_, Vec<u8>>(1)?);
        }
        Ok(keys.iter().map(|key| found.remove(key)).collect())
    }

    fn anchors(&self, stream: &str, versions: &[u64]) -> Result<Vec<Option<Hash>>> {
        let connection = self.connection()?;
        let wanted: Vec<i64> = versions.iter().map(|&v| signed(v)).collect();
        let rows = wait(
            connection
                .client
                .query(&connection.anchors, &[&stream, &wanted]),
        )?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let version: i64 = row.try_get(0)?;
            found.insert(version, hash(row.try_get(1)?, 0)?);
        }
        Ok(wanted.iter().map(|v| found.get(v).copied()).collect())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let connection = self.connection()?;
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let row = wait(
            connection
                .client
                .query_opt(ACQUIRE, &[&name, &holder, &millis]),
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        let remaining: i64 = row.try_get(1)?;
        Ok(Some(Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            token: unsigned(row.try_get(0)?, 0, "token")?,
            remaining: Duration::from_millis(remaining.max(0).unsigned_abs()),
        }))
    }

    fn release_lease(&self, name: &str, holder: &str, token: u64) -> Result<bool> {
        let connection = self.connection()?;
        let token = signed(token);
        // Expired now, so the next to ask takes it over (with the next token).
        let released = wait(connection.client.execute(
            "UPDATE flotilla_leases SET expires_at = clock_timestamp()
             WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp()",
            &[&name, &holder, &token],
        ))?;
        Ok(released == 1)
    }

    fn shared_secret(&self, name: &str, candidate: &str) -> Result<Option<String>> {
        let connection = self.connection()?;
        // The first to insert wins; everyone reads the winner's.
        let row = wait(connection.client.query_opt(
            "WITH inserted AS (
                 INSERT INTO flotilla_secrets (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO NOTHING RETURNING value)
             SELECT value FROM inserted
             UNION ALL SELECT value FROM flotilla_secrets WHERE name = $1
             LIMIT 1",
            &[&name, &candidate],
        ))?;
        let row = match row {
            Some(row) => row,
            // Another node's insert committed while this statement waited on it, after this
            // statement's snapshot: a new statement sees it.
            None => wait(connection.client.query_one(
                "SELECT value FROM flotilla_secrets WHERE name = $1",
                &[&name],
            ))?,
        };
        Ok(Some(row.try_get(0)?))
    }

    fn leases(&self) -> Result<Vec<Lease>> {
        let connection = self.connection()?;
        let rows = wait(connection.client.query(
            "SELECT name, holder, token,
                    (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint
             FROM flotilla_leases WHERE expires_at > clock_timestamp() ORDER BY name",
            &[],
        ))?;
        rows.iter()
            .map(|row| {
                let remaining: i64 = row.try_get(3)?;
                Ok(Lease {
                    name: row.try_get(0)?,
                    holder: row.try_get(1)?,
                    token: unsigned(row.try_get(2)?, 0, "token")?,
                    remaining: Duration::from_millis(remaining.max(0).unsigned_abs()),
                })
            })
            .collect()
    }
}

/// Where a paged read goes on from.
enum Cursor {
    /// Records by sequence number, `next..=last`.
    Seq { next: u64, last: u64 },
    /// A stream's records with versions `from..=to`, from `to` down when `back`.
    Stream {
        stream: String,
        from: u64,
        to: u64,
        back: bool,
    },
}

/// Records read a page of [`PAGE`] rows at a time, each page from where the last one ended. A
/// row that does not read as a record is an error in its place; the rows around it still read.
struct Pages<'a> {
    reads: &'a PgReads,
    at: Cursor,
    page: std::vec::IntoIter<Result<Record>>,
    done: bool,
}

impl Pages<'_> {
    fn fetch(&mut self) -> Result<Vec<Result<Record>>> {
        let connection = self.reads.connection()?;
        let (page, full) = match &mut self.at {
            Cursor::Seq { next, last } => {
                let rows = connection.rows(*next, *last)?;
                if let Some((end, _)) = rows.last() {
                    *next = end + 1;
                }
                let full = rows.len() as i64 == PAGE;
                (rows.into_iter().map(|(_, record)| record).collect(), full)
            }
            Cursor::Stream {
                stream,
                from,
                to,
                back,
            } => {
                let statement = match back {
                    true => &connection.stream_back,
                    false => &connection.stream_forward,
                };
                let (low, high) = (signed(*from), signed(*to));
                let rows = wait(
                    connection
                        .client
                        .query(statement, &[&stream.as_str(), &low, &high, &PAGE]),
                )?;
                if let Some(end) = rows.last() {
                    let version = unsigned(end.try_get(2)?, raw_seq(end)?, "version")?;
                    match *back {
                        false => *from = version + 1,
                        // Versions start at 1: below it there is nothing more to read.
                        true => match version.checked_sub(1) {
                            Some(below) if below > 0 => *to = below,
                            _ => self.done = true,
                        },
                    }
                }
                let full = rows.len() as i64 == PAGE;
                (rows.iter().map(record).collect(), full)
            }
        };
        if !full {
            self.done = true;
        }
        Ok(page)
    }
}

impl Iterator for Pages<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if let Some(record) = self.page.next() {
            return Some(record);
        }
        if self.done {
            return None;
        }
        match self.fetch() {
            Ok(page) => {
                self.page = page.into_iter();
                self.page.next()
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

/// The head row.
fn head_of(row: &Row) -> Result<Head> {
    Ok(Head {
        seq: unsigned(row.try_get(0)?, 0, "seq")?,
        hash: hash(row.try_get(1)?, 0)?,
    })
}

/// A row's sequence number, even when the rest of it does not read.
fn raw_seq(row: &Row) -> Result<u64> {
    unsigned(row.try_get(0)?, 0, "seq")
}

/// A row of `flotilla_events` (its columns in [`COLUMNS`]' order) as a record.
fn record(row: &Row) -> Result<Record> {
    let seq = unsigned(row.try_get(0)?, 0, "seq")?;
    let schema: i32 = row.try_get(4)?;
    Ok(Record {
        seq,
        stream: row.try_get(1)?,
        version: unsigned(row.try_get(2)?, seq, "version")?,
        event_type: row.try_get(3)?,
        schema: u16::try_from(schema).map_err(|_| corrupt(seq, "schema"))?,
        timestamp_ms: row.try_get(5)?,
        payload: row.try_get(6)?,
        prev_hash: hash(row.try_get(7)?, seq)?,
        hash: hash(row.try_get(8)?, seq)?,
    })
}

fn corrupt(seq: u64, column: &str) -> Error {
    Error::Corrupt {
        seq,
        reason: format!("its {column} is out of range"),
    }
}

fn unsigned(value: i64, seq: u64, column: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(seq, column))
}

/// A sequence number or version as PostgreSQL's bigint; past `i64::MAX` reads as "no limit".
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn hash(bytes: &[u8], seq: u64) -> Result<Hash> {
    bytes.try_into().map_err(|_| Error::Corrupt {
        seq,
        reason: format!("a hash of {} bytes", bytes.len()),
    })
}

/// A unique violation on (stream, version) as the conflict it is: another writer appended to
/// that stream first. Its detail reads `Key (stream, version)=(<stream>, <version>) already
/// exists.`
pub(crate) fn conflict(error: &tokio_postgres::Error) -> Option<Error> {
    let db = error.as_db_error()?;
    if *db.code() != SqlState::UNIQUE_VIOLATION {
        return None;
    }
    let detail = db.detail()?;
    let key = detail.strip_prefix("Key (stream, version)=(")?;
    let key = key.strip_suffix(") already exists.")?;
    let (stream, version) = key.rsplit_once(", ")?;
    let version: u64 = version.parse().ok()?;
    Some(Error::Conflict {
        stream: stream.to_owned(),
        expected: ExpectedVersion::Exact(version.saturating_sub(1)),
        actual: version,
    })
}
