//! Request dispatch: parse the header, check the version against what we
//! advertise, decode the body with `kafka-protocol`, route to the API's
//! handler module, and encode the response frame.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::handlers;
use crate::network::frame::{ResponseFrame, SpliceBuf};
use crate::network::session::{AuthOutcome, Session};
use crate::quotas::limiter::{Client, QuotaType};
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::Subject;
use crate::security::Principal;

/// What the connection does with a request's result.
pub enum Outcome {
    /// A complete response frame, size prefix included.
    Respond(ResponseFrame),
    /// Nothing to send (Produce with acks=0).
    NoResponse,
    /// The request was invalid: close the connection.
    Close,
    /// Send this, then close (a failed SASL authentication).
    RespondThenClose(ResponseFrame),
}

/// A request's place in its connection's order.
///
/// Kafka handles a connection's requests one at a time. We run them
/// concurrently, but each request waits for its predecessor to release the
/// turn before acting, and holds it until its effects are ordered: Produce
/// until its batches are queued for the writer, Fetch not at all (a long poll
/// must not block what follows), everything else until it is done.
pub struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    next: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// A turn after `previous`'s, and the receiver the following request waits on.
    pub fn after(previous: Option<oneshot::Receiver<()>>) -> (Turn, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            Turn {
                previous,
                next: Some(tx),
            },
            rx,
        )
    }

    async fn wait(&mut self) {
        if let Some(rx) = self.previous.take() {
            // An error means the predecessor ended without releasing: same thing.
            let _ = rx.await;
        }
    }

    fn release(&mut self) {
        if let Some(tx) = self.next.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.release();
    }
}

/// Everything a handler knows about the request besides its body.
pub struct RequestContext {
    pub broker: Arc<Broker>,
    pub api_version: i16,
    pub client_id: Option<StrBytes>,
    pub peer: SocketAddr,
    /// The connection's listener and authenticated principal.
    pub session: Arc<Session>,
    /// Who sent the request, and from which address (for ACLs).
    pub principal: Principal,
    pub host: String,
    turn: Mutex<Turn>,
}

impl RequestContext {
    pub fn client(&self) -> &str {
        self.client_id.as_deref().unwrap_or("")
    }

