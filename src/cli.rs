//! The `flotilla` command line.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use flotilla_actors::replay::{self, Until};
use flotilla_journal::{export, hex, Error as JournalError, Journal};

use std::sync::Arc;

use flotilla_actors::clock::{Clock, SystemClock};

use crate::audit::{self, LogFilter, TimeBound};
use crate::service;
use crate::settings::{DatabaseUrl, ServeArgs, Settings};

// No doc comment: clap would turn it into the `--help` text, which `about` already sets.
#[allow(missing_docs)]
#[derive(Parser, Debug)]
#[command(
    name = "flotilla",
    version,
    about = "An event-sourced autoscaling service",
    after_help = "Exit codes: 0 done (or ok); 1 a check did not pass (a broken chain, a webhook \
                  call answered other than 2xx); 2 an error (bad input, a journal that cannot \
                  be read, a service that cannot be reached)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service on a data directory.
    Serve(Box<ServeArgs>),
    /// Check and read the journal.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Move the journal in and out as JSON lines.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Signed webhook calls, for operators and scripts.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Print every object's state as of a point in the journal (JSON).
    Replay {
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        remote: Remote,
        /// A sequence number, or an RFC 3339 time; the whole journal when absent.
        #[arg(long, value_parser = parse_until)]
        until: Option<Until>,
    },
}

#[derive(Subcommand, Debug)]
enum WebhookCommand {
    /// Sign a call (Standard Webhooks v1) and print its headers and body, or send it.
    Sign {
        /// The webhook's secret (`whsec_...`).
        #[arg(long, env = "FLOTILLA_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// The JSON body.
        #[arg(long, default_value = "{}")]
        body: String,
        /// The nonce (`webhook-id`); random when absent.
        #[arg(long)]
        nonce: Option<String>,
        /// Unix seconds; now when absent.
        #[arg(long)]
        timestamp: Option<i64>,
        /// POST it to this webhook URL and print the answer (exit 1 unless 2xx).
        #[arg(long)]
        send: Option<String>,
    },
}

fn parse_until(text: &str) -> Result<Until, String> {
    if let Ok(seq) = text.parse::<u64>() {
        return Ok(Until::Seq(seq));
    }
    // A number is a seq; anything else is read as audit log reads a time.
    let at: TimeBound = text
        .parse()
        .map_err(|e| format!("{text:?} is neither a sequence number nor a time: {e}"))?;
    Ok(Until::Time(at.millis))
}

#[derive(Args, Debug)]
struct DataDir {
    /// The data directory holding the journal (sled).
    #[arg(long, default_value = "./flotilla-data", env = "FLOTILLA_DATA_DIR")]
    data_dir: PathBuf,
    /// The PostgreSQL database holding the journal instead (postgres://...).
    #[arg(long, env = "FLOTILLA_DATABASE_URL", hide_env_values = true)]
    database_url: Option<DatabaseUrl>,
}

impl DataDir {
    /// Opens a journal that must already exist (reading commands never create one).
    fn open_existing(&self) -> anyhow::Result<Journal> {
        match &self.database_url {
            Some(url) => connect(url),
            None => open_existing(&self.data_dir),
        }
    }

    /// Opens the journal, creating it if needed.
    fn open(&self) -> anyhow::Result<Journal> {
        match &self.database_url {
            Some(url) => connect(url),
            None => open(&self.data_dir),
        }
    }
}

/// Reading through a running service instead of its (locked) data directory.
#[derive(Args, Debug)]
struct Remote {
    /// The service's base URL (e.g. http://127.0.0.1:8080); read through it instead of a data
    /// directory, which a running service holds locked.
    #[arg(long)]
    url: Option<String>,
    /// The operator token, for --url.
    #[arg(long, env = "FLOTILLA_OPERATOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    /// The service's journal dump, as a stream of export lines.
    fn dump(&self) -> anyhow::Result<Option<BufReader<reqwest::blocking::Response>>> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let token = self
            .token
            .as_deref()
            .context("--url needs --token (or FLOTILLA_OPERATOR_TOKEN)")?;
        let endpoint = format!("{}/v1/journal", url.trim_end_matches('/'));
        let response = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()?
            .get(&endpoint)
            .bearer_auth(token)
            .send()
            .with_context(|| format!("cannot reach {endpoint}"))?;
        if !response.status().is_success() {
            let status = response.status();
            bail!(
                "{endpoint} answered {status}: {}",
                response.text().unwrap_or_default()
            );
        }
        Ok(Some(BufReader::new(response)))
    }
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Walk the hash chain; exit 1 on the first break, naming its sequence number.
    Verify {
        /// Verify this journal data directory [default: ./flotilla-data]; --export or --url
        /// say to verify something else.
        #[arg(long, env = "FLOTILLA_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Verify the journal in this PostgreSQL database instead (postgres://...).
        #[arg(
            long,
            conflicts_with_all = ["export", "data_dir"],
            env = "FLOTILLA_DATABASE_URL",
            hide_env_values = true
        )]
        database_url: Option<DatabaseUrl>,
        /// Verify an export file instead.
        #[arg(long, conflicts_with = "url")]
        export: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print events as JSON lines.
    Log {
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        remote: Remote,
        /// Only the events of this object (its stream id).
        #[arg(long)]
        object: Option<String>,
        /// Only events at or after this time (RFC 3339 or Unix seconds).
        #[arg(long)]
        since: Option<TimeBound>,
        /// Only events at or before this time (RFC 3339 or Unix seconds).
        #[arg(long)]
        until: Option<TimeBound>,
    },
}

