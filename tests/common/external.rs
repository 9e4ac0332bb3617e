//! Real external programs (Prometheus, Alertmanager, ...) started by the tests themselves, on
//! loopback ports in temporary directories, and stopped when their guard drops. On a machine
//! without one, its tests skip with a message; with `FLOTILLA_REQUIRE_EXTERNAL=1` (which
//! `.ci/run` sets, after installing them) a missing program fails the test instead.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `program` runs (`--version`); if not, panics under `FLOTILLA_REQUIRE_EXTERNAL=1`,
/// else says the test is skipped and answers false.
pub fn available(program: &str) -> bool {
    let runs = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if runs {
        return true;
    }
    let required = std::env::var("FLOTILLA_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{program} is not installed, and FLOTILLA_REQUIRE_EXTERNAL=1"
    );
    eprintln!("{program} is not installed; skipped");
    false
}

/// A free loopback port (bound, then let go: another process may take it in between, which a
/// test on loopback tolerates).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running external program, killed (and reaped) on drop; its output goes to `log`.
pub struct Running {
    child: Child,
    name: String,
}

impl Running {
    /// Starts `program` with `args`, its output into `log`.
    pub fn start(program: &str, args: &[String], log: &Path) -> Running {
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Running {
            child,
            name: program.to_owned(),
        }
    }

    /// Panics with the program's log if it has exited.
    pub fn check_alive(&mut self, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{} exited ({status}):\n{text}", self.name);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it holds, at most `within` of real time: for what a real program does
/// on its own schedule (a scrape, a batch sent). Each failed poll runs `between` (which may
/// step the service's clock and loops) and waits a little.
pub fn wait_for(what: &str, within: Duration, mut between: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if between() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what}: not within {within:?}");
}

/// Serves `text` as a Prometheus exposition to every request, on a thread, until the process
/// ends; answers its port.
pub fn exporter(text: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.read(&mut request);
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{}",
                text.len(),
                text
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

/// A real Prometheus on 127.0.0.1:`port`, scraping the exporter on `exporter` every second,
/// with `extra` appended to its configuration (a `remote_write` section, say); answers it, its
/// log and the temporary directory that holds both (dropped last).
pub fn prometheus(exporter: u16, port: u16, extra: &str) -> (Running, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: exporter\n    static_configs:\n      \
             - targets: ['127.0.0.1:{exporter}']\n{extra}"
        ),
    )
    .unwrap();
    let log = dir.path().join("prometheus.log");
    let running = Running::start(
        "prometheus",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        &log,
    );
    (running, log, dir)
}
