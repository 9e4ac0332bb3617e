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
use crate::settings::{ServeArgs, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "flotilla",
    version,
    about = "An event-sourced autoscaling service"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service on a data directory.
    Serve(ServeArgs),
    /// Check and read the journal.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Move the journal in and out as JSON lines.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Print every object's state as of a point in the journal (JSON).
    Replay {
        #[command(flatten)]
        data: DataDir,
        /// A sequence number, or an RFC 3339 time; the whole journal when absent.
        #[arg(long, value_parser = parse_until)]
        until: Option<Until>,
    },
}

fn parse_until(text: &str) -> Result<Until, String> {
    if let Ok(seq) = text.parse::<u64>() {
        return Ok(Until::Seq(seq));
    }
    let at: TimeBound = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{text:?} is neither a sequence number nor RFC 3339: {e}"))
        .and_then(|_| text.parse())?;
    Ok(Until::Time(at.millis))
}

#[derive(Args, Debug)]
struct DataDir {
    /// The data directory holding the journal (sled).
    #[arg(long, default_value = "./flotilla-data", env = "FLOTILLA_DATA_DIR")]
    data_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Walk the hash chain; exit 1 on the first break, naming its sequence number.
    Verify {
        /// Verify this journal data directory.
        #[arg(long, required_unless_present = "export", conflicts_with = "export")]
        data_dir: Option<PathBuf>,
        /// Verify an export file instead.
        #[arg(long)]
        export: Option<PathBuf>,
    },
    /// Print events as JSON lines.
    Log {
        #[command(flatten)]
        data: DataDir,
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
        /// The file to write ("-" for standard output).
        #[arg(long)]
        out: PathBuf,
    },
    /// Load an export into an empty data directory, refusing a broken chain.
    Import {
        #[command(flatten)]
        data: DataDir,
        /// The export to read.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
}

impl Cli {
    pub fn run(self) -> ExitCode {
        init_tracing();
        match self.command.run() {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(2)
            }
        }
    }
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
            Command::Serve(args) => serve(args),
            Command::Audit(AuditCommand::Verify { data_dir, export }) => {
                let verified = match (data_dir, export) {
                    (_, Some(file)) => {
                        let input = File::open(&file)
                            .with_context(|| format!("cannot open {}", file.display()))?;
                        export::verify_export(BufReader::new(input))
                    }
                    (Some(dir), None) => open_existing(&dir)?.verify(),
                    (None, None) => bail!("give --data-dir or --export"),
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
                    Err(error) => Err(error.into()),
                }
            }
            Command::Audit(AuditCommand::Log {
                data,
                object,
                since,
                until,
            }) => {
                let journal = open_existing(&data.data_dir)?;
                let filter = LogFilter {
                    object,
                    since,
                    until,
                };
                let stdout = std::io::stdout().lock();
                audit::log(&journal, &filter, &mut BufWriter::new(stdout))?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Replay { data, until } => {
                let journal = open_existing(&data.data_dir)?;
                let world = replay::replay(&journal, until.unwrap_or(Until::End))?;
                let mut stdout = std::io::stdout().lock();
                serde_json::to_writer_pretty(&mut stdout, &world)?;
                writeln!(stdout)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Journal(JournalCommand::Export { data, out }) => {
                let journal = open_existing(&data.data_dir)?;
                let head = if out == Path::new("-") {
                    export::export(&journal, &mut BufWriter::new(std::io::stdout().lock()))?
                } else {
                    let file = File::create(&out)
                        .with_context(|| format!("cannot create {}", out.display()))?;
                    export::export(&journal, &mut BufWriter::new(file))?
                };
                eprintln!(
                    "exported {} records, head hash {}",
                    head.seq,
                    hex(&head.hash)
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Journal(JournalCommand::Import { data, input }) => {
                let journal = open(&data.data_dir)?;
                let head = export::import(&journal, || Ok(BufReader::new(File::open(&input)?)))
                    .with_context(|| format!("importing {}", input.display()))?;
                journal.flush()?;
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

/// Opens a journal that must already exist (reading commands never create one).
fn open_existing(dir: &Path) -> anyhow::Result<Journal> {
    if !dir.join("conf").exists() {
        bail!("no journal in {}", dir.display());
    }
    open(dir)
}

fn open(dir: &Path) -> anyhow::Result<Journal> {
    Journal::open(dir).with_context(|| {
        format!(
            "cannot open the journal in {} (a running `flotilla serve` holds it locked)",
            dir.display()
        )
    })
}

/// Serves until interrupted (SIGINT/SIGTERM stop it gracefully; acknowledged work is already
/// durable, so even SIGKILL loses nothing acknowledged).
fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(&args)?;
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let service = service::start(settings, clock)?;
        service.server.await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
