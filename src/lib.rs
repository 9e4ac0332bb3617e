//! Flotilla: an event-sourced autoscaling service.
//!
//! # Layout
//! - `cli`: the `flotilla` command line (clap), one function per subcommand.
//! - `audit`: `audit verify` and `audit log` over a journal or an export.
//!
//! The journal lives in the `flotilla-journal` crate (`journal/`), the domain and its actors in
//! `flotilla-actors` (`actors/`).

pub mod audit;
pub mod cli;
