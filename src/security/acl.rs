//! ACL bindings as Kafka defines them (resource pattern + principal, host,
//! operation, permission), the filters of DescribeAcls/DeleteAcls, and their
//! store in RocksDB's `meta` CF. The wire numbers are Kafka's.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, BrokerResult};
use crate::storage::db::{Store, CF_META};

const PREFIX: &[u8] = b"acl/";
/// Kafka's name for the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
pub const WILDCARD: &str = "*";

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $n:expr, $label:expr;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),* }

        impl $name {
            pub fn from_wire(v: i8) -> Option<Self> {
                match v { $($n => Some($name::$variant),)* _ => None }
            }
            pub fn wire(self) -> i8 {
                match self { $($name::$variant => $n),* }
            }
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

wire_enum!(
    /// Kafka's ResourceType (ANY only in filters).
    ResourceType {
        Any = 1, "Any";
        Topic = 2, "Topic";
        Group = 3, "Group";
        Cluster = 4, "Cluster";
        TransactionalId = 5, "TransactionalId";
        DelegationToken = 6, "DelegationToken";
        User = 7, "User";
    }
);

wire_enum!(
    /// Kafka's PatternType (ANY and MATCH only in filters).
    PatternType {
        Any = 1, "ANY";
        Match = 2, "MATCH";
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

wire_enum!(
    /// Kafka's AclOperation (ANY only in filters).
    Operation {
        Any = 1, "ANY";
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
);

wire_enum!(
    /// Kafka's AclPermissionType (ANY only in filters).
    Permission {
        Any = 1, "ANY";
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

impl Operation {
    /// Whether an ACL granting `self` allows `requested`: ALL allows
    /// everything, and Kafka's implications (READ/WRITE/DELETE/ALTER imply
    /// DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS).
    pub fn allows(self, requested: Operation) -> bool {
        use Operation::*;
        self == requested
            || self == All
            || (requested == Describe && matches!(self, Read | Write | Delete | Alter))
            || (requested == DescribeConfigs && self == AlterConfigs)
    }

    /// Whether a DENY of `self` denies `requested`: only the operation itself
    /// or ALL (a DENY of READ does not deny DESCRIBE).
    pub fn denies(self, requested: Operation) -> bool {
        self == requested || self == Operation::All
    }
}

impl ResourceType {
    /// The operations `authorized_operations` reports for this type, as Kafka.
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Delete,
                Alter,
                Describe,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
            ResourceType::Any => &[],
        }
    }
}

/// One ACL: who may (or may not) do what on which resources.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    /// `User:alice`, or `User:*` for everyone.
    pub principal: String,
    /// An IP address, or `*` for any host.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// Checks a binding from CreateAcls, as Kafka's controller does.
    pub fn validate(&self) -> BrokerResult<()> {
        let bad = |m: String| Err(BrokerError::InvalidRequest(m));
        if self.resource_type == ResourceType::Any {
            return bad("Invalid resourceType ANY".into());
        }
        if !matches!(self.pattern, PatternType::Literal | PatternType::Prefixed) {
            return bad(format!("Invalid patternType {}", self.pattern));
        }
        if self.operation == Operation::Any {
            return bad("Invalid operation ANY".into());
        }
        if self.permission == Permission::Any {
            return bad("Invalid permissionType ANY".into());
        }
        if self.name.is_empty() {
            return bad("Resource name should not be empty".into());
        }
        if self.resource_type == ResourceType::Cluster
            && (self.name != CLUSTER_NAME || self.pattern != PatternType::Literal)
        {
            return bad(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => {
                return bad(format!(
                    "Could not parse principal from `{}` (no colon is present separating the principal type from the principal name)",
                    self.principal
                ))
            }
        }
        if self.host.is_empty() {
            return bad("Invalid host: empty".into());
        }
        Ok(())
    }

    /// Whether this ACL's pattern covers the resource `(rt, name)`.
    pub fn covers(&self, rt: ResourceType, name: &str) -> bool {
        self.resource_type == rt
            && match self.pattern {
                PatternType::Literal => self.name == name || self.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(&self.name),
                _ => false,
            }
    }
}

/// A DescribeAcls / DeleteAcls filter.
#[derive(Debug, Clone)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub name: Option<String>,
    pub pattern: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclFilter {
    /// Decodes a filter's wire fields; UNKNOWN or out-of-range values are
    /// INVALID_REQUEST as in Kafka.
    #[allow(clippy::too_many_arguments)]
    pub fn from_wire(
        resource_type: i8,
        name: Option<&str>,
        pattern: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> BrokerResult<Self> {
        let bad = |what: &str, v: i8| BrokerError::InvalidRequest(format!("Invalid {what} {v}"));
        Ok(AclFilter {
            resource_type: ResourceType::from_wire(resource_type)
                .ok_or_else(|| bad("resource type", resource_type))?,
            name: name.map(str::to_string),
            pattern: PatternType::from_wire(pattern).ok_or_else(|| bad("pattern type", pattern))?,
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation: Operation::from_wire(operation)
                .ok_or_else(|| bad("operation", operation))?,
            permission: Permission::from_wire(permission)
                .ok_or_else(|| bad("permission type", permission))?,
        })
    }

    pub fn matches(&self, acl: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != acl.resource_type {
            return false;
        }
        let pattern_ok = match (self.pattern, &self.name) {
            (PatternType::Any, None) | (PatternType::Match, None) => true,
            (PatternType::Any, Some(n)) => &acl.name == n,
            (PatternType::Match, Some(n)) => match acl.pattern {
                PatternType::Literal => &acl.name == n || acl.name == WILDCARD,
                PatternType::Prefixed => n.starts_with(&acl.name),
                _ => false,
            },
            (p, None) => acl.pattern == p,
            (p, Some(n)) => acl.pattern == p && &acl.name == n,
        };
        pattern_ok
            && self.principal.as_ref().is_none_or(|p| p == &acl.principal)
            && self.host.as_ref().is_none_or(|h| h == &acl.host)
            && (self.operation == Operation::Any || self.operation == acl.operation)
            && (self.permission == Permission::Any || self.permission == acl.permission)
    }
}

/// All ACLs, in memory for the authorizer and persisted for restarts.
pub struct AclStore {
    store: Arc<Store>,
    acls: RwLock<Vec<AclBinding>>,
}

fn db_key(acl: &AclBinding) -> BrokerResult<Vec<u8>> {
    let mut k = PREFIX.to_vec();
    k.extend(serde_json::to_vec(acl).map_err(|e| BrokerError::Storage(e.to_string()))?);
    Ok(k)
}

impl AclStore {
    pub fn load(store: Arc<Store>) -> BrokerResult<Self> {
        let mut acls = Vec::new();
        {
            let meta = store.cf(CF_META)?;
            for item in store.db.prefix_iterator_cf(meta, PREFIX) {
                let (k, _) = item?;
                if !k.starts_with(PREFIX) {
                    break;
                }
                match serde_json::from_slice::<AclBinding>(&k[PREFIX.len()..]) {
                    Ok(a) => acls.push(a),
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable ACL record"),
                }
            }
        }
        acls.sort();
        Ok(AclStore {
            store,
            acls: RwLock::new(acls),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<AclBinding>> {
        self.acls.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<AclBinding>> {
        self.acls.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an ACL (adding one that exists is a no-op, as in Kafka).
    pub fn create(&self, acl: AclBinding) -> BrokerResult<()> {
        acl.validate()?;
        let mut acls = self.write();
        if acls.contains(&acl) {
            return Ok(());
        }
        let meta = self.store.cf(CF_META)?;
        self.store.db.put_cf(meta, db_key(&acl)?, b"")?;
        let at = acls.partition_point(|a| a < &acl);
        acls.insert(at, acl);
        Ok(())
    }

    pub fn describe(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.read()
            .iter()
            .filter(|a| filter.matches(a))
            .cloned()
            .collect()
    }

    /// Removes and returns every ACL the filter matches.
    pub fn delete(&self, filter: &AclFilter) -> BrokerResult<Vec<AclBinding>> {
        let mut acls = self.write();
        let (gone, kept): (Vec<_>, Vec<_>) = acls.drain(..).partition(|a| filter.matches(a));
        *acls = kept;
        let meta = self.store.cf(CF_META)?;
        for acl in &gone {
            if let Err(e) = self.store.db.delete_cf(meta, db_key(acl)?) {
                // Keep memory and disk in step: put the unremoved ones back.
                acls.extend(gone.iter().cloned());
                acls.sort();
                return Err(e.into());
            }
        }
        Ok(gone)
    }

    /// Removes exactly this ACL (cluster mode: deleted elsewhere).
    pub fn remove_exact(&self, acl: &AclBinding) -> BrokerResult<()> {
        let mut acls = self.write();
        if let Some(at) = acls.iter().position(|a| a == acl) {
            let meta = self.store.cf(CF_META)?;
            self.store.db.delete_cf(meta, db_key(acl)?)?;
            acls.remove(at);
        }
        Ok(())
    }

    /// Cluster mode: exactly these ACLs, as the metadata store holds them.
    pub fn replace_all(&self, wanted: Vec<AclBinding>) -> BrokerResult<()> {
        let current: Vec<AclBinding> = self.read().clone();
        for a in current.iter().filter(|a| !wanted.contains(a)) {
            self.remove_exact(a)?;
        }
        for a in wanted {
            self.create(a)?;
        }
        Ok(())
    }

    /// Runs `f` over the ACLs whose pattern covers the resource.
    pub fn for_resource(&self, rt: ResourceType, name: &str, mut f: impl FnMut(&AclBinding)) {
        for a in self.read().iter().filter(|a| a.covers(rt, name)) {
            f(a);
        }
    }

    /// Runs `f` over every ACL of a resource type (for "any topic" checks).
    pub fn for_type(&self, rt: ResourceType, mut f: impl FnMut(&AclBinding)) {
        for a in self.read().iter().filter(|a| a.resource_type == rt) {
            f(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(name: &str, pattern: PatternType, op: Operation) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            name: name.into(),
            pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: op,
            permission: Permission::Allow,
        }
    }

    #[test]
    fn implications() {
        assert!(Operation::Read.allows(Operation::Describe));
        assert!(Operation::AlterConfigs.allows(Operation::DescribeConfigs));
        assert!(!Operation::Describe.allows(Operation::Read));
        assert!(!Operation::Read.denies(Operation::Describe));
        assert!(Operation::All.denies(Operation::Write));
    }

    #[test]
    fn patterns_cover_resources() {
        assert!(acl("pay", PatternType::Prefixed, Operation::Read)
            .covers(ResourceType::Topic, "payments"));
        assert!(!acl("pay", PatternType::Literal, Operation::Read)
            .covers(ResourceType::Topic, "payments"));
        assert!(acl("*", PatternType::Literal, Operation::Read).covers(ResourceType::Topic, "x"));
        assert!(!acl("pay", PatternType::Prefixed, Operation::Read)
            .covers(ResourceType::Group, "payments"));
    }

    #[test]
    fn match_filter_finds_literal_wildcard_and_prefixed() {
        let f = AclFilter::from_wire(2, Some("payments"), 2, None, None, 1, 1).unwrap();
        assert!(f.matches(&acl("payments", PatternType::Literal, Operation::Read)));
        assert!(f.matches(&acl("*", PatternType::Literal, Operation::Read)));
        assert!(f.matches(&acl("pay", PatternType::Prefixed, Operation::Read)));
        assert!(!f.matches(&acl("pays", PatternType::Prefixed, Operation::Read)));
        let lit = AclFilter::from_wire(2, Some("pay"), 3, None, None, 1, 1).unwrap();
        assert!(!lit.matches(&acl("pay", PatternType::Prefixed, Operation::Read)));
        let any = AclFilter::from_wire(1, Some("pay"), 1, None, None, 1, 1).unwrap();
        assert!(any.matches(&acl("pay", PatternType::Prefixed, Operation::Read)));
        assert!(AclFilter::from_wire(0, None, 1, None, None, 1, 1).is_err());
    }

    #[test]
    fn validation() {
        assert!(acl("t", PatternType::Literal, Operation::Write)
            .validate()
            .is_ok());
        assert!(acl("t", PatternType::Match, Operation::Write)
            .validate()
            .is_err());
        assert!(acl("", PatternType::Literal, Operation::Write)
            .validate()
            .is_err());
        let mut c = acl("nope", PatternType::Literal, Operation::Create);
        c.resource_type = ResourceType::Cluster;
        assert!(c.validate().is_err());
        c.name = CLUSTER_NAME.into();
        assert!(c.validate().is_ok());
        let mut p = acl("t", PatternType::Literal, Operation::Read);
        p.principal = "alice".into();
        assert!(p.validate().is_err());
    }
}
