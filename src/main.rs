use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    flotilla::cli::Cli::parse().run()
}