    /// Host and port clients should use: those advertised by the listener
    /// this request came in on.
    pub fn advertised(&self) -> (&str, u16) {
        let l = &self.session.listener.config;
        (&l.advertised_host, l.advertised_port)
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            principal: &self.principal,
            host: &self.host,
        }
    }

    /// May this request's principal perform `op` on the resource? A refusal
    /// is logged (the audit trail) and counted.
    pub fn authorize(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        let ok = self
            .broker
            .authorizer
            .authorize(self.subject(), op, rt, name);
        if !ok {
            self.denied(op, rt, name);
        }
        ok
    }

    /// As `authorize`, without logging a refusal: for listings that silently
    /// leave out what the principal may not see.
    pub fn authorize_quiet(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        self.broker
            .authorizer
            .authorize(self.subject(), op, rt, name)
    }

    pub fn authorize_cluster(&self, op: Operation) -> bool {
        self.authorize(op, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// May the principal perform `op` on some resource of type `rt`?
    pub fn authorize_any(&self, op: Operation, rt: ResourceType) -> bool {
        let ok = self.broker.authorizer.authorize_any(self.subject(), op, rt);
        if !ok {
            self.denied(op, rt, "<any>");
        }
        ok
    }

    fn denied(&self, op: Operation, rt: ResourceType, name: &str) {
        tracing::info!(
            principal = %self.principal,
            host = %self.host,
            operation = %op,
            resource_type = %rt,
            resource = %name,
            "authorization denied"
        );
        self.broker
            .metrics
            .authorization_denied
            .with_label_values(&[op.label(), rt.label()])
            .inc();
    }

    /// The `authorized_operations` field: the bit set when the client asked
    /// for it, Kafka's "omitted" marker otherwise.
    pub fn authorized_operations(&self, requested: bool, rt: ResourceType, name: &str) -> i32 {
        if requested {
            self.broker
                .authorizer
                .authorized_operations(self.subject(), rt, name)
        } else {
            crate::handlers::AUTHORIZED_OPERATIONS_OMITTED
        }
    }

    /// Counts `bytes` against the client's quota of type `t`; answers the
    /// throttle time for the response's `throttle_time_ms` (0 within quota)
    /// and mutes the connection for that long, as Kafka does (KIP-219).
    pub fn throttle(&self, t: QuotaType, amount: f64) -> i32 {
        let b = &self.broker;
        let client = self.quota_client();
        let Some((delay, (user, client_id))) = b.limiter.record(&b.quotas, t, &client, amount)
        else {
            return 0;
        };
        let labels = [t.label(), user.as_str(), client_id.as_str()];
        b.metrics
            .quota_usage
            .with_label_values(&labels)
            .inc_by(amount.max(0.0) as u64);
        if delay.is_zero() {
            return 0;
        }
        self.session.mute_for(delay);
        let ms = i32::try_from(delay.as_millis()).unwrap_or(i32::MAX);
        if ms > 0 {
            b.metrics
                .quota_throttle_ms
                .with_label_values(&labels)
                .inc_by(ms as u64);
            tracing::debug!(peer = %self.peer, user = %user, client_id = %client_id, quota = t.label(), throttle_ms = ms, "client throttled");
        }
        ms
    }

    fn quota_client(&self) -> Client<'_> {
        Client {
            user: &self.principal.name,
            client_id: self.client(),
        }
    }

    /// Takes back what `throttle` counted (for an answer not sent).
    pub fn unrecord(&self, t: QuotaType, bytes: usize) {
        let b = &self.broker;
        b.limiter
            .unrecord(&b.quotas, t, &self.quota_client(), bytes as f64);
    }

    /// The most the client's quota lets one response carry, if it has one.
    pub fn quota_cap(&self, t: QuotaType) -> Option<usize> {
        let b = &self.broker;
        b.limiter.max_in_window(&b.quotas, t, &self.quota_client())
    }

    /// Live brokers as clients of this request's listener reach them:
    /// (node id, host, port, rack). A broker without that listener is left
    /// out, as Kafka does.
    pub fn broker_endpoints(&self) -> Vec<(i32, String, u16, Option<String>)> {
        let listener = &self.session.listener.config.name;
        self.broker
            .cluster
            .live_brokers()
            .into_iter()
            .filter_map(|b| {
                let e = b.endpoint(listener)?;
                Some((b.node_id, e.host.clone(), e.port, b.rack.clone()))
            })
            .collect()
    }

    /// The controller's node id, -1 while none is elected.
    pub fn controller_id(&self) -> i32 {
        self.broker.cluster.controller().map_or(-1, |c| c.node_id)
    }

    /// Lets the connection's next request proceed.
    pub fn release_turn(&self) {
        if let Ok(mut t) = self.turn.lock() {
            t.release();
        }
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

pub async fn handle(
    broker: &Arc<Broker>,
    mut frame: Bytes,
    session: Arc<Session>,
    mut turn: Turn,
) -> Outcome {
    let peer = session.peer;
    turn.wait().await;
    if session.expects_raw_token() {
        return raw_sasl_token(broker, &session, &frame);
    }
    // Requests pipelined behind a throttled one wait out the throttle, as
    // they would behind Kafka's muted channel.
    if let Some(until) = session.muted_until() {
        tokio::time::sleep_until(until).await;
    }
    // The connection guarantees at least 8 bytes.
    let raw_key = be_i16(&frame, 0);
    let version = be_i16(&frame, 2);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api) = ApiKey::try_from(raw_key) else {
        tracing::warn!(%peer, api_key = raw_key, "closing connection: unknown API key");
        return Outcome::Close;
    };
    let Some(range) = handlers::supported_versions(api) else {
        tracing::warn!(%peer, ?api, version, "closing connection: API not supported");
        return Outcome::Close;
    };
    if version < range.0 || version > range.1 {
        if api == ApiKey::ApiVersions {
            tracing::info!(%peer, version, "ApiVersions with an unsupported version: answering in v0");
            return Outcome::Respond(
                handlers::api_versions::unsupported_version(correlation_id).into(),
            );
        }
        tracing::warn!(%peer, ?api, version, "closing connection: unsupported API version");
        return Outcome::Close;
    }
    // Kafka serves nothing but ApiVersions and the SASL exchange before a
    // SASL listener's client has authenticated.
    if !matches!(
        api,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    ) && !session.is_authenticated()
    {
        tracing::warn!(%peer, ?api, "closing connection: request before SASL authentication");
        broker
            .metrics
            .connections_closed
            .with_label_values(&["unauthenticated_request"])
            .inc();
        return Outcome::Close;
    }
    // KIP-368: once a session's lifetime is over, only re-authentication
    // may follow; anything else closes the connection (the client reconnects).
    if !matches!(
        api,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    ) && session.expired()
    {
        tracing::info!(%peer, ?api, principal = ?session.principal().map(|p| p.to_string()), "closing connection: SASL session expired without re-authentication");
        broker
            .metrics
            .connections_closed
            .with_label_values(&["session_expired"])
            .inc();
        return Outcome::Close;
    }
    let header = match RequestHeader::decode(&mut frame, api.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(%peer, ?api, version, error = %e, "closing connection: malformed request header");
            return Outcome::Close;
        }
    };
    let ctx = RequestContext {
        broker: broker.clone(),
        api_version: version,
        client_id: header.client_id,
        peer,
        principal: session.principal().unwrap_or_else(Principal::anonymous),
        // Only ACLs look at the host: no allocation per request without them.
        host: if broker.authorizer.enabled() {
            peer.ip().to_canonical().to_string()
        } else {
            String::new()
        },
        session,
        turn: Mutex::new(turn),
    };
    // Requests that may wait long (long poll, rebalance) must not hold up the
    // rest of the connection.
    if matches!(api, ApiKey::Fetch | ApiKey::JoinGroup | ApiKey::SyncGroup) {
        ctx.release_turn();
    }
    let api_name = format!("{api:?}");
    let started = Instant::now();
    let request_len = frame.len() as u64 + 4;
    let outcome = route(&ctx, api, correlation_id, frame).await;
    // request_percentage: handling time counts against the client's quota,
    // except for the APIs that wait by design (long polls, rebalances) and
    // those Kafka exempts.
    if !matches!(
        api,
        ApiKey::ApiVersions
            | ApiKey::SaslHandshake
            | ApiKey::SaslAuthenticate
            | ApiKey::Fetch
            | ApiKey::JoinGroup
            | ApiKey::SyncGroup
    ) {
        ctx.throttle(QuotaType::Request, started.elapsed().as_secs_f64() * 1e6);
    }
    if matches!(outcome, Outcome::Close | Outcome::RespondThenClose(_)) {
        m_close(broker, &api_name);
    }
    let m = &broker.metrics;
    m.requests.with_label_values(&[&api_name]).inc();
    m.request_bytes
        .with_label_values(&[&api_name])
        .inc_by(request_len);
    if let Outcome::Respond(b) | Outcome::RespondThenClose(b) = &outcome {
        m.response_bytes
            .with_label_values(&[&api_name])
            .inc_by(b.len() as u64);
    }
    m.request_seconds
        .with_label_values(&[&api_name])
        .observe(started.elapsed().as_secs_f64());
    outcome
}

