//! Flotilla: an event-sourced autoscaling service.
//!
//! # Layout
//! - `cli`: the `flotilla` command line (clap), one function per subcommand.
//! - `cluster`: which groups this node acts for: shards, leases and the rules for asking.
//! - `audit`: `audit verify` and `audit log` over a journal or an export.
//! - `settings`: `serve`'s settings from flags, environment and a TOML file.
//! - `service`: starting the service: journal, operator token, supervisor, HTTP, readiness.
//! - `api`: the HTTP API (SPEC 3) on actix-web: one module per resource, one lookup and pager
//!   for them all (`api::resource`), one error mapping (`api::error`).
//! - `alarms`: the alarm table (a read model), metric samples into the series store, and alarm
//!   evaluation at each tick, each transition's actions taken exactly once.
//! - `schedules`: the schedule table (a read model) and the scheduler that runs each scheduled
//!   action's occurrences on the service clock, exactly once.
//! - `promql`: Prometheus as a source: a query's datapoint at a period's end, or why none.
//! - `converger`: at each tick, every group's servers reconciled with its desired capacity.
//! - `providers`: the `process`, `http` and `simulated` providers that start and delete servers.
//! - `projector`: the one place read models are fed: the journal's records, in sequence order;
//!   checkpoints of the read models at an exact sequence number.
//! - `index`: the read model of owners, tokens and lists.
//! - `signature`: Standard Webhooks signatures: parse, verify in constant time, sign.
//! - `ratelimit`: per-webhook and per-source token buckets on the injected clock.
//! - `token`: bearer tokens, webhook secrets and the operator token file.
//! - `ticks`: the tick source of every background loop: real time, or manual ticks in tests.
//! - `telemetry`: the service's own metrics (`GET /metrics`) and the middleware's recording.
//!
//! The journal lives in the `flotilla-journal` crate (`journal/`), the domain and its actors in
//! `flotilla-actors` (`actors/`).

pub mod alarms;
pub mod api;
pub mod audit;
pub mod cli;
pub mod cluster;
pub mod console;
pub mod converger;
pub mod index;
pub mod intake;
pub mod projector;
pub mod promql;
pub mod providers;
pub mod ratelimit;
pub mod schedules;
pub mod service;
pub mod settings;
pub mod signature;
pub mod telemetry;
pub mod ticks;
pub mod token;
