//! Start-up of the broker's background work: which periodic passes run, how
//! often, over which parts of the broker. Storage and coordinators provide
//! the passes and take only what they work on; only this module knows the
//! whole `Broker`.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::cluster::settings::SettingKind;
use crate::cluster::TopicEvent;
use crate::storage::{background, compaction, producer_expiry, retention};
use crate::types::TopicName;

/// Cluster mode: applies the shared topics' changes to this broker's
/// storage, so that the partitions it leads exist locally.
pub fn spawn_topic_sync(
    broker: &Arc<Broker>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<TopicEvent>,
) {
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let Some(b) = weak.upgrade() else { break };
            if let Err(e) = apply_topic_event(&b, ev).await {
                tracing::warn!(error = %e, "could not apply a cluster topic change locally");
            }
        }
    });
}

async fn apply_topic_event(b: &Broker, ev: TopicEvent) -> crate::error::BrokerResult<()> {
    match ev {
        TopicEvent::Present(t) => {
            let wanted = i32::try_from(t.partitions.len()).unwrap_or(i32::MAX);
            match b.catalog.get(&t.name) {
                Some(local) if local.id == t.id => {
                    if local.configs != t.configs {
                        b.catalog.set_configs(&t.name, t.configs.clone())?;
                    }
                    let local = if (local.partitions.len() as i32) < wanted {
                        b.catalog.add_partitions(&t.name, wanted)?;
                        b.catalog.get(&t.name).unwrap_or(local)
                    } else {
                        local
                    };
                    b.replicas.apply(&t, &local).await;
                    Ok(())
                }
                other => {
                    // A topic of the same name from before (deleted and
                    // created again while this broker was away) goes first.
                    if let Some(old) = other {
                        drop_local(b, &old).await?;
                    }
                    let name = TopicName::parse(&t.name)?;
                    let local =
                        b.catalog
                            .create_topic_with_id(&name, t.id, wanted, t.configs.clone())?;
                    b.replicas.apply(&t, &local).await;
                    Ok(())
                }
            }
        }
        TopicEvent::Setting { kind, key, value } => apply_setting(b, kind, &key, value.as_deref()),
        TopicEvent::Settings { kind, all } => apply_settings(b, kind, &all),
        TopicEvent::Fenced => {
            b.replicas.step_down_all();
            Ok(())
        }
        TopicEvent::Deleted(name) => match b.catalog.get(&name) {
            Some(local) => drop_local(b, &local).await,
            None => Ok(()),
        },
    }
}

/// The one item of the cluster-wide dynamic broker configs.
pub const DEFAULTS_ITEM: &str = "default";

/// Every item of a kind as the store holds them: this broker's set becomes that.
fn apply_settings(
    b: &Broker,
    kind: SettingKind,
    all: &std::collections::BTreeMap<String, Vec<u8>>,
) -> crate::error::BrokerResult<()> {
    match kind {
        SettingKind::Scram => b.credentials.replace_all(all),
        SettingKind::Acl => b.authorizer.acls.replace_all(
            all.keys()
                .filter_map(|k| serde_json::from_str(k).ok())
                .collect(),
        ),
        SettingKind::Quota => b.quotas.replace_all(all),
        SettingKind::GroupConfigs => b.group_configs.replace_all(all),
        SettingKind::BrokerDefaults => apply_setting(
            b,
            kind,
            DEFAULTS_ITEM,
            all.get(DEFAULTS_ITEM).map(Vec::as_slice),
        ),
    }
}

/// Cluster mode, before an administrator's change of a shared setting:
/// catches up with the store, so the change builds on every earlier one
/// (made through any broker). Standalone: nothing.
pub async fn catch_up(b: &Broker, kind: SettingKind) -> crate::error::BrokerResult<()> {
    match b.cluster.shared_settings(kind).await? {
        Some(all) => apply_settings(b, kind, &all),
        None => Ok(()),
    }
}

/// A shared setting changed on some broker: this one applies it too.
fn apply_setting(
    b: &Broker,
    kind: SettingKind,
    item: &str,
    value: Option<&[u8]>,
) -> crate::error::BrokerResult<()> {
    tracing::debug!(kind = kind.name(), "shared setting applied");
    match kind {
        SettingKind::Scram => b.credentials.apply_shared(item, value),
        SettingKind::Acl => match serde_json::from_str(item) {
            Ok(acl) if value.is_some() => b.authorizer.acls.create(acl),
            Ok(acl) => b.authorizer.acls.remove_exact(&acl),
            Err(_) => Ok(()),
        },
        SettingKind::Quota => b.quotas.apply_shared(item, value),
        SettingKind::GroupConfigs => b.group_configs.apply_shared(item, value),
        SettingKind::BrokerDefaults => {
            let values = value
                .and_then(|v| serde_json::from_slice(v).ok())
                .unwrap_or_default();
            if b.broker_configs
                .get(crate::config::dynamic::Scope::ClusterDefault)
                == values
            {
                return Ok(());
            }
            b.broker_configs
                .replace(crate::config::dynamic::Scope::ClusterDefault, values, false)
        }
    }
}