/// A SASL token sent as a raw frame after SaslHandshake v0: the answer is a
/// raw frame too; a failed login closes the connection (v0 has no error
/// response).
fn raw_sasl_token(broker: &Arc<Broker>, session: &Session, token: &[u8]) -> Outcome {
    match session.authenticate(token, &broker.credentials) {
        Ok(AuthOutcome::Continue(reply)) | Ok(AuthOutcome::Done { reply, .. }) => {
            if let Some(p) = session.principal() {
                tracing::info!(peer = %session.peer, principal = %p, listener = %session.listener.config.name, "SASL authentication succeeded (SaslHandshake v0)");
            }
            let mut out = BytesMut::with_capacity(4 + reply.len());
            out.put_u32(reply.len() as u32);
            out.extend_from_slice(&reply);
            Outcome::Respond(out.freeze().into())
        }
        Err(e) => {
            tracing::warn!(
                peer = %session.peer,
                user = e.user.as_deref().unwrap_or("?"),
                listener = %session.listener.config.name,
                error = %e.message,
                "SASL authentication failed (SaslHandshake v0); closing connection"
            );
            broker
                .metrics
                .connections_closed
                .with_label_values(&["sasl_authentication_failed"])
                .inc();
            Outcome::Close
        }
    }
}

/// Responses whose records go out from the log's buffers (see `network::frame`).
trait CarriesRecords {
    fn records(&self) -> Vec<Bytes>;
}

/// The generated Fetch and ShareFetch responses have the same shape
/// (topics → partitions → records) but no common type.
macro_rules! carries_records {
    ($($resp:ty),*) => {$(
        impl CarriesRecords for $resp {
            fn records(&self) -> Vec<Bytes> {
                let parts = self.responses.iter().flat_map(|t| t.partitions.iter());
                parts.filter_map(|p| p.records.clone()).collect()
            }
        }
    )*};
}
carries_records!(FetchResponse, ShareFetchResponse);

