//! `process`: each server is a local child process.
//!
//! Launch configuration: `{"provider": "process", "command": ["prog", "arg"..], "env": {..},
//! "grace_seconds": 10}`. The child gets `env` and the `FLOTILLA_*` variables, runs in a process
//! group of its own (so a signal to Flotilla's group does not reach it, and deleting it reaches
//! the children it starts) with stdin, stdout and stderr on /dev/null.
//!
//! The handle is `{"pid": P, "start_time": T}`, where T is field 22 of `/proc/P/stat` (clock
//! ticks since boot). A pid alone could be reused by an unrelated process after ours exited; the
//! pair cannot, so after a restart of Flotilla a running process is adopted only if both match,
//! and a signal is sent only if both match. A launch first kills any process still carrying
//! `FLOTILLA_SERVER_ID=<that server>` in its environment: one whose launch was interrupted by a
//! restart before its handle was journaled. So there are never two processes for one server,
//! nor one that no server names.
//!
//! Deleting sends SIGTERM to the process group, then SIGKILL after `grace_seconds`.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Launch, Provider, ProviderError, Status};

/// The default wait between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE_SECONDS: u64 = 10;

/// The longest grace a deletion waits for (a larger `grace_seconds` is cut to it).
const MAX_GRACE_SECONDS: u64 = 3600;

/// The process provider: it keeps the `Child` of each process it started, to reap it.
#[derive(Default)]
pub struct ProcessProvider {
    children: Mutex<HashMap<u32, Child>>,
}

/// What `/proc/<pid>/stat` says: the state letter and the start time (field 22).
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(22 - 3)?.parse().ok()?;
    Some((state, start_time))
}

fn handle_of(handle: &Value) -> Option<(u32, u64)> {
    let pid = u32::try_from(handle["pid"].as_u64()?).ok()?;
    Some((pid, handle["start_time"].as_u64()?))
}

#[allow(unsafe_code)] // kill(2), by pid only
fn signal(pid: u32, signal: i32) {
    let pid = pid as libc::pid_t;
    // SAFETY: kill(2) has no memory effects; the pid was checked against its start time.
    unsafe {
        if libc::kill(-pid, signal) != 0 {
            libc::kill(pid, signal);
        }
    }
}

/// Reaps `pid` if it is a zombie child of this process (one started by an earlier service in
/// the same process, whose `Child` is gone); a no-op otherwise.
#[allow(unsafe_code)] // waitpid(2), by pid only
fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: waitpid(2) with WNOHANG writes only to `status`.
    unsafe {
        libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG);
    }
}

/// The pids of processes whose environment holds `FLOTILLA_SERVER_ID=<server_id>`.
fn processes_of(server_id: &str) -> Vec<u32> {
    let needle = format!("FLOTILLA_SERVER_ID={server_id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

impl ProcessProvider {
    fn status_of(&self, pid: u32, start_time: u64) -> Status {
        {
            let mut children = self.lock();
            if let Some(child) = children.get_mut(&pid) {
                if !matches!(child.try_wait(), Ok(None)) {
                    children.remove(&pid);
                    return Status::Exited;
                }
            }
        }
        match stat(pid) {
            Some((_, started)) if started != start_time => Status::Exited,
            Some(('Z' | 'X', _)) => {
                reap(pid);
                Status::Exited
            }
            Some(_) => Status::Running,
            None => Status::Exited,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Child>> {
        self.children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends `pid`: SIGTERM, up to `grace` for it to exit, then SIGKILL.
    fn end(&self, pid: u32, start_time: u64, grace: Duration) {
        if self.status_of(pid, start_time) != Status::Running {
            return;
        }
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.status_of(pid, start_time) != Status::Running {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::warn!(pid, "no exit after SIGTERM; sending SIGKILL");
        signal(pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.status_of(pid, start_time) == Status::Running && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Provider for ProcessProvider {
    fn launch(&self, launch: &Launch) -> Result<Value, ProviderError> {
        let config = &launch.config;
        let command: Vec<&str> = config["command"]
            .as_array()
            .map(|args| args.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let Some((program, args)) = command.split_first() else {
            return Err(ProviderError::new(
                "launch.command must be a non-empty array of strings",
            ));
        };
        for stray in processes_of(&launch.server_id) {
            if let Some((_, start_time)) = stat(stray) {
                tracing::warn!(server = %launch.server_id, pid = stray, "killing a process left by an interrupted launch");
                self.end(stray, start_time, Duration::ZERO);
            }
        }
        let mut cmd = Command::new(program);
        // A server sees only its own configuration, never the service's environment (which
        // may hold the operator's secrets).
        cmd.env_clear();
        cmd.env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        );
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if let Some(env) = config["env"].as_object() {
            for (key, value) in env {
                let value = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                cmd.env(key, value);
            }
        }
        cmd.envs(launch.flotilla_env());
        let child = cmd
            .spawn()
            .map_err(|error| ProviderError::new(format!("cannot start {program:?}: {error}")))?;
        let pid = child.id();
        let start_time = stat(pid).map_or(0, |(_, t)| t);
        self.lock().insert(pid, child);
        Ok(json!({"pid": pid, "start_time": start_time}))
    }

    fn delete(&self, config: &Value, handle: &Value) -> Result<(), ProviderError> {
        let Some((pid, start_time)) = handle_of(handle) else {
            return Ok(());
        };
        let grace = config["grace_seconds"]
            .as_u64()
            .unwrap_or(DEFAULT_GRACE_SECONDS)
            .min(MAX_GRACE_SECONDS);
        self.end(pid, start_time, Duration::from_secs(grace));
        if self.status_of(pid, start_time) == Status::Running {
            return Err(ProviderError::new(format!("pid {pid} survived SIGKILL")));
        }
        Ok(())
    }

    fn status(&self, _config: &Value, handle: &Value) -> Status {
        match handle_of(handle) {
            Some((pid, start_time)) => self.status_of(pid, start_time),
            None => Status::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let (state, start) = stat(std::process::id()).unwrap();
        assert!(state.is_ascii_alphabetic());
        assert!(start > 0);
    }
}
