//! Command-line arguments, following Kafka's own `--override key=value` convention.

use clap::Parser;
use std::path::PathBuf;

/// Runnel, a Kafka-compatible broker on RocksDB.
#[derive(Debug, Parser)]
#[command(name = "runnel", version, about)]
pub struct Args {
    /// Path to a server.properties file using Kafka's key names.
    #[arg(long, short = 'c', default_value = "config/server.properties")]
    pub config: PathBuf,

    /// Override one configuration key (`key=value`); may be repeated. Overrides win over the file.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

impl Args {
    pub fn parse_args() -> Self {
        Args::parse()
    }
}
