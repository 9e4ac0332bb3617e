//! The `flotilla` binary: parses the command line and runs it (see `flotilla::cli`).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: sled allocates and frees a node for every page it reads
/// or rewrites, and with mimalloc a replay on 2 cores runs about 1.6x faster, and the webhook path
/// about 15% (`cargo bench --bench load`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option `purge_delay` (see its `mimalloc.h`; the options have no Rust constants).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc gives memory it no longer uses back to the system at once, rather than a second
/// later and only when the thread that freed it allocates again: sled's page cache and a
/// group's servers free in bursts on threads that then sit idle, and 100k servers held 13 MiB
/// more for it. The webhook path runs as fast either way (`benches/wrk/run`). An operator's
/// `MIMALLOC_PURGE_DELAY` (or its older name, `MIMALLOC_RESET_DELAY`; mimalloc reads either in
/// any case) still wins.
#[allow(unsafe_code)] // mi_option_set(3), before any thread exists
fn purge_at_once() {
    let named = std::env::vars_os().any(|(name, _)| {
        let name = name.to_string_lossy();
        ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
            .iter()
            .any(|option| name.eq_ignore_ascii_case(option))
    });
    if !named {
        // SAFETY: called first thing in `main`, before any other thread exists (mimalloc's
        // options are not synchronized); the option number is checked by a test below.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
    }
}

fn main() -> ExitCode {
    purge_at_once();
    flotilla::cli::Cli::parse().run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)] // mi_option_get(3)
    fn option_15_is_the_purge_delay_with_its_default_of_a_second() {
        // No other option of mimalloc 3 defaults to 1000. Read only: setting it here would
        // change it for the other tests of this process.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: a read of an option; nothing else in this test binary sets options.
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 1000);
        }
    }
}
