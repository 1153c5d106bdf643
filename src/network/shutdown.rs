//! Graceful shutdown: a signal every connection watches, and a way to wait
//! until all of them have finished their in-flight requests.

use tokio::sync::{mpsc, watch};

/// Held by each connection: tells it to stop and, when dropped, that it has.
pub struct ShutdownListener {
    rx: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl ShutdownListener {
    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown has begun.
    pub async fn wait(&mut self) {
        while !*self.rx.borrow_and_update() {
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Makes `ShutdownListener`s; held by each accept loop.
#[derive(Clone)]
pub struct ShutdownFactory {
    rx: watch::Receiver<bool>,
    alive_tx: mpsc::Sender<()>,
}

impl ShutdownFactory {
    pub fn listener(&self) -> ShutdownListener {
        ShutdownListener {
            rx: self.rx.clone(),
            _alive: self.alive_tx.clone(),
        }
    }
}

/// Owned by the server.
pub struct Shutdown {
    tx: watch::Sender<bool>,
    alive_tx: mpsc::Sender<()>,
    alive_rx: mpsc::Receiver<()>,
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        let (alive_tx, alive_rx) = mpsc::channel(1);
        Shutdown {
            tx,
            alive_tx,
            alive_rx,
        }
    }

    /// Hands out listeners from other tasks (the accept loops).
    pub fn factory(&self) -> ShutdownFactory {
        ShutdownFactory {
            rx: self.tx.subscribe(),
            alive_tx: self.alive_tx.clone(),
        }
    }

    /// Signals every connection and waits (bounded) until they have all ended.
    pub async fn drain(self, limit: std::time::Duration) -> bool {
        let Shutdown {
            tx,
            alive_tx,
            mut alive_rx,
        } = self;
        let _ = tx.send(true);
        drop(alive_tx);
        tokio::time::timeout(limit, alive_rx.recv()).await.is_ok()
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the broker");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
