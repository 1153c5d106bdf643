//! Network layer: the accept loop (`server`), per-connection framing and
//! ordered responses (`connection`), response frames written from several
//! buffers (`frame`), and graceful shutdown (`shutdown`).

pub mod connection;
pub mod frame;
pub mod limits;
pub mod reload;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod tls;