#[derive(Subcommand, Debug)]
enum JournalCommand {
    /// Write the whole journal, chain included, as JSON lines.
    Export {
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        remote: Remote,
        /// The file to write ("-" for standard output).
        #[arg(long)]
        out: PathBuf,
    },
    /// Load an export into an empty journal (a data directory, or PostgreSQL with
    /// --database-url), refusing a broken chain.
    Import {
        #[command(flatten)]
        data: DataDir,
        /// The export to read.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
}

impl Cli {
    /// Runs the command: its own exit code, or 2 after printing the error it failed with.
    pub fn run(self) -> ExitCode {
        init_tracing();
        match self.command.run() {
            Ok(code) => code,
            // A reader that stopped early (`| head`) is not an error of this command.
            Err(error) if broken_pipe(&error) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(2)
            }
        }
    }
}

/// Whether `error` comes from writing to a pipe whose reader has gone.
fn broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let io = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind);
        let journal = cause.downcast_ref::<JournalError>().and_then(|e| match e {
            JournalError::Io(io) => Some(io.kind()),
            _ => None,
        });
        let json = cause
            .downcast_ref::<serde_json::Error>()
            .and_then(serde_json::Error::io_error_kind);
        io.or(journal).or(json) == Some(std::io::ErrorKind::BrokenPipe)
    })
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

