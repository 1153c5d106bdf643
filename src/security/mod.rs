//! Authentication building blocks: principals, SCRAM credentials stored in
//! RocksDB, the SASL mechanisms' server side, and Kafka's JAAS config format.
//! Connections (`network::session`) drive these; handlers never parse
//! credentials themselves.

pub mod acl;
pub mod authorizer;
pub mod credentials;
pub mod jaas;
pub mod oauthbearer;
pub mod plain;
pub mod scram;
pub mod ssl_principal;

/// Who a connection is, Kafka-style: `User:alice`, `User:CN=client,O=org`,
/// `User:ANONYMOUS` on listeners without authentication.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub kind: String,
    pub name: String,
}

impl Principal {
    pub fn user(name: impl Into<String>) -> Self {
        Principal {
            kind: "User".into(),
            name: name.into(),
        }
    }

    pub fn anonymous() -> Self {
        Principal::user("ANONYMOUS")
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// A SASL exchange in progress on one connection.
pub trait SaslServer: Send {
    /// Consumes the client's next message; answers with the server's reply,
    /// and whether authentication is complete.
    fn step(&mut self, client: &[u8]) -> Result<Step, AuthError>;
}

pub enum Step {
    /// Send this and wait for the client's next message.
    Continue(Vec<u8>),
    /// Authenticated as this user; send the final message (possibly empty).
    /// `lifetime`: how long the credential stays valid (an OAuth token's
    /// expiry), which bounds the session.
    Done {
        reply: Vec<u8>,
        user: String,
        lifetime: Option<std::time::Duration>,
    },
}

/// A failed login: the message goes to the client, `user` to the log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub message: String,
    pub user: Option<String>,
}

impl AuthError {
    pub fn new(message: impl Into<String>, user: Option<&str>) -> Self {
        AuthError {
            message: message.into(),
            user: user.map(str::to_string),
        }
    }
}
