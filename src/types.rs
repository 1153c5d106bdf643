//! Small domain types shared across the broker: partition indexes, offsets and
//! validated topic names.

use std::fmt;

use crate::error::BrokerError;

/// A partition index within a topic (never negative once constructed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(i32);

impl PartitionId {
    pub fn new(index: i32) -> Option<Self> {
        (index >= 0).then_some(PartitionId(index))
    }
    pub fn get(self) -> i32 {
        self.0
    }
}

/// Longest topic name Kafka allows.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// A topic name that passed Kafka's naming rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    /// Applies Kafka's rules: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
    pub fn parse(name: &str) -> Result<Self, BrokerError> {
        if name.is_empty() {
            return Err(BrokerError::InvalidTopic(
                "Topic name is illegal, it can't be empty".into(),
            ));
        }
        if name == "." || name == ".." {
            return Err(BrokerError::InvalidTopic(format!(
                "Topic name cannot be \".\" or \"..\" (got {name:?})"
            )));
        }
        if name.len() > MAX_TOPIC_NAME_LEN {
            return Err(BrokerError::InvalidTopic(format!(
                "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LEN} characters, topic name: {name}"
            )));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(BrokerError::InvalidTopic(format!(
                "Topic name {name:?} is illegal, it contains a character {bad:?} other than ASCII alphanumerics, '.', '_' and '-'"
            )));
        }
        Ok(TopicName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Kafka treats `.` and `_` as the same character in metric names, so two
    /// topics differing only there collide.
    pub fn collision_key(&self) -> String {
        self.0.replace('.', "_")
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Wall-clock milliseconds since the Unix epoch, as Kafka timestamps are.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_name_rules() {
        assert!(TopicName::parse("orders.v1_a-b").is_ok());
        assert!(TopicName::parse(&"a".repeat(249)).is_ok());
        assert!(TopicName::parse(&"a".repeat(250)).is_err());
        assert!(TopicName::parse("").is_err());
        assert!(TopicName::parse(".").is_err());
        assert!(TopicName::parse("..").is_err());
        assert!(TopicName::parse("a/b").is_err());
        assert!(TopicName::parse("a b").is_err());
        assert!(TopicName::parse("ä").is_err());
    }

    #[test]
    fn partition_ids_are_non_negative() {
        assert!(PartitionId::new(-1).is_none());
        assert_eq!(PartitionId::new(3).map(PartitionId::get), Some(3));
    }
}
