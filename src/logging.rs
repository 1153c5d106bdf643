//! Logging setup: `tracing` with the level from `RUST_LOG`, else `log.level`, else `info`.

use tracing_subscriber::EnvFilter;

pub fn init(level_from_config: Option<&str>, json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level_from_config.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
