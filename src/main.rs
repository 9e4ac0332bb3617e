use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: a replay on 2 cores runs about 1.6x faster with it, as
/// sled allocates and frees a page for every node it reads (see the issue 7 note).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    flotilla::cli::Cli::parse().run()
}
