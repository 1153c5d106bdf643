//! Broker errors and their one mapping to Kafka error codes.

use kafka_protocol::error::ResponseError;

/// Everything a request can fail with; `code()` is the only place that maps
/// them onto the wire.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("This server does not host this topic-partition")]
    UnknownTopicOrPartition,
    #[error("This server does not host this topic ID")]
    UnknownTopicId,
    #[error("{0}")]
    InvalidTopic(String),
    #[error("Topic '{0}' already exists")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    CorruptMessage(String),
    #[error("{0}")]
    MessageTooLarge(String),
    #[error("The requested offset is not within the range of offsets maintained by the server")]
    OffsetOutOfRange,
    #[error("{0}")]
    InvalidRecord(String),
    /// Some records of a batch are invalid (KIP-467): each is named by its
    /// index in the batch; INVALID_TIMESTAMP if any timestamp is out of range,
    /// else INVALID_RECORD.
    #[error("{message}")]
    RecordErrors {
        timestamp: bool,
        message: String,
        records: Vec<(i32, String)>,
    },
    #[error("The fetch session ID was not found")]
    FetchSessionIdNotFound,
    #[error("The leader epoch in the request is newer than the broker's")]
    UnknownLeaderEpoch,
    #[error("The requested acks value is invalid: {0}")]
    InvalidRequiredAcks(i16),
    #[error("Unsupported resource: {0}")]
    UnsupportedResource(String),
    #[error("The session timeout is not within the range allowed by the broker (group.min.session.timeout.ms, group.max.session.timeout.ms)")]
    InvalidSessionTimeout,
    #[error("The group member's supported protocols are incompatible with those of existing members or first group member tried to join with empty protocol type or empty protocol list")]
    InconsistentGroupProtocol,
    #[error("The group member needs to have a valid member id before actually entering a consumer group")]
    MemberIdRequired,
    #[error("The coordinator is not aware of this member")]
    UnknownMemberId,
    #[error("The consumer group has reached its max size")]
    GroupMaxSizeReached,
    #[error("The broker rejected this static consumer since another consumer with the same group.instance.id has registered with a different member.id")]
    FencedInstanceId,
    #[error("The group is rebalancing, so a rejoin is needed")]
    RebalanceInProgress,
    #[error("Specified group generation id is not valid")]
    IllegalGeneration,
    #[error("The configured groupId is invalid")]
    InvalidGroupId,
    #[error("The group is not empty")]
    NonEmptyGroup,
    #[error("The group id does not exist")]
    GroupIdNotFound,
    #[error("{0}")]
    InvalidRecordState(String),
    #[error("The share session was not found")]
    ShareSessionNotFound,
    #[error("{0}")]
    InvalidShareSessionEpoch(String),
    #[error("The limit of share sessions has been reached")]
    ShareSessionLimitReached,
    #[error("The consumer group is actively subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("The coordinator is not available")]
    CoordinatorNotAvailable,
    #[error("{0}")]
    OffsetMetadataTooLarge(String),
    #[error("Leader election not needed for topic partition")]
    ElectionNotNeeded,
    #[error("{0}")]
    OutOfOrderSequence(String),
    #[error("{0}")]
    InvalidProducerEpoch(String),
    #[error("{0}")]
    InvalidTxnState(String),
    #[error("The producer attempted to use a producer id which is not currently assigned to its transactional id")]
    InvalidProducerIdMapping,
    #[error("The transaction timeout is larger than the maximum value allowed by the broker (as configured by transaction.max.timeout.ms)")]
    InvalidTransactionTimeout,
    #[error("The producer attempted to update a transaction while another concurrent operation on the same transaction was ongoing")]
    ConcurrentTransactions,
    #[error(
        "There is a newer producer with the same transactionalId which fences the current one"
    )]
    ProducerFenced,
    #[error("The transactionalId could not be found")]
    TransactionalIdNotFound,
    #[error("There are unstable offsets that need to be cleared")]
    UnstableOffsetCommit,
    #[error("The broker did not attempt to execute this operation")]
    OperationNotAttempted,
    #[error("For requests intended only for the leader, this error indicates that the broker is not the current leader")]
    NotLeaderOrFollower,
    #[error("There is no leader for this topic-partition as we are in the middle of a leadership election")]
    LeaderNotAvailable,
    #[error("Topic authorization failed")]
    TopicAuthorizationFailed,
    #[error("Group authorization failed")]
    GroupAuthorizationFailed,
    #[error("Cluster authorization failed")]
    ClusterAuthorizationFailed,
    #[error("Transactional Id authorization failed")]
    TransactionalIdAuthorizationFailed,
    #[error("No Authorizer is configured on the broker")]
    SecurityDisabled,
    #[error("storage error: {0}")]
    Storage(String),
    #[error("The broker is shutting down")]
    ShuttingDown,
    #[error("The leader epoch in the request is older than the epoch on the broker")]
    FencedLeaderEpoch,
    #[error("Messages are rejected since there are fewer in-sync replicas than required")]
    NotEnoughReplicas,
    #[error("Messages are written to the log, but to fewer in-sync replicas than required")]
    NotEnoughReplicasAfterAppend,
    #[error("The request timed out before the write was replicated to every in-sync replica")]
    RequestTimedOut,
    #[error("The preferred leader was not available: {0}")]
    PreferredLeaderNotAvailable(String),
    #[error("Eligible topic partition leaders are not available: {0}")]
    EligibleLeadersNotAvailable(String),
    #[error("No partition reassignment is in progress")]
    NoReassignmentInProgress,
    #[error("{0}")]
    LogDirNotFound(String),
    #[error("The replica is not available on this broker")]
    ReplicaNotAvailable,
    #[error("{0}")]
    UnsupportedVersion(String),
    #[error("{0}")]
    TransactionCoordinatorFenced(String),
    #[error("The member epoch is fenced by the group coordinator; the member must rejoin")]
    FencedMemberEpoch,
    #[error("The member epoch is stale; retry after the next heartbeat")]
    StaleMemberEpoch,
    #[error("{0}")]
    UnsupportedAssignor(String),
    #[error("{0}")]
    InvalidRegularExpression(String),
    /// An error another broker answered with (markers, verification).
    #[error("{1}")]
    Peer(i16, String),
    #[error("This is not the correct coordinator")]
    NotCoordinator,
    #[error("The coordinator is loading and hence can't process requests")]
    CoordinatorLoadInProgress,
}

