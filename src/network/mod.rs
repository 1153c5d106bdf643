//! Network layer: the accept loop (`server`), per-connection framing and
//! ordered responses (`connection`), response frames written with vectored
//! I/O (`frame`), and graceful shutdown (`shutdown`).

pub mod connection;
pub mod frame;
pub mod server;
pub mod shutdown;
