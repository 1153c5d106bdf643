//! The one place that decides whether a principal may perform an operation
//! on a resource, with the semantics of Kafka's StandardAuthorizer: super
//! users may do everything, a matching DENY beats any ALLOW, an ALLOW of an
//! operation also allows the operations it implies, and a resource no ACL
//! mentions is open only with `allow.everyone.if.no.acl.found`. Without
//! `authorizer.class.name` everything is allowed, as in Kafka.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::error::BrokerResult;
use crate::security::acl::{AclStore, Operation, PatternType, Permission, ResourceType, WILDCARD};
use crate::security::Principal;
use crate::storage::db::Store;

/// Kafka's authorizer class names; any of them switches ACLs on.
const AUTHORIZER_CLASSES: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
    "kafka.security.auth.SimpleAclAuthorizer",
];

/// The authorizer's settings from `server.properties`.
#[derive(Debug, Clone, Default)]
pub struct AuthorizerConfig {
    pub enabled: bool,
    /// `super.users`, e.g. `User:admin;User:CN=ops,O=org`.
    pub super_users: HashSet<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerConfig {
    pub fn from_raw(raw: &BTreeMap<String, String>) -> Result<Self, String> {
        let enabled = match raw.get("authorizer.class.name").map(|s| s.trim()) {
            None | Some("") => false,
            Some(c) if AUTHORIZER_CLASSES.contains(&c) => true,
            Some(c) => {
                return Err(format!(
                    "authorizer.class.name={c} is not supported; use {}",
                    AUTHORIZER_CLASSES[0]
                ))
            }
        };
        let super_users = raw
            .get("super.users")
            .map(|s| {
                s.split(';')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
                    .collect::<HashSet<_>>()
            })
            .unwrap_or_default();
        for u in &super_users {
            if !u.contains(':') {
                return Err(format!(
                    "super.users: {u:?} is not a principal (expected Type:name, e.g. User:admin)"
                ));
            }
        }
        let allow_everyone_if_no_acl_found = match raw
            .get("allow.everyone.if.no.acl.found")
            .map(|s| s.trim().to_ascii_lowercase())
        {
            None => false,
            Some(s) if s == "true" => true,
            Some(s) if s == "false" => false,
            Some(s) => {
                return Err(format!(
                    "invalid value {s:?} for allow.everyone.if.no.acl.found: expected true or false"
                ))
            }
        };
        Ok(AuthorizerConfig {
            enabled,
            super_users,
            allow_everyone_if_no_acl_found,
        })
    }

    pub fn is_key(key: &str) -> bool {
        matches!(
            key,
            "authorizer.class.name" | "super.users" | "allow.everyone.if.no.acl.found"
        )
    }
}

/// Who asks: the principal and the host it connects from.
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    pub principal: &'a Principal,
    pub host: &'a str,
}

pub struct Authorizer {
    config: AuthorizerConfig,
    pub acls: AclStore,
}