impl BrokerError {
    pub fn response_error(&self) -> ResponseError {
        use BrokerError::*;
        match self {
            UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            UnknownTopicId => ResponseError::UnknownTopicId,
            InvalidTopic(_) => ResponseError::InvalidTopicException,
            TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            InvalidPartitions(_) => ResponseError::InvalidPartitions,
            InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            InvalidConfig(_) => ResponseError::InvalidConfig,
            InvalidRequest(_) | UnsupportedResource(_) => ResponseError::InvalidRequest,
            CorruptMessage(_) => ResponseError::CorruptMessage,
            MessageTooLarge(_) => ResponseError::MessageTooLarge,
            OffsetOutOfRange => ResponseError::OffsetOutOfRange,
            InvalidRecord(_) => ResponseError::InvalidRecord,
            RecordErrors {
                timestamp: true, ..
            } => ResponseError::InvalidTimestamp,
            RecordErrors { .. } => ResponseError::InvalidRecord,
            FetchSessionIdNotFound => ResponseError::FetchSessionIdNotFound,
            UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch,
            InvalidRequiredAcks(_) => ResponseError::InvalidRequiredAcks,
            InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
            InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
            MemberIdRequired => ResponseError::MemberIdRequired,
            UnknownMemberId => ResponseError::UnknownMemberId,
            GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
            FencedInstanceId => ResponseError::FencedInstanceId,
            RebalanceInProgress => ResponseError::RebalanceInProgress,
            IllegalGeneration => ResponseError::IllegalGeneration,
            InvalidGroupId => ResponseError::InvalidGroupId,
            NonEmptyGroup => ResponseError::NonEmptyGroup,
            GroupIdNotFound => ResponseError::GroupIdNotFound,
            InvalidRecordState(_) => ResponseError::InvalidRecordState,
            ShareSessionNotFound => ResponseError::ShareSessionNotFound,
            InvalidShareSessionEpoch(_) => ResponseError::InvalidShareSessionEpoch,
            ShareSessionLimitReached => ResponseError::ShareSessionLimitReached,
            GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
            CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
            OffsetMetadataTooLarge(_) => ResponseError::OffsetMetadataTooLarge,
            ElectionNotNeeded => ResponseError::ElectionNotNeeded,
            OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
            InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
            InvalidTxnState(_) => ResponseError::InvalidTxnState,
            InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
            InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout,
            ConcurrentTransactions => ResponseError::ConcurrentTransactions,
            ProducerFenced => ResponseError::ProducerFenced,
            TransactionalIdNotFound => ResponseError::TransactionalIdNotFound,
            UnstableOffsetCommit => ResponseError::UnstableOffsetCommit,
            OperationNotAttempted => ResponseError::OperationNotAttempted,
            NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
            LeaderNotAvailable => ResponseError::LeaderNotAvailable,
            TopicAuthorizationFailed => ResponseError::TopicAuthorizationFailed,
            GroupAuthorizationFailed => ResponseError::GroupAuthorizationFailed,
            ClusterAuthorizationFailed => ResponseError::ClusterAuthorizationFailed,
            TransactionalIdAuthorizationFailed => ResponseError::TransactionalIdAuthorizationFailed,
            SecurityDisabled => ResponseError::SecurityDisabled,
            Storage(_) => ResponseError::KafkaStorageError,
            ShuttingDown => ResponseError::BrokerNotAvailable,
            FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
            NotEnoughReplicas => ResponseError::NotEnoughReplicas,
            NotEnoughReplicasAfterAppend => ResponseError::NotEnoughReplicasAfterAppend,
            RequestTimedOut => ResponseError::RequestTimedOut,
            PreferredLeaderNotAvailable(_) => ResponseError::PreferredLeaderNotAvailable,
            EligibleLeadersNotAvailable(_) => ResponseError::EligibleLeadersNotAvailable,
            NoReassignmentInProgress => ResponseError::NoReassignmentInProgress,
            LogDirNotFound(_) => ResponseError::LogDirNotFound,
            ReplicaNotAvailable => ResponseError::ReplicaNotAvailable,
            NotCoordinator => ResponseError::NotCoordinator,
            CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
            UnsupportedVersion(_) => ResponseError::UnsupportedVersion,
            TransactionCoordinatorFenced(_) => ResponseError::TransactionCoordinatorFenced,
            FencedMemberEpoch => ResponseError::FencedMemberEpoch,
            StaleMemberEpoch => ResponseError::StaleMemberEpoch,
            UnsupportedAssignor(_) => ResponseError::UnsupportedAssignor,
            InvalidRegularExpression(_) => ResponseError::InvalidRegularExpression,
            Peer(code, _) => {
                use kafka_protocol::error::ParseResponseErrorCode;
                code.err().unwrap_or(ResponseError::UnknownServerError)
            }
        }
    }

    pub fn code(&self) -> i16 {
        self.response_error().code()
    }

    /// The message for the optional `error_message` fields.
    pub fn message(&self) -> Option<kafka_protocol::protocol::StrBytes> {
        Some(kafka_protocol::protocol::StrBytes::from_string(
            self.to_string(),
        ))
    }
}

pub type BrokerResult<T> = Result<T, BrokerError>;
