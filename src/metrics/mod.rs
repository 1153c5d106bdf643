//! Prometheus metrics. Names follow what Kafka dashboards (JMX exporter) and
//! kafka_exporter already use; no label carries a client or connection id.
//!
//! - this module: counters and histograms updated as requests run;
//! - `scrape`: gauges computed at scrape time (partitions, groups, RocksDB, disk);
//! - `http`: the `/metrics` and `/healthz` listener.

pub mod http;
pub mod scrape;

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

pub struct Metrics {
    /// Everything below, for the metrics listener to render.
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub bytes_in: IntCounterVec,
    pub bytes_out: IntCounterVec,
    pub messages_in: IntCounterVec,
    pub connections: IntGauge,
    /// Connections closed at accept for a limit, by reason.
    pub connections_rejected: IntCounterVec,
    /// Connections closed for a malformed or oversized frame, or idleness.
    pub connections_closed: IntCounterVec,
    pub request_bytes: IntCounterVec,
    pub response_bytes: IntCounterVec,
    pub produce_requests: IntCounterVec,
    pub failed_produce_requests: IntCounterVec,
    pub fetch_requests: IntCounterVec,
    pub failed_fetch_requests: IntCounterVec,
    pub cleaner_passes: IntCounterVec,
    pub cleaner_bytes_removed: IntCounterVec,
    pub cleaner_last_pass_seconds: GaugeVec,
    /// Requests (or parts of them) refused by the authorizer.
    pub authorization_denied: IntCounterVec,
    /// Throttle time handed out by quota, per entity.
    pub quota_throttle_ms: IntCounterVec,
    /// Bytes (or request time) counted against quotas, per entity.
    pub quota_usage: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("kafka_network_requests_total", "Requests handled, by API"),
            &["api"],
        )?;
        let request_errors = IntCounterVec::new(
            Opts::new(
                "kafka_network_request_errors_total",
                "Error codes returned, by API and error",
            ),
            &["api", "error"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "kafka_network_request_duration_seconds",
                "Request handling time, by API",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["api"],
        )?;
        let bytes_in = IntCounterVec::new(
            Opts::new(
                "kafka_server_brokertopicmetrics_bytesin_total",
                "Bytes produced, by topic",
            ),
            &["topic"],
        )?;
        let bytes_out = IntCounterVec::new(
            Opts::new(
                "kafka_server_brokertopicmetrics_bytesout_total",
                "Bytes fetched, by topic",
            ),
            &["topic"],
        )?;
        let messages_in = IntCounterVec::new(
            Opts::new(
                "kafka_server_brokertopicmetrics_messagesin_total",
                "Records produced, by topic",
            ),
            &["topic"],
        )?;
        let connections_rejected = IntCounterVec::new(
            Opts::new(
                "runnel_connections_rejected_total",
                "Client connections refused at accept, by limit (max.connections, max.connections.per.ip)",
            ),
            &["reason"],
        )?;
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "runnel_connections_closed_total",
                "Client connections the broker closed, by reason (malformed frame, oversized frame, idle)",
            ),
            &["reason"],
        )?;
        let connections = IntGauge::new(
            "kafka_server_socket_server_connections",
            "Open client connections",
        )?;
        let request_bytes = IntCounterVec::new(
            Opts::new(
                "kafka_network_request_bytes_total",
                "Request bytes received, by API",
            ),
            &["api"],
        )?;
        let response_bytes = IntCounterVec::new(
            Opts::new(
                "kafka_network_response_bytes_total",
                "Response bytes sent, by API",
            ),
            &["api"],
        )?;
        let per_topic =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["topic"]);
        let produce_requests = per_topic(
            "kafka_server_brokertopicmetrics_totalproducerequests_total",
            "Produce requests, by topic",
        )?;
        let failed_produce_requests = per_topic(
            "kafka_server_brokertopicmetrics_failedproducerequests_total",
            "Failed produce requests, by topic",
        )?;
        let fetch_requests = per_topic(
            "kafka_server_brokertopicmetrics_totalfetchrequests_total",
            "Fetch requests, by topic",
        )?;
        let failed_fetch_requests = per_topic(
            "kafka_server_brokertopicmetrics_failedfetchrequests_total",
            "Failed fetch requests, by topic",
        )?;
        let cleaner_passes = per_topic(
            "runnel_log_cleaner_passes_total",
            "Compaction passes over a partition, by topic",
        )?;
        let cleaner_bytes_removed = per_topic(
            "runnel_log_cleaner_bytes_removed_total",
            "Bytes compaction removed from the log, by topic",
        )?;
        let cleaner_last_pass_seconds = GaugeVec::new(
            Opts::new(
                "runnel_log_cleaner_last_pass_seconds",
                "Duration of the last compaction pass, by partition",
            ),
            &["topic", "partition"],
        )?;
        registry.register(Box::new(cleaner_last_pass_seconds.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_errors.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(bytes_in.clone()))?;
        registry.register(Box::new(bytes_out.clone()))?;
        registry.register(Box::new(messages_in.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(connections_rejected.clone()))?;
        registry.register(Box::new(connections_closed.clone()))?;
        let authorization_denied = IntCounterVec::new(
            Opts::new(
                "runnel_authorization_denied_total",
                "Operations the authorizer refused, by operation and resource type",
            ),
            &["operation", "resource_type"],
        )?;
        let quota_throttle_ms = IntCounterVec::new(
            Opts::new(
                "kafka_server_quota_throttle_time_ms_total",
                "Throttle time given to clients over a quota, by quota type (Produce, Fetch, Request) and entity",
            ),
            &["quota", "user", "client_id"],
        )?;
        let quota_usage = IntCounterVec::new(
            Opts::new(
                "kafka_server_quota_usage_total",
                "What was counted against quotas (bytes for Produce and Fetch, microseconds of handling for Request), by quota type and entity",
            ),
            &["quota", "user", "client_id"],
        )?;
        for c in [&authorization_denied, &quota_throttle_ms, &quota_usage] {
            registry.register(Box::new(c.clone()))?;
        }
        for c in [
            &request_bytes,
            &response_bytes,
            &produce_requests,
            &failed_produce_requests,
            &fetch_requests,
            &failed_fetch_requests,
            &cleaner_passes,
            &cleaner_bytes_removed,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            requests,
            request_errors,
            request_seconds,
            bytes_in,
            bytes_out,
            messages_in,
            connections,
            connections_rejected,
            connections_closed,
            authorization_denied,
            quota_throttle_ms,
            quota_usage,
            request_bytes,
            response_bytes,
            produce_requests,
            failed_produce_requests,
            fetch_requests,
            failed_fetch_requests,
            cleaner_passes,
            cleaner_bytes_removed,
            cleaner_last_pass_seconds,
        })
    }

    /// Records one partition's compaction pass.
    pub fn cleaner_pass(&self, r: &crate::storage::compaction::PassReport) {
        let topic = r.topic.as_str();
        self.cleaner_passes.with_label_values(&[topic]).inc();
        self.cleaner_bytes_removed
            .with_label_values(&[topic])
            .inc_by(r.stats.bytes_before.saturating_sub(r.stats.bytes_after));
        self.cleaner_last_pass_seconds
            .with_label_values(&[topic, &r.partition.to_string()])
            .set(r.took.as_secs_f64());
    }

    /// Drops a deleted topic's series, as Kafka does, so topic churn does not
    /// grow the metrics page.
    pub fn remove_topic(&self, topic: &str, partitions: usize) {
        for v in [
            &self.bytes_in,
            &self.bytes_out,
            &self.messages_in,
            &self.produce_requests,
            &self.failed_produce_requests,
            &self.fetch_requests,
            &self.failed_fetch_requests,
            &self.cleaner_passes,
            &self.cleaner_bytes_removed,
        ] {
            let _ = v.remove_label_values(&[topic]);
        }
        for p in 0..partitions {
            let _ = self
                .cleaner_last_pass_seconds
                .remove_label_values(&[topic, &p.to_string()]);
        }
    }

    /// Counts a non-zero error code returned by an API.
    pub fn error(&self, api: &str, code: i16) {
        if code != 0 {
            self.request_errors
                .with_label_values(&[api, &code.to_string()])
                .inc();
        }
    }
}
