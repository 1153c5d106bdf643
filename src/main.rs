//! Runnel: a Kafka-compatible broker that keeps every partition in RocksDB.
//!
//! `main` only wires the pieces together: parse the command line, load the
//! configuration, start logging, open storage and run the network server.

mod broker;
mod cli;
mod cluster;
mod config;
mod coordinator;
mod dispatch;
mod error;
mod handlers;
mod logging;
mod metrics;
mod network;
mod quotas;
mod records;
mod replication;
mod security;
mod share;
mod startup;
mod storage;
mod types;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Args::parse_args();
    let config = match config::BrokerConfig::load(&args.config, &args.overrides) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("runnel: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.server.log_level.as_deref(), config.server.log_json);
    config.log_warnings();
    match broker::run(config.server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "broker stopped with an error");
            ExitCode::FAILURE
        }
    }
}