impl Command {
    fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Serve(args) => serve(*args),
            Command::Audit(AuditCommand::Verify {
                data_dir,
                database_url,
                export,
                remote,
            }) => {
                let verified = match (data_dir, database_url, export, remote.dump()?) {
                    (_, _, _, Some(dump)) => export::verify_export(dump),
                    (_, _, Some(file), None) => {
                        let input = File::open(&file)
                            .with_context(|| format!("cannot open {}", file.display()))?;
                        export::verify_export(BufReader::new(input))
                    }
                    (_, Some(url), None, None) => connect(&url)?.verify(),
                    (dir, None, None, None) => {
                        let dir = dir.unwrap_or_else(|| PathBuf::from("./flotilla-data"));
                        open_existing(&dir)?.verify()
                    }
                };
                match verified {
                    Ok(head) => {
                        println!("ok: {} records, head hash {}", head.seq, hex(&head.hash));
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(JournalError::BrokenChain(broken)) => {
                        println!("broken {broken}");
                        Ok(ExitCode::from(1))
                    }
                    Err(unfinished @ JournalError::ImportUnfinished { .. }) => {
                        println!("unfinished: {unfinished}");
                        Ok(ExitCode::from(1))
                    }
                    Err(error) => Err(error.into()),
                }
            }
            Command::Audit(AuditCommand::Log {
                data,
                remote,
                object,
                since,
                until,
            }) => {
                let filter = LogFilter {
                    object,
                    since,
                    until,
                };
                let mut out = BufWriter::new(std::io::stdout().lock());
                match remote.dump()? {
                    Some(dump) => audit::log(export::records(dump), &filter, &mut out)?,
                    None => {
                        let journal = data.open_existing()?;
                        audit::log(audit::journal_records(&journal, &filter), &filter, &mut out)?
                    }
                };
                Ok(ExitCode::SUCCESS)
            }
            Command::Webhook(WebhookCommand::Sign {
                secret,
                body,
                nonce,
                timestamp,
                send,
            }) => sign(&secret, body, nonce, timestamp, send.as_deref()),
            Command::Replay {
                data,
                remote,
                until,
            } => {
                let asked = until;
                let until = until.unwrap_or(Until::End);
                let world = match remote.dump()? {
                    Some(dump) => replay::replay(export::records(dump), until)?,
                    None => replay::replay(data.open_existing()?.read_all(1), until)?,
                };
                if let Some(Until::Seq(seq)) = asked {
                    if seq > world.seq {
                        eprintln!(
                            "note: --until {seq} is past the journal's head ({}); this is the \
                             state at the head",
                            world.seq
                        );
                    }
                }
                let mut stdout = std::io::stdout().lock();
                serde_json::to_writer_pretty(&mut stdout, &world)?;
                writeln!(stdout)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Journal(JournalCommand::Export { data, remote, out }) => {
                // A file is written beside `out` and put in its place only once the export is
                // whole: an export that fails leaves an earlier one there as it was.
                let to_file = (out != Path::new("-")).then(|| Staged::beside(&out, &data));
                let staged = to_file.transpose()?;
                let mut sink: Box<dyn Write> = match &staged {
                    None => Box::new(BufWriter::new(std::io::stdout().lock())),
                    Some(staged) => Box::new(BufWriter::new(staged.create()?)),
                };
                let head = match remote.dump()? {
                    // The service's dump is an export already: copied as it comes, then its
                    // chain checked, so a damaged copy is not reported as done.
                    Some(mut dump) => {
                        let mut copied = Vec::new();
                        std::io::copy(&mut dump, &mut copied)?;
                        sink.write_all(&copied)?;
                        sink.flush()?;
                        export::verify_export(copied.as_slice())?
                    }
                    None => export::export(&data.open_existing()?, &mut sink)?,
                };
                sink.flush()?;
                drop(sink);
                if let Some(staged) = staged {
                    staged.commit()?;
                }
                eprintln!(
                    "exported {} records, head hash {}",
                    head.seq,
                    hex(&head.hash)
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Journal(JournalCommand::Import { data, input }) => {
                let read = || Ok(BufReader::new(File::open(&input)?));
                let head = match &data.database_url {
                    Some(_) => {
                        let journal = data.open()?;
                        let head = export::import(&journal, read)
                            .with_context(|| format!("importing {}", input.display()))?;
                        journal.flush()?;
                        head
                    }
                    None => import_into(&data.data_dir, read)
                        .with_context(|| format!("importing {}", input.display()))?,
                };
                eprintln!(
                    "imported {} records, head hash {}",
                    head.seq,
                    hex(&head.hash)
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// Imports an export into data directory `dir`. A new or empty `dir` is imported into
/// `<dir>.importing` first, which takes `dir`'s place only once the import is whole and synced:
/// an import stopped part way (a kill, a full disk) leaves no journal in `dir` that verifies as
/// a shorter one, only the staging directory, which the next import starts again from nothing.
/// A `dir` holding an empty journal is imported into in place; one holding records refuses.
fn import_into<R: std::io::BufRead>(
    dir: &Path,
    read: impl FnMut() -> flotilla_journal::Result<R>,
) -> anyhow::Result<flotilla_journal::Head> {
    // `restored/` is `restored`: its staging directory is beside it, not inside.
    let dir: &Path = &dir.components().collect::<PathBuf>();
    let staging = import_staging(dir);
    let emptied =
        |dir: &Path| std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none());
    if dir.join("conf").exists() {
        // A journal there: refused unless empty (a serve started on it once), and then
        // imported in place, as before. What an earlier import left staged is no longer
        // wanted once this one is in.
        let journal = open(dir)?;
        let head = export::import(&journal, read)?;
        journal.flush()?;
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("cannot remove {}", staging.display()))?;
        }
        return Ok(head);
    }
    if dir.exists() && !emptied(dir) {
        anyhow::bail!(
            "{} holds files but no journal: import into an empty or new directory",
            dir.display()
        );
    }
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    let imported = open(&staging).and_then(|journal| {
        let head = export::import(&journal, read)?;
        journal.flush()?;
        Ok(head)
    });
    let head = match imported {
        Ok(head) => head,
        Err(error) => {
            // A refused export (a broken chain) leaves nothing behind; a kill leaves the
            // staging directory for the next import to remove.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    if dir.exists() {
        std::fs::remove_dir(dir).with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(&staging, dir)
        .with_context(|| format!("cannot move {} to {}", staging.display(), dir.display()))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)?.sync_all()?;
    }
    Ok(head)
}

/// An export's file while it is written: `<out>.partial` beside `out`, renamed over it by
/// [`Staged::commit`], removed if dropped before that.
struct Staged {
    out: PathBuf,
    partial: PathBuf,
    committed: bool,
}

impl Staged {
    /// Refuses an `out` that is an existing file inside the data directory `data` names: an
    /// export never replaces one of the journal's own files (`db`, `journal.wal`, ...).
    fn beside(out: &Path, data: &DataDir) -> anyhow::Result<Staged> {
        let parent = match out.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let parent = parent
            .canonicalize()
            .with_context(|| format!("cannot write {}: no such directory", out.display()))?;
        if let Ok(dir) = data.data_dir.canonicalize() {
            if parent.starts_with(&dir) && out.exists() {
                anyhow::bail!(
                    "{} is a file of the data directory {}: write the export elsewhere",
                    out.display(),
                    dir.display()
                );
            }
        }
        let mut partial = out.as_os_str().to_owned();
        partial.push(".partial");
        Ok(Staged {
            out: out.to_path_buf(),
            partial: PathBuf::from(partial),
            committed: false,
        })
    }

    fn create(&self) -> anyhow::Result<File> {
        File::create(&self.partial)
            .with_context(|| format!("cannot create {}", self.partial.display()))
    }

    /// Syncs the whole export and puts it in `out`'s place.
    fn commit(mut self) -> anyhow::Result<()> {
        File::open(&self.partial)?.sync_all()?;
        std::fs::rename(&self.partial, &self.out)
            .with_context(|| format!("cannot write {}", self.out.display()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Where an import into data directory `dir` is staged until it is whole: `<dir>.importing`,
/// beside it. One left there means an import into `dir` stopped part way.
pub fn import_staging(dir: &Path) -> PathBuf {
    let mut staging = dir.components().collect::<PathBuf>().into_os_string();
    staging.push(".importing");
    PathBuf::from(staging)
}

/// Opens a journal that must already exist (reading commands never create one).
fn open_existing(dir: &Path) -> anyhow::Result<Journal> {
    if !dir.join("conf").exists() {
        let staging = import_staging(dir);
        if staging.exists() {
            bail!(
                "no journal in {}, but an import into it stopped part way ({} remains): run \
                 the import again",
                dir.display(),
                staging.display()
            );
        }
        bail!("no journal in {}", dir.display());
    }
    open(dir)
}

/// Connects to the journal in PostgreSQL (the URL, which may hold a password, is not repeated).
fn connect(url: &DatabaseUrl) -> anyhow::Result<Journal> {
    Journal::connect(url.expose(), flotilla_journal::Config::default())
        .context("cannot open the journal in PostgreSQL (--database-url)")
}

fn open(dir: &Path) -> anyhow::Result<Journal> {
    Journal::open(dir).map_err(|error| {
        // sled's words when another process holds the directory's lock.
        let locked = error.to_string().contains("could not acquire lock");
        let why = if locked {
            "a running `flotilla serve` holds it locked; read through the service instead, \
             with --url <its URL> --token <operator token>"
                .to_owned()
        } else {
            error.to_string()
        };
        anyhow::anyhow!("cannot open the journal in {}: {why}", dir.display())
    })
}

/// `webhook sign`: signs `body` with `secret`; prints the request, or sends it.
fn sign(
    secret: &str,
    body: String,
    nonce: Option<String>,
    timestamp: Option<i64>,
    send: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let key = crate::signature::key_of(secret)
        .filter(|key| !key.is_empty())
        .context("the secret must be whsec_<base64>")?;
    if let Some(nonce) = &nonce {
        let printable = nonce.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if nonce.is_empty() || nonce.len() > 128 || !printable {
            bail!("--nonce must be 1 to 128 printable ASCII characters (0x21-0x7E)");
        }
    }
    serde_json::from_str::<serde::de::IgnoredAny>(&body).context("--body must be JSON")?;
    let nonce = nonce.unwrap_or_else(|| crate::token::generate("msg_"));
    let timestamp = timestamp.unwrap_or_else(|| SystemClock.now().as_millis() / 1000);
    let signature = crate::signature::sign(&key, &nonce, timestamp, body.as_bytes());
    let headers = [
        ("webhook-id", nonce),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
        ("content-type", "application/json".to_owned()),
    ];
    let Some(url) = send else {
        for (name, value) in &headers {
            println!("{name}: {value}");
        }
        println!();
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    };
    let mut request = reqwest::blocking::Client::new().post(url).body(body);
    for (name, value) in &headers {
        request = request.header(*name, value.as_str());
    }
    let response = request
        .send()
        .with_context(|| format!("sending to {url}"))?;
    let status = response.status();
    let answer = response.bytes()?;
    println!("{}", status.as_u16());
    println!("{}", String::from_utf8_lossy(&answer));
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Serves until interrupted (SIGINT/SIGTERM stop it gracefully; acknowledged work is already
/// durable, so even SIGKILL loses nothing acknowledged).
fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(&args)?;
    let system = actix_web::rt::System::new();
    let closing = system.block_on(async move {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let service = service::start(settings, clock)?;
        service.server.await?;
        anyhow::Ok(service.closing)
    })?;
    // The server has stopped. Provider calls still under way (a launch retrying an unreachable
    // orchestrator, a server given its grace to stop) are not waited for, as dropping the
    // runtime would: every acknowledged event is already durable, and the next start
    // reconciles what they were doing, as after a crash. Nor is the journal closed: a
    // checkpoint and a flush spare the next start the replay instead.
    std::mem::forget(system);
    if let Err(error) = closing.close() {
        tracing::warn!(%error, "no checkpoint at stop; the next start replays from the last one");
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