impl Authorizer {
    pub fn load(config: AuthorizerConfig, store: Arc<Store>) -> BrokerResult<Self> {
        Ok(Authorizer {
            config,
            acls: AclStore::load(store)?,
        })
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn is_super(&self, who: Subject<'_>) -> bool {
        self.config.super_users.contains(&who.principal.to_string())
    }

    fn applies_to(acl_principal: &str, acl_host: &str, principal: &str, host: &str) -> bool {
        (acl_principal == principal || acl_principal == "User:*")
            && (acl_host == WILDCARD || acl_host == host)
    }

    /// May `who` perform `op` on the resource `(rt, name)`?
    pub fn authorize(&self, who: Subject<'_>, op: Operation, rt: ResourceType, name: &str) -> bool {
        if !self.config.enabled || self.is_super(who) {
            return true;
        }
        let principal = who.principal.to_string();
        let (mut any, mut allowed, mut denied) = (false, false, false);
        self.acls.for_resource(rt, name, |a| {
            any = true;
            if !Self::applies_to(&a.principal, &a.host, &principal, who.host) {
                return;
            }
            match a.permission {
                Permission::Deny if a.operation.denies(op) => denied = true,
                Permission::Allow if a.operation.allows(op) => allowed = true,
                _ => {}
            }
        });
        if denied {
            return false;
        }
        allowed || (!any && self.config.allow_everyone_if_no_acl_found)
    }

    /// May `who` perform `op` on at least one resource of type `rt`? (Kafka's
    /// authorizeByResourceType: an idempotent producer needs WRITE on some
    /// topic.) An ALLOW counts unless a DENY of a wider pattern cancels it.
    pub fn authorize_any(&self, who: Subject<'_>, op: Operation, rt: ResourceType) -> bool {
        if !self.config.enabled || self.is_super(who) {
            return true;
        }
        // A resource nobody wrote ACLs for is open when everyone is allowed.
        if self.config.allow_everyone_if_no_acl_found
            && self.authorize(who, op, rt, "\u{0}runnel-unnamed-resource")
        {
            return true;
        }
        let principal = who.principal.to_string();
        let mut deny_literal = HashSet::new();
        let mut deny_prefixes = Vec::new();
        let mut allows = Vec::new();
        self.acls.for_type(rt, |a| {
            if !Self::applies_to(&a.principal, &a.host, &principal, who.host) {
                return;
            }
            match a.permission {
                Permission::Deny if a.operation.denies(op) => match a.pattern {
                    PatternType::Literal => {
                        deny_literal.insert(a.name.clone());
                    }
                    _ => deny_prefixes.push(a.name.clone()),
                },
                Permission::Allow if a.operation.allows(op) => {
                    allows.push((a.pattern, a.name.clone()))
                }
                _ => {}
            }
        });
        if deny_literal.contains(WILDCARD) {
            return false;
        }
        allows.iter().any(|(pattern, name)| {
            !deny_prefixes.iter().any(|d| name.starts_with(d.as_str()))
                && (*pattern != PatternType::Literal || !deny_literal.contains(name))
        })
    }

    /// Kafka's `authorized_operations` bit field for a resource.
    pub fn authorized_operations(&self, who: Subject<'_>, rt: ResourceType, name: &str) -> i32 {
        rt.operations()
            .iter()
            .filter(|op| self.authorize(who, **op, rt, name))
            .fold(0i32, |acc, op| acc | (1 << op.wire()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::acl::AclBinding;

    fn authorizer(extra: &[(&str, &str)]) -> (tempfile::TempDir, Authorizer) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        raw.insert("authorizer.class.name".into(), AUTHORIZER_CLASSES[0].into());
        raw.insert("super.users".into(), "User:admin".into());
        for (k, v) in extra {
            raw.insert(k.to_string(), v.to_string());
        }
        let a = Authorizer::load(AuthorizerConfig::from_raw(&raw).unwrap(), store).unwrap();
        (dir, a)
    }

    fn add(
        a: &Authorizer,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: Operation,
        perm: Permission,
    ) {
        a.acls
            .create(AclBinding {
                resource_type: ResourceType::Topic,
                name: name.into(),
                pattern,
                principal: principal.into(),
                host: "*".into(),
                operation: op,
                permission: perm,
            })
            .unwrap();
    }

    #[test]
    fn kafka_semantics() {
        let (_d, a) = authorizer(&[]);
        let alice = Principal::user("alice");
        let admin = Principal::user("admin");
        let who = Subject {
            principal: &alice,
            host: "127.0.0.1",
        };
        let sup = Subject {
            principal: &admin,
            host: "127.0.0.1",
        };
        // Nothing granted: denied, except to the super user.
        assert!(!a.authorize(who, Operation::Write, ResourceType::Topic, "pay-1"));
        assert!(a.authorize(sup, Operation::Write, ResourceType::Topic, "pay-1"));
        assert!(!a.authorize_any(who, Operation::Write, ResourceType::Topic));
        add(
            &a,
            "pay-",
            PatternType::Prefixed,
            "User:alice",
            Operation::Write,
            Permission::Allow,
        );
        assert!(a.authorize(who, Operation::Write, ResourceType::Topic, "pay-1"));
        assert!(a.authorize(who, Operation::Describe, ResourceType::Topic, "pay-1"));
        assert!(!a.authorize(who, Operation::Read, ResourceType::Topic, "pay-1"));
        assert!(!a.authorize(who, Operation::Write, ResourceType::Topic, "other"));
        assert!(a.authorize_any(who, Operation::Write, ResourceType::Topic));
        // DENY beats ALLOW.
        add(
            &a,
            "pay-secret",
            PatternType::Literal,
            "User:*",
            Operation::Write,
            Permission::Deny,
        );
        assert!(!a.authorize(who, Operation::Write, ResourceType::Topic, "pay-secret"));
        assert!(a.authorize(who, Operation::Describe, ResourceType::Topic, "pay-secret"));
        add(
            &a,
            "pay",
            PatternType::Prefixed,
            "User:alice",
            Operation::All,
            Permission::Deny,
        );
        assert!(!a.authorize_any(who, Operation::Write, ResourceType::Topic));
        let ops = a.authorized_operations(sup, ResourceType::Group, "g");
        assert_eq!(ops, (1 << 3) | (1 << 8) | (1 << 6));
    }

    #[test]
    fn allow_everyone_if_no_acl_found() {
        let (_d, a) = authorizer(&[("allow.everyone.if.no.acl.found", "true")]);
        let bob = Principal::user("bob");
        let who = Subject {
            principal: &bob,
            host: "10.0.0.1",
        };
        assert!(a.authorize(who, Operation::Read, ResourceType::Topic, "free"));
        assert!(a.authorize_any(who, Operation::Write, ResourceType::Topic));
        add(
            &a,
            "free",
            PatternType::Literal,
            "User:carol",
            Operation::Read,
            Permission::Allow,
        );
        assert!(!a.authorize(who, Operation::Read, ResourceType::Topic, "free"));
    }

    #[test]
    fn config_errors() {
        let mut raw = BTreeMap::new();
        raw.insert(
            "authorizer.class.name".to_string(),
            "com.example.Mine".to_string(),
        );
        assert!(AuthorizerConfig::from_raw(&raw).is_err());
        raw.clear();
        raw.insert("super.users".to_string(), "admin".to_string());
        assert!(AuthorizerConfig::from_raw(&raw).is_err());
    }
}