async fn drop_local(
    b: &Broker,
    t: &Arc<crate::storage::catalog::Topic>,
) -> crate::error::BrokerResult<()> {
    b.replicas.forget_topic(t.name.as_str());
    b.catalog.delete_topic(&b.writer, t).await?;
    b.metrics.remove_topic(t.name.as_str(), t.partitions.len());
    if let Err(e) = b.groups.offsets.delete_topic(t.name.as_str()) {
        tracing::warn!(topic = %t.name, error = %e, "could not drop committed offsets of the deleted topic");
    }
    Ok(())
}

/// Cluster mode: the coordinators load a `__consumer_offsets` or
/// `__transaction_state` partition when this broker comes to lead it and
/// unload it when it stops; offsets expire through the log.
pub fn spawn_coordinator_loading(broker: &Arc<Broker>) {
    broker
        .groups
        .replicated
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        // Group states changed by joins, leaves and expiries reach the log.
        let mut every = tokio::time::interval(Duration::from_millis(200));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(b) = weak.upgrade() else { break };
            crate::coordinator::offsets_log::log_groups(&b, None).await;
        }
    });
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::coordinator::EXPIRY_CHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let Some(b) = weak.upgrade() else { break };
            crate::coordinator::offsets_log::expire(&b).await;
        }
    });
    let mut events = broker.replicas.role_events();
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        while let Some((topic, partition)) = events.recv().await {
            let Some(b) = weak.upgrade() else { break };
            if topic == crate::coordinator::offsets_log::TOPIC {
                crate::coordinator::offsets_log::on_role_change(&b, partition).await;
            } else if topic == crate::coordinator::txn_log::TOPIC {
                crate::coordinator::txn_log::on_role_change(&b, partition).await;
            } else if topic == crate::coordinator::share_state::TOPIC {
                crate::coordinator::share_state::on_role_change(&b, partition).await;
            }
        }
    });
}

/// Spawns the background passes; they stop when the broker is dropped.
pub fn spawn_background(broker: &Arc<Broker>) {
    let c = &broker.config;
    broker.groups.spawn_ticker();
    spawn_share_ticker(broker);
    crate::coordinator::txn::spawn(
        Arc::downgrade(broker),
        Duration::from_millis(c.transaction_abort_check_interval_ms),
    );
    background::every(
        Arc::downgrade(broker),
        Duration::from_millis(c.retention_check_interval_ms),
        "retention",
        |b: &Broker| retention::pass(&b.store, &b.catalog, &b.broker_configs.layers().merged),
    );
    background::every(
        Arc::downgrade(broker),
        Duration::from_millis(c.cleaner_backoff_ms),
        "compaction",
        |b: &Broker| {
            let layers = b.broker_configs.layers();
            for r in compaction::run_once(
                &b.store,
                &b.catalog,
                &layers.merged,
                b.config.cleaner_io_buffer_size,
            ) {
                b.metrics.cleaner_pass(&r);
            }
        },
    );
    if let Some(r) = &broker.replicas.cfg {
        // Kafka checks every half of the lag bound.
        let replicas = Arc::downgrade(&broker.replicas);
        let period = (r.lag_time_max / 2).max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(m) = replicas.upgrade() else { break };
                m.shrink_pass();
            }
        });
    }
    background::every(
        Arc::downgrade(broker),
        Duration::from_millis(c.producer_id_expiration_check_interval_ms),
        "producer expiry",
        |b: &Broker| producer_expiry::pass(&b.catalog, b.config.producer_id_expiration_ms),
    );
}

/// Share groups: ends acquisition locks that ran out, persists what
/// acquisitions changed, gives back the records of members whose session
/// expired, and drops the state of deleted topics.
fn spawn_share_ticker(broker: &Arc<Broker>) {
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let Some(b) = weak.upgrade() else { break };
            for (group, member) in b.groups.take_share_departed() {
                let closed = b.shares.sessions.close(&group, &member);
                tracing::debug!(group = %group, member = %member, had_session = closed.is_some(), "releasing an expired share member's records");
                let limits = crate::share::limits(
                    &b.broker_configs.layers().merged,
                    &b.group_configs.get(&group),
                );
                crate::coordinator::share_state::release_member(&b, &group, &member, None, &limits)
                    .await;
            }
            crate::coordinator::share_state::tick(&b).await;
        }
    });
}
