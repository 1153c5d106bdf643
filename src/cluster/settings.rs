//! Settings every broker of a cluster applies alike — SCRAM credentials,
//! ACLs, client quotas, cluster-wide dynamic broker configs — shared through
//! the metadata store under `settings/<kind>/<item>`. The broker where an
//! administrator changes one applies it locally and publishes the item's new
//! value (in order, retried while the store is away); every broker's watch
//! applies it within moments; a broker (re)joining replaces its local set of
//! each kind with the store's.

/// Items of one kind: item → value.
pub type Items = std::collections::BTreeMap<String, Vec<u8>>;

/// One changed item: `None` removes it.
pub type Change = (SettingKind, String, Option<Vec<u8>>);

/// What kind of setting an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SettingKind {
    /// `<mechanism>/<user>` → the credential (JSON).
    Scram,
    /// The binding (JSON) → empty.
    Acl,
    /// The entity (JSON) → its quota values (JSON).
    Quota,
    /// `default` → the cluster-wide dynamic broker configs (JSON).
    BrokerDefaults,
    /// The group id → its config overrides (JSON).
    GroupConfigs,
}

impl SettingKind {
    pub const ALL: [SettingKind; 5] = [
        SettingKind::Scram,
        SettingKind::Acl,
        SettingKind::Quota,
        SettingKind::BrokerDefaults,
        SettingKind::GroupConfigs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SettingKind::Scram => "scram",
            SettingKind::Acl => "acls",
            SettingKind::Quota => "quotas",
            SettingKind::BrokerDefaults => "configs",
            SettingKind::GroupConfigs => "groupconfigs",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}