/// `call!` for a response that carries records.
macro_rules! call_records {
    ($ctx:expr, $cid:expr, $body:expr, $req:ty, $handler:path) => {{
        match <$req>::decode(&mut $body, $ctx.api_version) {
            Ok(req) => {
                let resp = $handler($ctx, req).await;
                encode_with($ctx, $cid, &resp, resp.records())
            }
            Err(e) => malformed($ctx, stringify!($req), e),
        }
    }};
}

/// Decodes, runs the handler, encodes; a body that does not decode closes the connection.
macro_rules! call {
    ($ctx:expr, $cid:expr, $body:expr, $req:ty, $handler:path) => {{
        match <$req>::decode(&mut $body, $ctx.api_version) {
            Ok(req) => {
                let resp = $handler($ctx, req).await;
                encode($ctx, $cid, &resp)
            }
            Err(e) => malformed($ctx, stringify!($req), e),
        }
    }};
}

async fn route(ctx: &RequestContext, api: ApiKey, cid: i32, mut body: Bytes) -> Outcome {
    use handlers::*;
    match api {
        ApiKey::ApiVersions => call!(ctx, cid, body, ApiVersionsRequest, api_versions::handle),
        ApiKey::Metadata => call!(ctx, cid, body, MetadataRequest, metadata::handle),
        ApiKey::Produce => match ProduceRequest::decode(&mut body, ctx.api_version) {
            Ok(req) => match produce::handle(ctx, req).await {
                Some(resp) => encode(ctx, cid, &resp),
                None => Outcome::NoResponse,
            },
            Err(e) => malformed(ctx, "ProduceRequest", e),
        },
        ApiKey::Fetch => call_records!(ctx, cid, body, FetchRequest, fetch::handle),
        ApiKey::SaslHandshake => call!(ctx, cid, body, SaslHandshakeRequest, sasl::handshake),
        ApiKey::SaslAuthenticate => {
            match SaslAuthenticateRequest::decode(&mut body, ctx.api_version) {
                Ok(req) => {
                    let (resp, failed) = sasl::authenticate(ctx, req).await;
                    match (encode(ctx, cid, &resp), failed) {
                        (Outcome::Respond(b), true) => Outcome::RespondThenClose(b),
                        (o, _) => o,
                    }
                }
                Err(e) => malformed(ctx, "SaslAuthenticateRequest", e),
            }
        }
        ApiKey::DescribeUserScramCredentials => call!(
            ctx,
            cid,
            body,
            DescribeUserScramCredentialsRequest,
            user_scram_credentials::describe
        ),
        ApiKey::AlterUserScramCredentials => call!(
            ctx,
            cid,
            body,
            AlterUserScramCredentialsRequest,
            user_scram_credentials::alter
        ),
        ApiKey::CreateAcls => call!(ctx, cid, body, CreateAclsRequest, acls::create),
        ApiKey::DescribeAcls => call!(ctx, cid, body, DescribeAclsRequest, acls::describe),
        ApiKey::DeleteAcls => call!(ctx, cid, body, DeleteAclsRequest, acls::delete),
        ApiKey::ListOffsets => call!(ctx, cid, body, ListOffsetsRequest, list_offsets::handle),
        ApiKey::OffsetForLeaderEpoch => call!(
            ctx,
            cid,
            body,
            OffsetForLeaderEpochRequest,
            offset_for_leader_epoch::handle
        ),
        ApiKey::CreateTopics => call!(ctx, cid, body, CreateTopicsRequest, create_topics::handle),
        ApiKey::DeleteTopics => call!(ctx, cid, body, DeleteTopicsRequest, delete_topics::handle),
        ApiKey::CreatePartitions => call!(
            ctx,
            cid,
            body,
            CreatePartitionsRequest,
            create_partitions::handle
        ),
        ApiKey::DescribeConfigs => call!(
            ctx,
            cid,
            body,
            DescribeConfigsRequest,
            describe_configs::handle
        ),
        ApiKey::DescribeCluster => call!(
            ctx,
            cid,
            body,
            DescribeClusterRequest,
            describe_cluster::handle
        ),
        ApiKey::FindCoordinator => call!(
            ctx,
            cid,
            body,
            FindCoordinatorRequest,
            find_coordinator::handle
        ),
        ApiKey::JoinGroup => call!(ctx, cid, body, JoinGroupRequest, join_group::handle),
        ApiKey::SyncGroup => call!(ctx, cid, body, SyncGroupRequest, sync_group::handle),
        ApiKey::Heartbeat => call!(ctx, cid, body, HeartbeatRequest, heartbeat::handle),
        ApiKey::LeaveGroup => call!(ctx, cid, body, LeaveGroupRequest, leave_group::handle),
        ApiKey::OffsetCommit => call!(ctx, cid, body, OffsetCommitRequest, offset_commit::handle),
        ApiKey::OffsetFetch => call!(ctx, cid, body, OffsetFetchRequest, offset_fetch::handle),
        ApiKey::DescribeGroups => call!(
            ctx,
            cid,
            body,
            DescribeGroupsRequest,
            describe_groups::handle
        ),
        ApiKey::ListGroups => call!(ctx, cid, body, ListGroupsRequest, list_groups::handle),
        ApiKey::DeleteGroups => call!(ctx, cid, body, DeleteGroupsRequest, delete_groups::handle),
        ApiKey::OffsetDelete => call!(ctx, cid, body, OffsetDeleteRequest, offset_delete::handle),
        ApiKey::AlterConfigs => call!(ctx, cid, body, AlterConfigsRequest, alter_configs::handle),
        ApiKey::IncrementalAlterConfigs => call!(
            ctx,
            cid,
            body,
            IncrementalAlterConfigsRequest,
            alter_configs::handle_incremental
        ),
        ApiKey::DescribeLogDirs => call!(
            ctx,
            cid,
            body,
            DescribeLogDirsRequest,
            describe_log_dirs::handle
        ),
        ApiKey::DescribeTopicPartitions => call!(
            ctx,
            cid,
            body,
            DescribeTopicPartitionsRequest,
            describe_topic_partitions::handle
        ),
        ApiKey::ListPartitionReassignments => call!(
            ctx,
            cid,
            body,
            ListPartitionReassignmentsRequest,
            partition_admin::list_reassignments
        ),
        ApiKey::AlterPartitionReassignments => call!(
            ctx,
            cid,
            body,
            AlterPartitionReassignmentsRequest,
            partition_admin::alter_reassignments
        ),
        ApiKey::AlterReplicaLogDirs => call!(
            ctx,
            cid,
            body,
            AlterReplicaLogDirsRequest,
            partition_admin::alter_replica_log_dirs
        ),
        ApiKey::ElectLeaders => call!(
            ctx,
            cid,
            body,
            ElectLeadersRequest,
            partition_admin::elect_leaders
        ),
        ApiKey::DescribeClientQuotas => call!(
            ctx,
            cid,
            body,
            DescribeClientQuotasRequest,
            client_quotas::describe
        ),
        ApiKey::AlterClientQuotas => call!(
            ctx,
            cid,
            body,
            AlterClientQuotasRequest,
            client_quotas::alter
        ),
        ApiKey::DeleteRecords => {
            call!(ctx, cid, body, DeleteRecordsRequest, delete_records::handle)
        }
        ApiKey::InitProducerId => call!(
            ctx,
            cid,
            body,
            InitProducerIdRequest,
            init_producer_id::handle
        ),
        ApiKey::AddPartitionsToTxn => call!(
            ctx,
            cid,
            body,
            AddPartitionsToTxnRequest,
            add_partitions_to_txn::handle
        ),
        ApiKey::AddOffsetsToTxn => call!(
            ctx,
            cid,
            body,
            AddOffsetsToTxnRequest,
            add_offsets_to_txn::handle
        ),
        ApiKey::EndTxn => call!(ctx, cid, body, EndTxnRequest, end_txn::handle),
        ApiKey::TxnOffsetCommit => call!(
            ctx,
            cid,
            body,
            TxnOffsetCommitRequest,
            txn_offset_commit::handle
        ),
        ApiKey::DescribeProducers => call!(
            ctx,
            cid,
            body,
            DescribeProducersRequest,
            describe_producers::handle
        ),
        ApiKey::DescribeTransactions => call!(
            ctx,
            cid,
            body,
            DescribeTransactionsRequest,
            describe_transactions::handle
        ),
        ApiKey::ConsumerGroupHeartbeat => call!(
            ctx,
            cid,
            body,
            ConsumerGroupHeartbeatRequest,
            consumer_group_heartbeat::handle
        ),
        ApiKey::ConsumerGroupDescribe => call!(
            ctx,
            cid,
            body,
            ConsumerGroupDescribeRequest,
            consumer_group_describe::handle
        ),
        ApiKey::ShareGroupHeartbeat => call!(
            ctx,
            cid,
            body,
            ShareGroupHeartbeatRequest,
            share_group_heartbeat::handle
        ),
        ApiKey::ShareGroupDescribe => call!(
            ctx,
            cid,
            body,
            ShareGroupDescribeRequest,
            share_group_describe::handle
        ),
        ApiKey::ShareFetch => {
            call_records!(ctx, cid, body, ShareFetchRequest, share_fetch::handle)
        }
        ApiKey::ShareAcknowledge => call!(
            ctx,
            cid,
            body,
            ShareAcknowledgeRequest,
            share_acknowledge::handle
        ),
        ApiKey::DescribeShareGroupOffsets => call!(
            ctx,
            cid,
            body,
            DescribeShareGroupOffsetsRequest,
            share_group_offsets::describe
        ),
        ApiKey::AlterShareGroupOffsets => call!(
            ctx,
            cid,
            body,
            AlterShareGroupOffsetsRequest,
            share_group_offsets::alter
        ),
        ApiKey::DeleteShareGroupOffsets => call!(
            ctx,
            cid,
            body,
            DeleteShareGroupOffsetsRequest,
            share_group_offsets::delete
        ),
        ApiKey::ReadShareGroupState => call!(
            ctx,
            cid,
            body,
            ReadShareGroupStateRequest,
            share_group_state::read
        ),
        ApiKey::WriteShareGroupState => call!(
            ctx,
            cid,
            body,
            WriteShareGroupStateRequest,
            share_group_state::write
        ),
        ApiKey::DeleteShareGroupState => call!(
            ctx,
            cid,
            body,
            DeleteShareGroupStateRequest,
            share_group_state::delete
        ),
        ApiKey::ListConfigResources => call!(
            ctx,
            cid,
            body,
            ListConfigResourcesRequest,
            list_config_resources::handle
        ),
        ApiKey::WriteTxnMarkers => call!(
            ctx,
            cid,
            body,
            WriteTxnMarkersRequest,
            write_txn_markers::handle
        ),
        ApiKey::ListTransactions => call!(
            ctx,
            cid,
            body,
            ListTransactionsRequest,
            list_transactions::handle
        ),
        other => {
            tracing::warn!(peer = %ctx.peer, api = ?other, "closing connection: API has no handler");
            Outcome::Close
        }
    }
}

