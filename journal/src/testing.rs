//! A PostgreSQL for tests: the one `FLOTILLA_TEST_DATABASE_URL` names, or else a throwaway
//! cluster started on a Unix socket in a temporary directory, once per test process, and
//! stopped when that process ends.
//!
//! Each caller gets a fresh database of its own ([`fresh_database`]), so tests run in parallel
//! without seeing each other's records. Without PostgreSQL (no URL, no `initdb`), tests skip
//! with a message; with `FLOTILLA_REQUIRE_EXTERNAL=1` (CI) they fail instead.
//!
//! The throwaway cluster is `initdb` and `pg_ctl` from Debian's `postgresql` package (found on
//! the `PATH` or under `/usr/lib/postgresql/*/bin`), run as the `postgres` user when the tests
//! run as root, since PostgreSQL refuses to run as root. It listens only on a Unix socket in its
//! own directory. A shell between this process and the
//! cluster holds the read end of a pipe whose write end only this process holds: when the process
//! ends, however it ends, the pipe closes and the shell stops the cluster and removes its
//! directory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The environment variable naming a PostgreSQL (a superuser's URL) for tests to use instead of
/// a throwaway cluster.
pub const DATABASE_URL_VAR: &str = "FLOTILLA_TEST_DATABASE_URL";

/// A running server to create databases in: a URL without its database name, and the throwaway
/// cluster's watchdog, if it is one (kept for as long as the process lives).
struct Server {
    /// The URL's part before its database: `postgres://user@host:port`, say.
    base: String,
    /// What follows the database in the URL (`?host=/path/to/socket&...`), if anything.
    query: String,
    _watchdog: Option<Mutex<Child>>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static DURABLE: OnceLock<Result<Server, String>> = OnceLock::new();
static DATABASES: AtomicU64 = AtomicU64::new(0);
static CLUSTERS: AtomicU64 = AtomicU64::new(0);

/// The URL of a new, empty database for the test `test`, or `None` when there is no PostgreSQL
/// here, after printing why the test skips. Panics instead of skipping under
/// `FLOTILLA_REQUIRE_EXTERNAL=1`, and when PostgreSQL is there but fails.
pub fn fresh_database(test: &str) -> Option<String> {
    fresh_in(&SERVER, false, test)
}

/// [`fresh_database`] on a cluster that syncs its writes to disk like a production one (the
/// throwaway cluster of [`fresh_database`] skips `fsync`, for speed): for benchmarks.
pub fn durable_database(test: &str) -> Option<String> {
    fresh_in(&DURABLE, true, test)
}

fn fresh_in(cell: &OnceLock<Result<Server, String>>, durable: bool, test: &str) -> Option<String> {
    let server = match cell.get_or_init(|| server(durable)) {
        Ok(server) => server,
        Err(why) => {
            let required = std::env::var("FLOTILLA_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{test}: PostgreSQL is required (FLOTILLA_REQUIRE_EXTERNAL=1) but {why}"
            );
            eprintln!("skipping {test} on PostgreSQL: {why}");
            return None;
        }
    };
    let name = format!(
        "flotilla_test_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    let admin = format!("{}/postgres{}", server.base, server.query);
    execute(&admin, &format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("{test}: creating a test database failed: {e}"));
    Some(format!("{}/{name}{}", server.base, server.query))
}

/// The server from the environment, or a throwaway cluster; says why there is none.
fn server(durable: bool) -> Result<Server, String> {
    if let Ok(url) = std::env::var(DATABASE_URL_VAR) {
        let (url, query) = match url.split_once('?') {
            Some((url, query)) => (url.to_owned(), format!("?{query}")),
            None => (url, String::new()),
        };
        let base = match url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('/') {
                Some((authority, _database)) => format!("{scheme}://{authority}"),
                None => url.clone(),
            },
            None => return Err(format!("{DATABASE_URL_VAR} is not a postgres:// URL")),
        };
        return Ok(Server {
            base,
            query,
            _watchdog: None,
        });
    }
    throwaway(durable)
}

/// Starts a cluster in a new directory under the system's temporary directory. It listens on
/// a Unix socket in that directory (mode 0700) and on no TCP port, so that no other user of the
/// host can reach its trusting superuser, and no port can be taken from under it.
fn throwaway(durable: bool) -> Result<Server, String> {
    let bin = postgres_bin().ok_or_else(|| {
        format!("{DATABASE_URL_VAR} is not set and initdb is not installed (Debian: postgresql)")
    })?;
    let dir = std::env::temp_dir().join(format!(
        "flotilla-pg-{}-{}",
        std::process::id(),
        CLUSTERS.fetch_add(1, Ordering::Relaxed)
    ));
    // Stops the cluster and removes its directory when the script ends: once stdin closes (this
    // process has ended, however it ended), or at once if the cluster did not start, after
    // showing its logs.
    let script = r#"
        set -e
        bin="$1"; dir="$2"; fsync="$3"
        cleanup() {
            status=$?
            if [ "$status" -ne 0 ]; then cat "$dir"/*.log >&2 2>/dev/null || true; fi
            "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
            rm -rf "$dir"
        }
        trap cleanup EXIT
        mkdir -m 700 "$dir"
        "$bin/initdb" -D "$dir/data" -U flotilla -A trust --no-sync >"$dir/initdb.log" 2>&1
        "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o \
            "-c listen_addresses= -k $dir -c fsync=$fsync -c max_connections=200" \
            start >/dev/null
        echo ready
        cat >/dev/null || true
    "#;
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let mut command = if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", "sh"]);
        command
    } else {
        Command::new("sh")
    };
    command
        .arg("-c")
        .arg(script)
        .arg("flotilla-pg")
        .arg(&bin)
        .arg(&dir)
        .arg(if durable { "on" } else { "off" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting PostgreSQL failed: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("starting PostgreSQL failed: {e}"))?;
    if line.trim() != "ready" {
        drop(child.stdin.take());
        let _ = child.wait();
        return Err(format!(
            "the throwaway PostgreSQL in {} did not start (its logs are above)",
            dir.display()
        ));
    }
    Ok(Server {
        base: "postgres://".to_owned(),
        query: format!("?host={}&port=5432&user=flotilla", dir.display()),
        _watchdog: Some(Mutex::new(child)),
    })
}

/// The directory holding `initdb` and `pg_ctl`: the `PATH`'s, or the newest Debian version's.
fn postgres_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

/// Runs `sql` (one or more statements) against the database at `url`, on a thread of its own
/// (the caller may be inside a runtime, where blocking on another is not allowed). For tests
/// that look at or tamper with what the journal stored.
pub fn execute(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let connection = tokio::spawn(connection);
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| e.to_string())?;
            drop(client);
            let _ = connection.await;
            Ok(())
        })
    })
    .join()
    .map_err(|_| "the statement's thread panicked".to_owned())?
}
