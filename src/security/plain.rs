//! SASL/PLAIN (RFC 4616): one message `authzid NUL user NUL password`,
//! checked against the listener's JAAS `user_<name>` entries.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{AuthError, SaslServer, Step};

pub struct Plain {
    users: Arc<BTreeMap<String, String>>,
}

impl Plain {
    pub fn new(users: Arc<BTreeMap<String, String>>) -> Self {
        Plain { users }
    }
}

/// Compares without stopping at the first difference, so timing does not
/// reveal how much of a password was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl SaslServer for Plain {
    fn step(&mut self, client: &[u8]) -> Result<Step, AuthError> {
        let parts: Vec<&[u8]> = client.split(|&b| b == 0).collect();
        let [authzid, user, password] = parts.as_slice() else {
            return Err(AuthError::new(
                "Invalid SASL/PLAIN message: expected authzid, user and password",
                None,
            ));
        };
        let user = std::str::from_utf8(user)
            .map_err(|_| AuthError::new("Invalid SASL/PLAIN message: user is not UTF-8", None))?;
        if !authzid.is_empty() && *authzid != user.as_bytes() {
            return Err(AuthError::new(
                "Authentication failed: authorization id must match the user name",
                Some(user),
            ));
        }
        match self.users.get(user) {
            Some(expected) if constant_time_eq(expected.as_bytes(), password) => Ok(Step::Done {
                reply: Vec::new(),
                user: user.to_string(),
                lifetime: None,
            }),
            _ => Err(AuthError::new(
                "Authentication failed: Invalid username or password",
                Some(user),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_user_and_password() {
        let mut users = BTreeMap::new();
        users.insert("alice".to_string(), "pw".to_string());
        let users = Arc::new(users);
        assert!(matches!(
            Plain::new(users.clone()).step(b"\0alice\0pw"),
            Ok(Step::Done { .. })
        ));
        assert!(Plain::new(users.clone()).step(b"\0alice\0nope").is_err());
        assert!(Plain::new(users.clone()).step(b"\0bob\0pw").is_err());
        assert!(Plain::new(users.clone()).step(b"alice\0pw").is_err());
        assert!(Plain::new(users).step(b"bob\0alice\0pw").is_err());
    }
}