fn m_close(broker: &Broker, api: &str) {
    broker.metrics.error(api, -1);
}

fn malformed(ctx: &RequestContext, what: &str, e: impl std::fmt::Display) -> Outcome {
    tracing::warn!(
        peer = %ctx.peer,
        client_id = ctx.client(),
        request = what,
        version = ctx.api_version,
        error = %e,
        "closing connection: malformed request body"
    );
    Outcome::Close
}

/// Builds the response frame: size, header (version per the API), body.
pub fn encode<R: Encodable + HeaderVersion>(
    ctx: &RequestContext,
    correlation_id: i32,
    resp: &R,
) -> Outcome {
    encode_with(ctx, correlation_id, resp, Vec::new())
}

/// `encode`, sending `payloads` (records the response carries) from their
/// own buffers rather than copying them into the frame.
pub fn encode_with<R: Encodable + HeaderVersion>(
    ctx: &RequestContext,
    correlation_id: i32,
    resp: &R,
    payloads: Vec<Bytes>,
) -> Outcome {
    match encode_frame(correlation_id, ctx.api_version, resp, payloads) {
        Ok(b) => Outcome::Respond(b),
        Err(e) => {
            tracing::error!(
                peer = %ctx.peer,
                response = std::any::type_name::<R>(),
                version = ctx.api_version,
                error = %e,
                "cannot encode response; closing connection"
            );
            Outcome::Close
        }
    }
}

fn encode_frame<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    resp: &R,
    payloads: Vec<Bytes>,
) -> Result<ResponseFrame, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = R::header_version(version);
    // Sized up front: the size prefix comes first, and the buffer is
    // allocated once.
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + resp.compute_size(version)?))
        .map_err(|e| e.to_string())?;
    let prefix = i32::try_from(size).map_err(|_| "response too large".to_string())?;
    let mut buf = SpliceBuf::new(4 + size, payloads);
    buf.put_i32(prefix);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| e.to_string())?;
    resp.encode(&mut buf, version).map_err(|e| e.to_string())?;
    if buf.offset() != size + 4 {
        return Err(format!(
            "encoded {} bytes where {size} were computed",
            buf.offset() - 4
        ));
    }
    Ok(buf.finish())
}
