//! runnel-bench: the load generator behind `make bench`.
//!
//! Every client scenario goes through librdkafka (the `rdkafka` crate), as users' clients do.
//! Each subcommand prints one machine-readable line starting with `RESULT` (key=value pairs);
//! `report` turns the collected lines into the table that `make bench` prints.
//!
//! Subcommands (all take `--brokers HOST:PORT`, default 127.0.0.1:9092):
//!   create-topics --topics A,B | --prefix P --count N   [--partitions P]
//!   produce  --topic T --messages N --size S --acks 1|all --compression none|lz4|...
//!            [--linger-ms 5] [--partition P] [--batch-messages N] [--timeout-secs 120]
//!   consume  --topic T --messages N [--timeout-secs 120]
//!   latency  --topic T --rate 10000 --seconds 10 [--size 100] [--acks 1] [--linger-ms 1]
//!   group    --topic T --messages N [--members 4] [--timeout-secs 45] [--group ID]
//!            (a subscribe() group drains the topic, then one more member joins: rebalance time)
//!   txn      --topic T [--transactions 2000] [--per-txn 100] [--size 1024] [--seconds 30]
//!            [--linger-ms 5] [--timeout-secs 30]  (transactional producer: begin, N sends, commit)
//!   compaction [--topic compaction] [--fill-bytes 1073741824] [--value-size 1024] [--keys 10000]
//!            [--rate-mbps 20] [--metrics-url http://127.0.0.1:9404/metrics] [--timeout-s 180]
//!            [--broker-pid PID --clk-tck 100]  (Runnel only: fill one partition with keyed
//!            records, then switch it to cleanup.policy=compact while a producer writes at a fixed
//!            rate; times the first cleaner pass from /metrics and the producer's ack latency)
//!   Any client subcommand also takes --set k=v,k=v (further librdkafka properties, applied last).
//!   idle-conns --count 500 --seconds S      (raw TCP, one ApiVersions each, then held idle)
//!   ping     [--timeout-secs 30]            (waits until the broker answers ApiVersions)
//!   free-port                               (prints a free TCP port on 127.0.0.1)
//!   version                                 (prints the librdkafka version)
//!   report   --results FILE                 (prints the table)

mod report;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

type Args = HashMap<String, String>;

fn parse_args(raw: &[String]) -> Args {
    let mut args = Args::new();
    let mut i = 0;
    while i < raw.len() {
        let key = raw[i].trim_start_matches("--").to_string();
        if !raw[i].starts_with("--") {
            die(&format!("unexpected argument {:?}", raw[i]));
        }
        let value = raw.get(i + 1).cloned().unwrap_or_default();
        if value.starts_with("--") || i + 1 >= raw.len() {
            args.insert(key, "true".into());
            i += 1;
        } else {
            args.insert(key, value);
            i += 2;
        }
    }
    args
}

fn die(msg: &str) -> ! {
    eprintln!("runnel-bench: {msg}");
    std::process::exit(2)
}

fn arg<'a>(args: &'a Args, key: &str, default: &'a str) -> &'a str {
    args.get(key).map(|s| s.as_str()).unwrap_or(default)
}

fn arg_num<T: std::str::FromStr>(args: &Args, key: &str, default: T) -> T {
    match args.get(key) {
        None => default,
        Some(v) => v
            .parse()
            .unwrap_or_else(|_| die(&format!("--{key}: not a number: {v}"))),
    }
}

fn required<'a>(args: &'a Args, key: &str) -> &'a str {
    args.get(key)
        .map(|s| s.as_str())
        .unwrap_or_else(|| die(&format!("--{key} is required")))
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = raw.first().cloned() else {
        eprintln!("usage: runnel-bench <create-topics|produce|consume|latency|group|txn|compaction|idle-conns|ping|report> [--key value ...]");
        std::process::exit(2);
    };
    let args = parse_args(&raw[1..]);
    let code = match cmd.as_str() {
        "create-topics" => create_topics(&args),
        "produce" => produce(&args),
        "consume" => consume(&args),
        "latency" => latency(&args),
        "group" => group(&args),
        "txn" => txn(&args),
        "compaction" => compaction(&args),
        "idle-conns" => idle_conns(&args),
        "ping" => ping(&args),
        "free-port" => {
            // Bind port 0 on loopback, print what the kernel chose, release it.
            let l = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|e| die(&format!("bind: {e}")));
            println!("{}", l.local_addr().unwrap().port());
            0
        }
        "report" => report::report(&args),
        "version" => {
            let (_, v) = rdkafka::util::get_rdkafka_version();
            println!("librdkafka {v}");
            0
        }
        other => die(&format!("unknown subcommand {other}")),
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------------
// Client context: counts librdkafka errors, shows the first few, and keeps the byte counters
// of the latest statistics event (bytes actually sent/received on the wire).

const MAX_SHOWN_ERRORS: u64 = 10;

struct BenchContext {
    start: Instant,
    client_errors: AtomicU64,
    tx_bytes: AtomicU64,
    rx_bytes: AtomicU64,
    stats_seen: AtomicU64,
    delivery: Mutex<DeliveryStats>,
    /// Also keep each delivered message's send time (`DeliveryStats::sent_ns`), for scenarios
    /// that split the latencies into time windows.
    keep_send_times: bool,
}

#[derive(Default)]
struct DeliveryStats {
    delivered: u64,
    failed: u64,
    first_failure: Option<String>,
    last_ack_ns: u64,
    latencies_us: Vec<u32>,
    /// Send time (ns since the context's start) of each entry of `latencies_us`, when the
    /// context keeps them.
    sent_ns: Vec<u64>,
}

impl BenchContext {
    fn new(start: Instant) -> Self {
        BenchContext {
            start,
            client_errors: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            stats_seen: AtomicU64::new(0),
            delivery: Mutex::new(DeliveryStats::default()),
            keep_send_times: false,
        }
    }

    fn keeping_send_times(mut self) -> Self {
        self.keep_send_times = true;
        self
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn note_error(&self, what: &str) {
        let n = self.client_errors.fetch_add(1, Ordering::Relaxed);
        if n < MAX_SHOWN_ERRORS {
            eprintln!("runnel-bench: client: {what}");
        } else if n == MAX_SHOWN_ERRORS {
            eprintln!("runnel-bench: client: (further client errors not shown)");
        }
    }

    /// Waits (serving events with `poll`) for one more statistics event so the byte counters
    /// cover everything sent so far. Bounded by 2.5 s.
    fn wait_fresh_stats(&self, mut poll: impl FnMut()) {
        let seen = self.stats_seen.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_millis(2500);
        while self.stats_seen.load(Ordering::Relaxed) < seen + 2 && Instant::now() < deadline {
            poll();
        }
    }
}

impl ClientContext for BenchContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        if std::env::var_os("RUNNEL_BENCH_LOG_ALL").is_some() {
            eprintln!(
                "{:.3} rdkafka {fac}: {msg}",
                self.start.elapsed().as_secs_f64()
            );
        } else if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.note_error(&format!("log {fac}: {msg}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note_error(&format!("error {error}: {reason}"));
    }

    fn stats_raw(&self, json: &[u8]) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) {
            let get = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
            self.tx_bytes.store(get("tx_bytes"), Ordering::Relaxed);
            self.rx_bytes.store(get("rx_bytes"), Ordering::Relaxed);
            self.stats_seen.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ConsumerContext for BenchContext {}

impl ProducerContext for BenchContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let now = self.now_ns();
        let mut d = self.delivery.lock().unwrap();
        match result {
            Ok(msg) => {
                d.delivered += 1;
                d.last_ack_ns = now;
                if let Some(sent) = msg.payload().and_then(read_ts) {
                    d.latencies_us
                        .push((now.saturating_sub(sent) / 1000).min(u32::MAX as u64) as u32);
                    if self.keep_send_times {
                        d.sent_ns.push(sent);
                    }
                }
            }
            Err((e, _)) => {
                d.failed += 1;
                if d.first_failure.is_none() {
                    d.first_failure = Some(e.to_string());
                    eprintln!("runnel-bench: delivery failed: {e}");
                }
            }
        }
    }
}

fn base_config(args: &Args) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", arg(args, "brokers", "127.0.0.1:9092"));
    c.set("client.id", "runnel-bench");
    c.set("statistics.interval.ms", "1000");
    // Warnings and errors reach BenchContext::log (counted, first few shown).
    c.set_log_level(if std::env::var_os("RUNNEL_BENCH_LOG_ALL").is_some() {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    });
    c
}

/// `--set k=v,k=v`: further librdkafka properties, applied last (they win).
fn with_extra<'c>(c: &'c mut ClientConfig, args: &Args) -> &'c mut ClientConfig {
    if let Some(extra) = args.get("set") {
        for kv in extra.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| die(&format!("--set: not key=value: {kv}")));
            c.set(k, v);
        }
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Payloads: bytes 0..8 = send time (ns since the run started, LE), 8..16 = sequence number,
// then text-like filler (words from a fixed vocabulary), so compression behaves as on log or
// JSON data rather than on all-zero or random bytes.

const WORDS: &[&str] = &[
    "user", "id", "event", "click", "view", "session", "page", "home", "cart", "checkout", "ok",
    "true", "false", "null", "ts", "value", "count", "price", "region", "eu", "us", "mobile",
    "desktop", "search", "query", "result", "item", "sku", "status", "200", "404", "latency",
];

struct PayloadMaker {
    pool: Vec<u8>,
    size: usize,
    buf: Vec<u8>,
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

impl PayloadMaker {
    fn new(size: usize) -> Self {
        let size = size.max(16);
        let mut pool = Vec::with_capacity(1 << 16);
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        while pool.len() < (1 << 16) {
            r = xorshift(r);
            pool.extend_from_slice(WORDS[(r % WORDS.len() as u64) as usize].as_bytes());
            pool.push(if r & 0x30 == 0 { b',' } else { b' ' });
            if r & 0x300 == 0 {
                pool.extend_from_slice(format!("{}", (r >> 20) % 100_000).as_bytes());
                pool.push(b' ');
            }
        }
        PayloadMaker {
            pool,
            size,
            buf: vec![0; size],
        }
    }

    fn make(&mut self, ts_ns: u64, seq: u64) -> &[u8] {
        self.buf[0..8].copy_from_slice(&ts_ns.to_le_bytes());
        self.buf[8..16].copy_from_slice(&seq.to_le_bytes());
        let fill = self.size - 16;
        if fill > 0 {
            let span = self.pool.len().saturating_sub(fill).max(1) as u64;
            let off =
                (xorshift(seq.wrapping_add(1).wrapping_mul(0x2545_F491_4F6C_DD1D)) % span) as usize;
            let n = fill.min(self.pool.len() - off);
            self.buf[16..16 + n].copy_from_slice(&self.pool[off..off + n]);
        }
        &self.buf
    }
}

fn read_ts(payload: &[u8]) -> Option<u64> {
    payload
        .get(0..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
}

fn read_seq(payload: &[u8]) -> Option<u64> {
    payload
        .get(8..16)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    sorted_us[idx.min(sorted_us.len() - 1)] as f64 / 1000.0
}

fn fmt_f(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else {
        format!("{x:.3}")
    }
}

// ---------------------------------------------------------------------------------------------

fn create_topics(args: &Args) -> i32 {
    let partitions: i32 = arg_num(args, "partitions", 1);
    let names: Vec<String> = if let Some(list) = args.get("topics") {
        list.split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    } else {
        let prefix = required(args, "prefix");
        let count: usize = arg_num(args, "count", 1);
        (0..count).map(|i| format!("{prefix}{i:05}")).collect()
    };
    let admin: AdminClient<DefaultClientContext> = base_config(args)
        .set("statistics.interval.ms", "0")
        .create()
        .unwrap_or_else(|e| die(&format!("admin client: {e}")));
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(60)));
    let batch: usize = arg_num(args, "batch", 100);
    let started = Instant::now();
    let (mut created, mut existed, mut failed) = (0u64, 0u64, 0u64);
    for chunk in names.chunks(batch) {
        let topics: Vec<NewTopic> = chunk
            .iter()
            .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
            .collect();
        match futures::executor::block_on(admin.create_topics(topics.iter(), &opts)) {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(_) => created += 1,
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => existed += 1,
                        Err((name, code)) => {
                            failed += 1;
                            if failed <= 5 {
                                eprintln!("runnel-bench: create topic {name}: {code}");
                            }
                        }
                    }
                }
            }
            Err(e) => {
                failed += chunk.len() as u64;
                eprintln!("runnel-bench: CreateTopics request failed: {e}");
            }
        }
    }
    println!(
        "RESULT kind=create-topics topics={} partitions={partitions} created={created} existed={existed} failed={failed} secs={:.3}",
        names.len(),
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        1
    } else {
        0
    }
}

/// Asks for the topic's metadata (connecting to the broker), reporting a failure.
fn fetch_metadata<C: ProducerContext>(producer: &BaseProducer<C>, topic: &str, who: &str) {
    if let Err(e) = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
    {
        eprintln!("runnel-bench: {who}metadata for {topic}: {e}");
    }
}

fn produce(args: &Args) -> i32 {
    let topic = required(args, "topic").to_string();
    let n: u64 = arg_num(args, "messages", 1_000_000);
    let size: usize = arg_num(args, "size", 100);
    let acks = arg(args, "acks", "1");
    let compression = arg(args, "compression", "none");
    let linger = arg(args, "linger-ms", "5");
    let partition: Option<i32> = args
        .get("partition")
        .map(|p| p.parse().unwrap_or_else(|_| die("--partition")));
    let timeout = Duration::from_secs(arg_num(args, "timeout-secs", 120));

    let mut cfg = base_config(args);
    cfg.set("acks", acks)
        .set("compression.type", compression)
        .set("linger.ms", linger)
        .set(
            "message.timeout.ms",
            (timeout.as_millis() as u64).to_string(),
        );
    if let Some(b) = args.get("batch-messages") {
        cfg.set("batch.num.messages", b);
    }
    let ctx = BenchContext::new(Instant::now());
    let producer: BaseProducer<BenchContext> = with_extra(&mut cfg, args)
        .create_with_context(ctx)
        .unwrap_or_else(|e| die(&format!("producer: {e}")));
    let ctx = producer.context().clone();

    // Metadata first, so connection setup is not part of the timed run.
    fetch_metadata(&producer, &topic, "");
    // One acknowledged record before the clock starts: an idempotent producer
    // first needs its producer id, and librdkafka retries that request only
    // after 500 ms when its first attempt comes before the connection is up,
    // a stall that would otherwise land in some timed runs and not others.
    // (The record stays in the topic: consumers read one record more.)
    let mut warm: BaseRecord<'_, (), [u8]> = BaseRecord::to(&topic).payload(b"warm-up");
    if let Some(p) = partition {
        warm = warm.partition(p);
    }
    match producer.send(warm) {
        Ok(()) => {
            if let Err(e) = producer.flush(Duration::from_secs(10)) {
                eprintln!("runnel-bench: warm-up flush: {e}");
            }
        }
        Err((e, _)) => eprintln!("runnel-bench: warm-up send: {e}"),
    }
    *ctx.delivery.lock().unwrap() = DeliveryStats::default();

    let mut maker = PayloadMaker::new(size);
    let deadline = Instant::now() + timeout;
    let t0 = ctx.now_ns();
    let mut send_errors = 0u64;
    let mut timed_out = false;
    'outer: for seq in 0..n {
        let payload = maker.make(ctx.now_ns(), seq);
        let mut rec: BaseRecord<'_, (), [u8]> = BaseRecord::to(&topic).payload(payload);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    producer.poll(Duration::from_millis(2));
                    if Instant::now() > deadline {
                        timed_out = true;
                        break 'outer;
                    }
                    rec = r;
                }
                Err((e, _)) => {
                    send_errors += 1;
                    if send_errors <= 3 {
                        eprintln!("runnel-bench: send: {e}");
                    }
                    break;
                }
            }
        }
        if seq & 0x3ff == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if let Err(e) = producer.flush(left) {
        eprintln!("runnel-bench: flush: {e}");
        timed_out = true;
    }
    if compression != "none" {
        // Wire bytes show what compression achieved; they need one more statistics event.
        ctx.wait_fresh_stats(|| producer.poll(Duration::from_millis(50)));
    }
    let mut d = ctx.delivery.lock().unwrap();
    let secs = (d.last_ack_ns.saturating_sub(t0)) as f64 / 1e9;
    d.latencies_us.sort_unstable();
    let delivered = d.delivered;
    let rate = if secs > 0.0 {
        delivered as f64 / secs
    } else {
        0.0
    };
    let payload_bytes = delivered * size as u64;
    println!(
        "RESULT kind=produce topic={topic} messages={n} size={size} acks={acks} compression={compression} linger_ms={linger} \
         delivered={delivered} failed={} send_errors={send_errors} timed_out={timed_out} client_errors={} secs={secs:.3} \
         msgs_per_s={rate:.0} mb_per_s={:.2} payload_bytes={payload_bytes} wire_bytes={} p50_ms={} p99_ms={} max_ms={}",
        d.failed,
        ctx.client_errors.load(Ordering::Relaxed),
        rate * size as f64 / 1e6,
        ctx.tx_bytes.load(Ordering::Relaxed),
        fmt_f(percentile_ms(&d.latencies_us, 50.0)),
        fmt_f(percentile_ms(&d.latencies_us, 99.0)),
        fmt_f(percentile_ms(&d.latencies_us, 100.0)),
    );
    if delivered == n {
        0
    } else {
        1
    }
}

/// `txn`: the transactional producer. After init_transactions(), each transaction is
/// begin_transaction(), `--per-txn` sends (spread round-robin over every partition of the topic,
/// so each transaction touches all of them), commit_transaction(). Runs `--transactions`
/// transactions or until `--seconds` have passed, whichever comes first; a transaction that fails
/// is aborted (or the run stops if the error is fatal).
fn txn(args: &Args) -> i32 {
    let topic = required(args, "topic").to_string();
    let planned: u64 = arg_num(args, "transactions", 2_000);
    let per_txn: u64 = arg_num(args, "per-txn", 100);
    let size: usize = arg_num(args, "size", 1024);
    let linger = arg(args, "linger-ms", "5");
    let max_run = Duration::from_secs_f64(arg_num(args, "seconds", 30.0));
    let op_timeout = Duration::from_secs(arg_num(args, "timeout-secs", 30));
    let txn_id = args.get("transactional-id").cloned().unwrap_or_else(|| {
        format!(
            "runnel-bench-txn-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        )
    });

    let mut cfg = base_config(args);
    cfg.set("transactional.id", &txn_id)
        .set("linger.ms", linger);
    let ctx = BenchContext::new(Instant::now());
    // A ThreadedProducer: its thread serves delivery reports as they arrive. The crate's
    // commit_transaction() flushes first, and its flush polls in 100 ms slices whenever anything
    // is outstanding, which would add up to 100 ms to every commit; so each transaction is
    // flushed natively first (below) and commit_transaction() then finds nothing left to flush.
    let producer: ThreadedProducer<BenchContext> = with_extra(&mut cfg, args)
        .create_with_context(ctx)
        .unwrap_or_else(|e| die(&format!("producer: {e}")));
    let ctx = producer.context().clone();
    let acked = |ctx: &BenchContext| {
        let d = ctx.delivery.lock().unwrap();
        d.delivered + d.failed
    };

    let parts: Vec<i32> = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .ok()
                .and_then(|md| {
                    md.topics()
                        .iter()
                        .find(|t| t.name() == topic && t.error().is_none())
                        .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<i32>>())
                })
                .filter(|p| !p.is_empty());
            if let Some(p) = found {
                break p;
            }
            if Instant::now() > deadline {
                die(&format!("topic {topic}: no partitions in metadata"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    let init_started = Instant::now();
    if let Err(e) = producer.init_transactions(op_timeout) {
        eprintln!("runnel-bench: init_transactions: {e}");
        println!(
            "RESULT kind=txn topic={topic} transactions={planned} per_txn={per_txn} size={size} partitions={} \
             committed=0 aborted=0 delivered=0 failed=0 client_errors={} secs=0 txns_per_s=0 msgs_per_s=0 mb_per_s=0 \
             payload_bytes=0 stopped_by=init",
            parts.len(),
            ctx.client_errors.load(Ordering::Relaxed)
        );
        return 1;
    }
    let init_ms = init_started.elapsed().as_secs_f64() * 1e3;

    let mut maker = PayloadMaker::new(size);
    let started = Instant::now();
    let stop_at = started + max_run;
    let (mut committed, mut aborted, mut seq) = (0u64, 0u64, 0u64);
    let mut send_errors = 0u64;
    let mut commit_us: Vec<u32> = Vec::with_capacity(planned as usize);
    let mut txn_us: Vec<u32> = Vec::with_capacity(planned as usize);
    let mut stopped_by = "count";
    let mut last_commit_at = started;
    let to_us = |d: Duration| d.as_micros().min(u32::MAX as u128) as u32;
    while committed + aborted < planned {
        if Instant::now() >= stop_at {
            stopped_by = "time";
            break;
        }
        let t_begin = Instant::now();
        if let Err(e) = producer.begin_transaction() {
            eprintln!("runnel-bench: begin_transaction: {e}");
            stopped_by = "error";
            break;
        }
        let mut ok = true;
        for i in 0..per_txn {
            let payload = maker.make(ctx.now_ns(), seq);
            let part = parts[(i % parts.len() as u64) as usize];
            let mut rec: BaseRecord<'_, (), [u8]> =
                BaseRecord::to(&topic).payload(payload).partition(part);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        std::thread::sleep(Duration::from_millis(1));
                        rec = r;
                    }
                    Err((e, _)) => {
                        send_errors += 1;
                        if send_errors <= 3 {
                            eprintln!("runnel-bench: send: {e}");
                        }
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                break;
            }
            seq += 1;
        }
        // Flush this transaction's messages: librdkafka's own rd_kafka_flush() sends at once
        // (ignoring linger.ms, as rd_kafka_commit_transaction()'s internal flush does) and waits
        // until the producer thread has served every delivery report.
        if ok {
            let rc = unsafe {
                rdkafka::bindings::rd_kafka_flush(
                    producer.client().native_ptr(),
                    op_timeout.as_millis() as i32,
                )
            };
            if rc != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                || acked(&ctx) < seq
            {
                eprintln!("runnel-bench: flush before commit: {rc:?}");
            }
        }
        let t_commit = Instant::now();
        let result = if ok {
            producer.commit_transaction(op_timeout)
        } else {
            Err(KafkaError::Canceled)
        };
        match result {
            Ok(()) => {
                committed += 1;
                last_commit_at = Instant::now();
                commit_us.push(to_us(last_commit_at - t_commit));
                txn_us.push(to_us(last_commit_at - t_begin));
            }
            Err(e) => {
                if aborted < 3 {
                    eprintln!("runnel-bench: transaction {}: {e}", committed + aborted);
                }
                let fatal = matches!(&e, KafkaError::Transaction(t) if t.is_fatal());
                if fatal || producer.abort_transaction(op_timeout).is_err() {
                    stopped_by = "error";
                    break;
                }
                aborted += 1;
            }
        }
    }
    let secs = (last_commit_at - started).as_secs_f64();
    let d = ctx.delivery.lock().unwrap();
    let msgs = committed * per_txn;
    let payload_bytes = msgs * size as u64;
    let per_s = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
    commit_us.sort_unstable();
    txn_us.sort_unstable();
    println!(
        "RESULT kind=txn topic={topic} transactions={planned} per_txn={per_txn} size={size} partitions={} linger_ms={linger} \
         committed={committed} aborted={aborted} delivered={} failed={} send_errors={send_errors} client_errors={} \
         init_ms={init_ms:.1} secs={secs:.3} txns_per_s={:.1} msgs_per_s={:.0} mb_per_s={:.2} payload_bytes={payload_bytes} \
         commit_p50_ms={} commit_p99_ms={} txn_p50_ms={} txn_p99_ms={} max_secs={} stopped_by={stopped_by}",
        parts.len(),
        d.delivered,
        d.failed,
        ctx.client_errors.load(Ordering::Relaxed),
        per_s(committed as f64),
        per_s(msgs as f64),
        per_s(payload_bytes as f64) / 1e6,
        fmt_f(percentile_ms(&commit_us, 50.0)),
        fmt_f(percentile_ms(&commit_us, 99.0)),
        fmt_f(percentile_ms(&txn_us, 50.0)),
        fmt_f(percentile_ms(&txn_us, 99.0)),
        max_run.as_secs_f64(),
    );
    if aborted == 0 && stopped_by != "error" && committed > 0 {
        0
    } else {
        1
    }
}

fn consumer_config(args: &Args) -> ClientConfig {
    let mut cfg = base_config(args);
    // A group id is required by librdkafka for assign(); nothing is committed and no group is
    // joined (manual assignment with explicit start offsets).
    cfg.set("group.id", "runnel-bench-assign")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        // librdkafka >= 2.4 waits fetch.queue.backoff.ms (default 1000 ms) before the next fetch
        // whenever the local queue is over its thresholds, i.e. whenever the application is the
        // slower side; a 1 s stall then dominates a 1 s run whatever the broker does. 10 ms keeps
        // the fetch pipeline going without spinning (0 makes the fetcher thread busy-loop).
        .set("fetch.queue.backoff.ms", "10");
    cfg
}

fn partitions_of<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => {
                if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
                    if t.error().is_none() && !t.partitions().is_empty() {
                        return t.partitions().iter().map(|p| p.id()).collect();
                    }
                }
            }
            Err(e) => eprintln!("runnel-bench: metadata: {e}"),
        }
        if Instant::now() > deadline {
            die(&format!("topic {topic}: no partitions in metadata"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a consumer saw: counts, and per partition the next offset expected (gaps and
/// duplicates are counted against it).
struct Tally {
    next: Vec<i64>,
    count: u64,
    bytes: u64,
    gaps: u64,
    dups: u64,
    errors: u64,
}

impl Tally {
    fn on_message(&mut self, partition: i32, offset: i64, len: usize, err: Option<String>) {
        if let Some(e) = err {
            self.errors += 1;
            if self.errors <= 5 {
                eprintln!("runnel-bench: consume error: {e}");
            }
            return;
        }
        self.count += 1;
        self.bytes += len as u64;
        if let Some(next) = self.next.get_mut(partition as usize) {
            if *next >= 0 {
                if offset > *next {
                    self.gaps += 1;
                } else if offset < *next {
                    self.dups += 1;
                }
            }
            *next = offset + 1;
        }
    }
}

fn consume(args: &Args) -> i32 {
    let topic = required(args, "topic").to_string();
    let n: u64 = arg_num(args, "messages", 1_000_000);
    let timeout = Duration::from_secs(arg_num(args, "timeout-secs", 120));
    let idle_limit = Duration::from_secs(arg_num(args, "idle-secs", 15));

    let ctx = BenchContext::new(Instant::now());
    let consumer: BaseConsumer<BenchContext> = with_extra(&mut consumer_config(args), args)
        .create_with_context(ctx)
        .unwrap_or_else(|e| die(&format!("consumer: {e}")));
    let ctx = consumer.context().clone();
    let parts = partitions_of(&consumer, &topic);
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(&topic, *p, Offset::Beginning)
            .unwrap();
    }

    let started = Instant::now();
    let deadline = started + timeout;
    consumer
        .assign(&tpl)
        .unwrap_or_else(|e| die(&format!("assign: {e}")));
    let max_part = parts.iter().copied().max().unwrap_or(0) as usize;
    let next: Vec<i64> = vec![-1; max_part + 1];
    let mut first_at: Option<Instant> = None;
    let mut last_at = Instant::now();
    let mut last_progress = Instant::now();
    // The default reads with rd_kafka_consume_batch_queue (up to 10,000 messages per call, as
    // librdkafka's own performance tool does); `--api poll` uses the crate's one-message poll().
    let batch_api = arg(args, "api", "batch") == "batch";
    let queue = if batch_api {
        let q = unsafe {
            rdkafka::bindings::rd_kafka_queue_get_consumer(consumer.client().native_ptr())
        };
        if q.is_null() {
            die("no consumer queue");
        }
        q
    } else {
        std::ptr::null_mut()
    };
    let mut batch: Vec<*mut rdkafka::bindings::rd_kafka_message_t> =
        vec![std::ptr::null_mut(); 10_000];
    let mut t = Tally {
        next,
        count: 0,
        bytes: 0,
        gaps: 0,
        dups: 0,
        errors: 0,
    };
    loop {
        let now = Instant::now();
        if t.count >= n {
            break;
        }
        if now > deadline || now.duration_since(last_progress) > idle_limit {
            eprintln!(
                "runnel-bench: consume stopped after {}/{n} messages ({})",
                t.count,
                if now > deadline {
                    "timeout"
                } else {
                    "no message for the idle limit"
                }
            );
            break;
        }
        let before = t.count;
        if batch_api {
            let want = batch.len().min((n - t.count) as usize).max(1);
            let got = unsafe {
                rdkafka::bindings::rd_kafka_consume_batch_queue(
                    queue,
                    100,
                    batch.as_mut_ptr(),
                    want,
                )
            };
            if got < 0 {
                t.on_message(0, 0, 0, Some("rd_kafka_consume_batch_queue failed".into()));
            }
            for m in batch.iter().take(got.max(0) as usize) {
                // SAFETY: librdkafka returned `got` valid message pointers; each is destroyed once.
                unsafe {
                    let msg = &**m;
                    if msg.err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    {
                        let e: KafkaError = KafkaError::MessageConsumption(msg.err.into());
                        t.on_message(msg.partition, msg.offset, 0, Some(e.to_string()));
                    } else {
                        t.on_message(msg.partition, msg.offset, msg.len, None);
                    }
                    rdkafka::bindings::rd_kafka_message_destroy(*m);
                }
            }
        } else {
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(e)) => t.on_message(0, 0, 0, Some(e.to_string())),
                Some(Ok(m)) => t.on_message(m.partition(), m.offset(), m.payload_len(), None),
            }
        }
        if t.count > before {
            let at = Instant::now();
            first_at.get_or_insert(at);
            last_at = at;
            last_progress = at;
        }
    }
    if !queue.is_null() {
        unsafe { rdkafka::bindings::rd_kafka_queue_destroy(queue) };
    }
    let Tally {
        count,
        bytes,
        gaps,
        dups,
        errors,
        ..
    } = t;
    // Stop fetching at once (a nullbroker would serve prefetches forever while we close).
    let _ = consumer.unassign();
    // Timed from assign() to the last message: includes the ListOffsets and first fetch.
    let secs = last_at.duration_since(started).as_secs_f64();
    let rate = if secs > 0.0 { count as f64 / secs } else { 0.0 };
    let first_ms = first_at
        .map(|f| f.duration_since(started).as_secs_f64() * 1000.0)
        .unwrap_or(f64::NAN);
    println!(
        "RESULT kind=consume topic={topic} messages={n} partitions={} received={count} payload_bytes={bytes} gaps={gaps} \
         dups={dups} errors={errors} client_errors={} secs={secs:.3} msgs_per_s={rate:.0} mb_per_s={:.2} first_msg_ms={}",
        parts.len(),
        ctx.client_errors.load(Ordering::Relaxed),
        if secs > 0.0 { bytes as f64 / secs / 1e6 } else { 0.0 },
        fmt_f(first_ms),
    );
    if count == n {
        0
    } else {
        1
    }
}

// ---------------------------------------------------------------------------------------------
// End-to-end latency: a paced producer stamps each payload with its send time; a consumer
// assigned at the tail of every partition computes receive time minus send time.

const WARMUP_BIT: u64 = 1 << 63;

fn latency(args: &Args) -> i32 {
    let topic = required(args, "topic").to_string();
    let rate: f64 = arg_num(args, "rate", 10_000.0);
    let seconds: f64 = arg_num(args, "seconds", 10.0);
    let size: usize = arg_num(args, "size", 100);
    let acks = arg(args, "acks", "1").to_string();
    let linger = arg(args, "linger-ms", "1").to_string();
    let total = (rate * seconds).round() as u64;
    let start = Instant::now();

    // Consumer thread.
    let warm_seen = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicBool::new(false));
    let cons_args = args.clone();
    let consumer_thread = {
        let (warm_seen, stop, received, ready, topic) = (
            warm_seen.clone(),
            stop.clone(),
            received.clone(),
            ready.clone(),
            topic.clone(),
        );
        std::thread::spawn(move || {
            let ctx = BenchContext::new(start);
            let consumer: BaseConsumer<BenchContext> = consumer_config(&cons_args)
                .create_with_context(ctx)
                .unwrap_or_else(|e| die(&format!("consumer: {e}")));
            let parts = partitions_of(&consumer, &topic);
            let mut tpl = TopicPartitionList::new();
            for p in &parts {
                tpl.add_partition_offset(&topic, *p, Offset::End).unwrap();
            }
            consumer
                .assign(&tpl)
                .unwrap_or_else(|e| die(&format!("assign: {e}")));
            ready.store(true, Ordering::Release);
            let mut lat_us: Vec<u32> = Vec::with_capacity(total as usize);
            let mut seen = vec![false; total as usize];
            let mut dups = 0u64;
            while !stop.load(Ordering::Acquire) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                    let now = start.elapsed().as_nanos() as u64;
                    let Some(p) = m.payload() else { continue };
                    let (Some(ts), Some(seq)) = (read_ts(p), read_seq(p)) else {
                        continue;
                    };
                    if seq & WARMUP_BIT != 0 {
                        warm_seen.store(true, Ordering::Release);
                        continue;
                    }
                    if (seq as usize) < seen.len() {
                        if seen[seq as usize] {
                            dups += 1;
                            continue;
                        }
                        seen[seq as usize] = true;
                    }
                    lat_us.push((now.saturating_sub(ts) / 1000).min(u32::MAX as u64) as u32);
                    received.fetch_add(1, Ordering::Release);
                }
            }
            (
                lat_us,
                dups,
                consumer.context().client_errors.load(Ordering::Relaxed),
            )
        })
    };

    let ctx = BenchContext::new(start);
    let producer: BaseProducer<BenchContext> = base_config(args)
        .set("acks", &acks)
        .set("linger.ms", &linger)
        .set("message.timeout.ms", "30000")
        .create_with_context(ctx)
        .unwrap_or_else(|e| die(&format!("producer: {e}")));
    let pctx = producer.context().clone();
    let mut maker = PayloadMaker::new(size);

    // Warm-up: small trickle until the consumer sees it (bounded at 20 s), then 1 s more.
    while !ready.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let warm_deadline = Instant::now() + Duration::from_secs(20);
    let mut wseq = 0u64;
    let mut warm_end: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if warm_seen.load(Ordering::Acquire) && warm_end.is_none() {
            warm_end = Some(now + Duration::from_secs(1));
        }
        if warm_end.is_some_and(|e| now >= e) {
            break;
        }
        if now > warm_deadline {
            eprintln!("runnel-bench: latency warm-up: consumer saw nothing in 20 s");
            break;
        }
        let payload = maker.make(start.elapsed().as_nanos() as u64, WARMUP_BIT | wseq);
        let _ = producer.send(BaseRecord::<(), [u8]>::to(&topic).payload(payload));
        wseq += 1;
        producer.poll(Duration::from_millis(5));
    }

    // Measured phase: message i is due at t0 + i / rate.
    let t0 = Instant::now();
    let interval_ns = 1e9 / rate;
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    for i in 0..total {
        let due = t0 + Duration::from_nanos((i as f64 * interval_ns) as u64);
        let now = Instant::now();
        if due > now {
            producer.poll(Duration::ZERO);
            let wait = due - now;
            if wait > Duration::from_micros(60) {
                std::thread::sleep(wait - Duration::from_micros(50));
            }
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        }
        let payload = maker.make(start.elapsed().as_nanos() as u64, i);
        let mut rec = BaseRecord::<(), [u8]>::to(&topic).payload(payload);
        loop {
            match producer.send(rec) {
                Ok(()) => {
                    sent += 1;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    producer.poll(Duration::from_millis(1));
                    rec = r;
                }
                Err((e, _)) => {
                    send_errors += 1;
                    if send_errors <= 3 {
                        eprintln!("runnel-bench: send: {e}");
                    }
                    break;
                }
            }
        }
    }
    let send_secs = t0.elapsed().as_secs_f64();
    let _ = producer.flush(Duration::from_secs(15));
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Acquire) < sent && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Release);
    let (mut lat, dups, cons_errors) = consumer_thread.join().unwrap();
    lat.sort_unstable();
    let d = pctx.delivery.lock().unwrap();
    let mut ack = d.latencies_us.clone();
    ack.sort_unstable();
    println!(
        "RESULT kind=latency topic={topic} rate={rate} seconds={seconds} size={size} acks={acks} linger_ms={linger} \
         sent={sent} send_secs={send_secs:.3} achieved_rate={:.0} delivered={} failed={} received={} dups={dups} \
         client_errors={} p50_ms={} p90_ms={} p99_ms={} p999_ms={} max_ms={} ack_p50_ms={} ack_p99_ms={}",
        sent as f64 / send_secs,
        d.delivered,
        d.failed,
        lat.len(),
        pctx.client_errors.load(Ordering::Relaxed) + cons_errors,
        fmt_f(percentile_ms(&lat, 50.0)),
        fmt_f(percentile_ms(&lat, 90.0)),
        fmt_f(percentile_ms(&lat, 99.0)),
        fmt_f(percentile_ms(&lat, 99.9)),
        fmt_f(percentile_ms(&lat, 100.0)),
        fmt_f(percentile_ms(&ack, 50.0)),
        fmt_f(percentile_ms(&ack, 99.0)),
    );
    if lat.len() as u64 == sent && sent == total {
        0
    } else {
        1
    }
}

// ---------------------------------------------------------------------------------------------
// Log compaction under load (Runnel only): fill one partition with keyed records under
// cleanup.policy=delete, start a producer paced at a fixed byte rate, switch the topic to
// cleanup.policy=compact and time the broker's first compaction pass over the filled data (seen
// in its /metrics) while measuring the paced producer's acknowledgement latency.

/// `http://host:port/path` → (`host:port`, `/path`).
fn split_http_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// URL: {url}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    if hostport.is_empty() {
        return Err(format!("no host in {url}"));
    }
    Ok((hostport.to_string(), path.to_string()))
}

/// One plain HTTP/1.0 GET (the server closes the connection after its answer, no chunking);
/// the body of a 200 answer.
fn http_get(url: &str) -> Result<String, String> {
    let (hostport, path) = split_http_url(url)?;
    let mut s = TcpStream::connect(&hostport).map_err(|e| format!("{hostport}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.set_write_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{url}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: malformed HTTP answer"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{url}: {status}"));
    }
    Ok(body.to_string())
}

/// The value of the sample `name{labels}` in a Prometheus text page whose labels include all
/// of `want` (label order does not matter); `None` if there is no such sample.
fn prom_value(page: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some(end) = r.find('}') else { continue };
            (&r[..end], &r[end + 1..])
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // a longer metric name with this prefix
        };
        let have: Vec<(&str, &str)> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        if want.iter().all(|w| have.contains(w)) {
            if let Some(v) = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            {
                return Some(v);
            }
        }
    }
    None
}

/// What the compaction scenario reads from the broker's /metrics.
#[derive(Clone, Copy, Default)]
struct CleanerView {
    /// `kafka_log_log_size{topic,partition="0"}`.
    size: Option<f64>,
    /// `runnel_log_cleaner_passes_total{topic}` (absent: 0).
    passes: f64,
    /// Whether the passes counter was present at all.
    passes_seen: bool,
    /// `runnel_log_cleaner_last_pass_seconds{topic,partition="0"}`.
    last_pass_s: Option<f64>,
    /// `runnel_log_cleaner_bytes_removed_total{topic}`.
    bytes_removed: Option<f64>,
}

fn cleaner_view(url: &str, topic: &str) -> Result<CleanerView, String> {
    let page = http_get(url)?;
    let tp = [("topic", topic), ("partition", "0")];
    let t = [("topic", topic)];
    let passes = prom_value(&page, "runnel_log_cleaner_passes_total", &t);
    Ok(CleanerView {
        size: prom_value(&page, "kafka_log_log_size", &tp),
        passes: passes.unwrap_or(0.0),
        passes_seen: passes.is_some(),
        last_pass_s: prom_value(&page, "runnel_log_cleaner_last_pass_seconds", &tp),
        bytes_removed: prom_value(&page, "runnel_log_cleaner_bytes_removed_total", &t),
    })
}

/// utime+stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn proc_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Sends one record, waiting (serving delivery reports) while librdkafka's queue is full.
fn send_waiting<C: ProducerContext>(
    producer: &BaseProducer<C>,
    mut rec: BaseRecord<'_, str, [u8], C::DeliveryOpaque>,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if Instant::now() > deadline {
                    return Err("timed out waiting for room in the producer queue".into());
                }
                producer.poll(Duration::from_millis(2));
                rec = r;
            }
            Err((e, _)) => return Err(e.to_string()),
        }
    }
}

/// Shared between the compaction scenario's main thread and its paced producer.
struct PacedShared {
    stop: AtomicBool,
    started_ns: AtomicU64,
    sent: AtomicU64,
    send_errors: AtomicU64,
    /// Largest lag of a send behind its schedule, in µs.
    max_behind_us: AtomicU64,
}

/// The paced producer: `value_size`-byte records at `msgs_per_s`, keys `key-{seq % keys}`,
/// until told to stop; then flushes. Returns its context (delivery latencies and send times).
fn paced_producer(
    args: Args,
    topic: String,
    origin: Instant,
    value_size: usize,
    keys: u64,
    msgs_per_s: f64,
    shared: Arc<PacedShared>,
) -> Arc<BenchContext> {
    let mut cfg = base_config(&args);
    cfg.set("acks", "1")
        .set("compression.type", "none")
        .set("linger.ms", arg(&args, "paced-linger-ms", "5"))
        .set("message.timeout.ms", "60000")
        .set("statistics.interval.ms", "0");
    let producer: BaseProducer<BenchContext> = with_extra(&mut cfg, &args)
        .create_with_context(BenchContext::new(origin).keeping_send_times())
        .unwrap_or_else(|e| die(&format!("paced producer: {e}")));
    let ctx = producer.context().clone();
    fetch_metadata(&producer, &topic, "paced producer: ");
    let mut maker = PayloadMaker::new(value_size);
    let mut key = String::new();
    let t0 = Instant::now();
    shared
        .started_ns
        .store(origin.elapsed().as_nanos() as u64, Ordering::Release);
    let mut seq = 0u64;
    // Sends what is due every millisecond (linger.ms batches them anyway), rather than
    // spinning to each message's due time: the broker needs the CPU more than the pacing.
    while !shared.stop.load(Ordering::Acquire) {
        let due = (t0.elapsed().as_secs_f64() * msgs_per_s) as u64;
        while seq < due && !shared.stop.load(Ordering::Relaxed) {
            let behind = t0
                .elapsed()
                .saturating_sub(Duration::from_secs_f64(seq as f64 / msgs_per_s));
            shared
                .max_behind_us
                .fetch_max(behind.as_micros() as u64, Ordering::Relaxed);
            key.clear();
            use std::fmt::Write as _;
            let _ = write!(key, "key-{}", seq % keys);
            let payload = maker.make(ctx.now_ns(), seq);
            let rec = BaseRecord::to(&topic).key(key.as_str()).payload(payload);
            match send_waiting(&producer, rec, Instant::now() + Duration::from_secs(60)) {
                Ok(()) => {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    if shared.send_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("runnel-bench: paced producer: send: {e}");
                    }
                }
            }
            seq += 1;
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Err(e) = producer.flush(Duration::from_secs(30)) {
        eprintln!("runnel-bench: paced producer: flush: {e}");
    }
    ctx
}

/// Latency figures of the deliveries whose send time falls in [from_ns, to_ns).
struct WindowStats {
    count: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn window_stats(d: &DeliveryStats, from_ns: u64, to_ns: u64) -> WindowStats {
    let mut lat: Vec<u32> = d
        .sent_ns
        .iter()
        .zip(&d.latencies_us)
        .filter(|(s, _)| **s >= from_ns && **s < to_ns)
        .map(|(_, l)| *l)
        .collect();
    lat.sort_unstable();
    WindowStats {
        count: lat.len() as u64,
        p50_ms: percentile_ms(&lat, 50.0),
        p99_ms: percentile_ms(&lat, 99.0),
        max_ms: percentile_ms(&lat, 100.0),
    }
}

/// Waits until the process used at most 2 ticks of CPU in 0.5 s, at most `max`; the time waited.
fn wait_idle(pid: u32, max: Duration) -> Duration {
    let started = Instant::now();
    let Some(mut prev) = proc_ticks(pid) else {
        return Duration::ZERO;
    };
    while started.elapsed() < max {
        std::thread::sleep(Duration::from_millis(500));
        let now = proc_ticks(pid).unwrap_or(prev);
        if now.saturating_sub(prev) <= 2 {
            break;
        }
        prev = now;
    }
    started.elapsed()
}

/// Prints the compaction scenario's RESULT line with what was measured; the exit code. A
/// failure reads "stage: what happened" (the stage goes into the line as `failed_stage`).
fn finish_compaction(out: &mut Vec<(&'static str, String)>, failure: Option<String>) -> i32 {
    if let Some(f) = &failure {
        eprintln!("runnel-bench: compaction: {f}");
    }
    let stage = failure
        .as_ref()
        .map(|f| f.split(':').next().unwrap_or("error").replace(' ', "-"))
        .unwrap_or_else(|| "none".into());
    out.push(("failed_stage", stage));
    let fields: Vec<String> = out.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT kind=compaction {}", fields.join(" "));
    std::io::stdout().flush().ok();
    i32::from(failure.is_some())
}

fn compaction(args: &Args) -> i32 {
    let topic = arg(args, "topic", "compaction").to_string();
    let fill_bytes: u64 = arg_num(args, "fill-bytes", 1_073_741_824);
    let value_size: usize = arg_num(args, "value-size", 1024);
    let keys: u64 = arg_num(args, "keys", 10_000);
    let rate_mbps: f64 = arg_num(args, "rate-mbps", 20.0);
    let metrics_url = arg(args, "metrics-url", "http://127.0.0.1:9404/metrics").to_string();
    let timeout = Duration::from_secs_f64(arg_num(args, "timeout-s", 180.0));
    let fill_timeout = Duration::from_secs_f64(arg_num(args, "fill-timeout-s", 600.0));
    let baseline = Duration::from_secs_f64(arg_num(args, "baseline-s", 2.0));
    let tail = Duration::from_secs_f64(arg_num(args, "tail-s", 2.0));
    let broker_pid: Option<u32> = args.get("broker-pid").and_then(|p| p.parse().ok());
    let clk_tck: f64 = arg_num(args, "clk-tck", 100.0);
    if value_size < 16 || keys == 0 || rate_mbps <= 0.0 {
        die("--value-size must be >= 16, --keys and --rate-mbps > 0");
    }
    let records = fill_bytes.div_ceil(value_size as u64);
    let msgs_per_s = rate_mbps * 1e6 / value_size as f64;
    let origin = Instant::now();
    let ns = || origin.elapsed().as_nanos() as u64;
    let cpu_s = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(a), Some(b)) => fmt_f(b.saturating_sub(a) as f64 / clk_tck),
        _ => "nan".into(),
    };
    let ticks = || broker_pid.and_then(proc_ticks);

    // Everything measured so far; printed as the RESULT line whatever happens (`finish`).
    let mut out: Vec<(&'static str, String)> = vec![
        ("topic", topic.clone()),
        ("fill_bytes", fill_bytes.to_string()),
        ("value_size", value_size.to_string()),
        ("keys", keys.to_string()),
        ("rate_mbps", format!("{rate_mbps}")),
        ("timeout_s", format!("{}", timeout.as_secs_f64())),
    ];

    // a. The topic: one partition, nothing cleaned yet.
    let admin: AdminClient<DefaultClientContext> = base_config(args)
        .set("statistics.interval.ms", "0")
        .create()
        .unwrap_or_else(|e| die(&format!("admin client: {e}")));
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(60)));
    let new_topic = NewTopic::new(&topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "delete")
        .set("retention.ms", "-1")
        .set("retention.bytes", "-1");
    match futures::executor::block_on(admin.create_topics([&new_topic], &opts)) {
        Ok(rs) => match rs.into_iter().next() {
            Some(Ok(_)) => {}
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
                eprintln!(
                    "runnel-bench: compaction: topic {topic} already exists; using it as it is"
                )
            }
            Some(Err((_, code))) => {
                return finish_compaction(&mut out, Some(format!("create: topic {topic}: {code}")))
            }
            None => {
                return finish_compaction(
                    &mut out,
                    Some("create: empty CreateTopics answer".into()),
                )
            }
        },
        Err(e) => return finish_compaction(&mut out, Some(format!("create: CreateTopics: {e}"))),
    }

    // b. Fill as fast as possible.
    let fill_cpu0 = ticks();
    let fill_started = Instant::now();
    let (fill_delivered, fill_failed) = {
        let mut cfg = base_config(args);
        cfg.set("acks", "1")
            .set("compression.type", "none")
            .set("linger.ms", "5")
            .set("statistics.interval.ms", "0")
            .set(
                "message.timeout.ms",
                (fill_timeout.as_millis() as u64).to_string(),
            );
        let producer: BaseProducer<BenchContext> = with_extra(&mut cfg, args)
            .create_with_context(BenchContext::new(origin))
            .unwrap_or_else(|e| die(&format!("producer: {e}")));
        if let Err(e) = producer
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
        {
            eprintln!("runnel-bench: compaction: metadata for {topic}: {e}");
        }
        let deadline = fill_started + fill_timeout;
        let mut maker = PayloadMaker::new(value_size);
        let mut key = String::new();
        let mut send_errors = 0u64;
        for seq in 0..records {
            key.clear();
            use std::fmt::Write as _;
            let _ = write!(key, "key-{}", seq % keys);
            let payload = maker.make(producer.context().now_ns(), seq);
            let rec = BaseRecord::to(&topic).key(key.as_str()).payload(payload);
            if let Err(e) = send_waiting(&producer, rec, deadline) {
                send_errors += 1;
                if send_errors <= 3 {
                    eprintln!("runnel-bench: compaction fill: send: {e}");
                }
                if Instant::now() > deadline {
                    break;
                }
            }
            if seq & 0x3ff == 0 {
                producer.poll(Duration::ZERO);
            }
        }
        if let Err(e) = producer.flush(deadline.saturating_duration_since(Instant::now())) {
            eprintln!("runnel-bench: compaction fill: flush: {e}");
        }
        let d = producer.context().delivery.lock().unwrap();
        (d.delivered, d.failed + send_errors)
    };
    let fill_s = fill_started.elapsed().as_secs_f64();
    let fill_cpu1 = ticks();
    out.extend([
        ("fill_records", records.to_string()),
        ("fill_delivered", fill_delivered.to_string()),
        ("fill_failed", fill_failed.to_string()),
        ("fill_s", format!("{fill_s:.3}")),
        (
            "fill_mbps",
            format!(
                "{:.1}",
                fill_delivered as f64 * value_size as f64 / 1e6 / fill_s.max(1e-9)
            ),
        ),
        ("fill_cpu_s", cpu_s(fill_cpu0, fill_cpu1)),
    ]);
    eprintln!(
        "runnel-bench: compaction: filled {fill_delivered}/{records} records of {value_size} B in {fill_s:.1} s"
    );
    if fill_delivered < records {
        return finish_compaction(
            &mut out,
            Some(format!("fill: delivered {fill_delivered} of {records}")),
        );
    }
    // Let the broker finish what the fill left behind (memtable flushes, RocksDB compactions)
    // so the baseline window is not measured against it.
    let settle = broker_pid
        .map(|p| wait_idle(p, Duration::from_secs(30)))
        .unwrap_or_default();
    out.push(("settle_s", format!("{:.1}", settle.as_secs_f64())));

    // c. Before.
    let before = match cleaner_view(&metrics_url, &topic) {
        Ok(v) => v,
        Err(e) => return finish_compaction(&mut out, Some(format!("metrics: {e}"))),
    };
    let f_opt = |x: Option<f64>| x.map(|v| format!("{v:.0}")).unwrap_or("nan".into());
    out.push(("size_before", f_opt(before.size)));
    out.push(("passes_before", format!("{:.0}", before.passes)));

    // d. The paced producer, and its baseline window.
    let shared = Arc::new(PacedShared {
        stop: AtomicBool::new(false),
        started_ns: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        max_behind_us: AtomicU64::new(0),
    });
    let paced = {
        let (a, t, sh) = (args.clone(), topic.clone(), shared.clone());
        std::thread::spawn(move || paced_producer(a, t, origin, value_size, keys, msgs_per_s, sh))
    };
    while shared.started_ns.load(Ordering::Acquire) == 0 && !paced.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(baseline);
    let stop_paced = |shared: &PacedShared, paced: std::thread::JoinHandle<Arc<BenchContext>>| {
        shared.stop.store(true, Ordering::Release);
        paced.join().ok()
    };

    // e. Switch to compaction. AlterConfigs replaces every override, so the retention ones are
    // sent again.
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&topic))
        .set("cleanup.policy", "compact")
        .set("retention.ms", "-1")
        .set("retention.bytes", "-1");
    // The pass covers what the paced producer wrote meanwhile too.
    let at_alter = cleaner_view(&metrics_url, &topic).ok().and_then(|v| v.size);
    out.push(("size_at_alter", f_opt(at_alter)));
    let window_cpu0 = ticks();
    let alter_ns = ns();
    let altered = match futures::executor::block_on(admin.alter_configs([&alter], &opts)) {
        Ok(rs) => match rs.into_iter().next() {
            Some(Ok(_)) => Ok(()),
            Some(Err((_, code))) => Err(code.to_string()),
            None => Err("empty AlterConfigs answer".into()),
        },
        Err(e) => Err(e.to_string()),
    };
    out.push(("alter_ms", format!("{:.1}", (ns() - alter_ns) as f64 / 1e6)));
    if let Err(e) = altered {
        stop_paced(&shared, paced);
        return finish_compaction(&mut out, Some(format!("alter: AlterConfigs: {e}")));
    }
    eprintln!(
        "runnel-bench: compaction: cleanup.policy=compact set on {topic}; waiting for the cleaner"
    );

    // f. Until the pass is counted.
    let mut done: Option<(u64, CleanerView)> = None;
    let mut last = before;
    let mut size_drop_ns: Option<u64> = None;
    let mut scrape_errors = 0u64;
    let give_up = Instant::now() + timeout;
    while Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(200));
        match cleaner_view(&metrics_url, &topic) {
            Ok(v) => {
                let at = ns();
                last = v;
                if size_drop_ns.is_none()
                    && v.size
                        .zip(before.size)
                        .is_some_and(|(now, b)| now < b * 0.9)
                {
                    size_drop_ns = Some(at);
                }
                if v.passes > before.passes {
                    done = Some((at, v));
                    break;
                }
            }
            Err(e) => {
                scrape_errors += 1;
                if scrape_errors <= 3 {
                    eprintln!("runnel-bench: compaction: metrics: {e}");
                }
            }
        }
        if paced.is_finished() {
            break;
        }
    }
    let window_cpu1 = ticks();
    let end_ns = done.map(|(at, _)| at).unwrap_or_else(ns);
    if done.is_some() {
        eprintln!(
            "runnel-bench: compaction: pass counted {:.1} s after the alter",
            (end_ns - alter_ns) as f64 / 1e9
        );
        std::thread::sleep(tail);
    }
    let stopped_ns = ns();
    let ctx = stop_paced(&shared, paced);
    let after = done.map(|(_, v)| v).unwrap_or(last);

    let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e9;
    out.extend([
        ("size_after", f_opt(after.size)),
        ("passes_after", format!("{:.0}", after.passes)),
        ("passes_metric_seen", after.passes_seen.to_string()),
        (
            "compaction_wall_s",
            if done.is_some() {
                format!("{:.3}", secs(alter_ns, end_ns))
            } else {
                "nan".into()
            },
        ),
        (
            "pass_s",
            match (done, after.last_pass_s) {
                (Some(_), Some(p)) => format!("{p:.3}"),
                _ => "nan".into(),
            },
        ),
        (
            "size_drop_s",
            size_drop_ns
                .map(|t| format!("{:.3}", secs(alter_ns, t)))
                .unwrap_or("nan".into()),
        ),
        (
            "bytes_removed",
            match (after.bytes_removed, before.bytes_removed) {
                (Some(a), b) => format!("{:.0}", a - b.unwrap_or(0.0)),
                _ => "nan".into(),
            },
        ),
        ("window_cpu_s", cpu_s(window_cpu0, window_cpu1)),
    ]);

    // g. The paced producer's figures per window (by send time).
    let Some(ctx) = ctx else {
        return finish_compaction(
            &mut out,
            Some("producer: the paced producer panicked".into()),
        );
    };
    let d = ctx.delivery.lock().unwrap();
    let start_ns = shared.started_ns.load(Ordering::Acquire);
    let base = window_stats(&d, start_ns, alter_ns);
    let win = window_stats(&d, alter_ns, end_ns);
    let tail_w = window_stats(&d, end_ns, stopped_ns);
    let win_s = secs(alter_ns, end_ns);
    let win_rate = if win_s > 0.0 {
        win.count as f64 / win_s
    } else {
        0.0
    };
    let sent = shared.sent.load(Ordering::Relaxed);
    out.extend([
        ("target_msgs_per_s", format!("{msgs_per_s:.0}")),
        ("msgs_per_s", format!("{win_rate:.0}")),
        (
            "produce_mbps",
            format!("{:.2}", win_rate * value_size as f64 / 1e6),
        ),
        ("window_s", format!("{win_s:.3}")),
        ("window_msgs", win.count.to_string()),
        ("p50_ms", fmt_f(win.p50_ms)),
        ("p99_ms", fmt_f(win.p99_ms)),
        ("max_ms", fmt_f(win.max_ms)),
        ("base_s", format!("{:.3}", secs(start_ns, alter_ns))),
        ("base_msgs", base.count.to_string()),
        ("base_p50_ms", fmt_f(base.p50_ms)),
        ("base_p99_ms", fmt_f(base.p99_ms)),
        ("base_max_ms", fmt_f(base.max_ms)),
        ("tail_p99_ms", fmt_f(tail_w.p99_ms)),
        ("tail_max_ms", fmt_f(tail_w.max_ms)),
        ("sent", sent.to_string()),
        ("delivered", d.delivered.to_string()),
        ("failed", d.failed.to_string()),
        (
            "send_errors",
            shared.send_errors.load(Ordering::Relaxed).to_string(),
        ),
        (
            "max_behind_ms",
            format!(
                "{:.1}",
                shared.max_behind_us.load(Ordering::Relaxed) as f64 / 1e3
            ),
        ),
        (
            "client_errors",
            ctx.client_errors.load(Ordering::Relaxed).to_string(),
        ),
    ]);
    let failure = if done.is_none() {
        Some(format!(
            "timeout: no compaction pass of {topic} counted within {:.0} s of the alter \
             (runnel_log_cleaner_passes_total {}; last kafka_log_log_size {})",
            timeout.as_secs_f64(),
            if after.passes_seen {
                "present but unchanged"
            } else {
                "absent: no pass counted yet, or a broker without the metric"
            },
            f_opt(after.size),
        ))
    } else if d.failed > 0 || d.delivered < sent {
        Some(format!(
            "producer: paced producer delivered {} of {sent} ({} failed)",
            d.delivered, d.failed
        ))
    } else {
        None
    };
    drop(d);
    finish_compaction(&mut out, failure)
}

// ---------------------------------------------------------------------------------------------
// Consumer group: `--members` consumers (threads of this process, each its own librdkafka
// client) subscribe() to the topic with one fresh group.id and drain it; then, with the group
// stable, a further member subscribes and we time the rebalance until every member holds its
// new assignment. Assignments are observed through the rebalance callback (post_rebalance, i.e.
// after librdkafka applied them). Messages are read with the crate's poll(): it is what serves
// the rebalance events (rd_kafka_consume_batch_queue on the consumer queue would answer them
// with a forced unassign, as no native rebalance_cb is set).

/// One member's view, shared with the coordinating thread. Times are ns since `origin`.
#[derive(Default)]
struct MemberState {
    /// (at_ns, assign?, partitions), in callback order.
    events: Mutex<Vec<(u64, bool, Vec<i32>)>>,
    subscribed_ns: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    received: AtomicU64,
    bytes: AtomicU64,
    gaps: AtomicU64,
    dups: AtomicU64,
    errors: AtomicU64,
    committed: AtomicBool,
    go: AtomicBool,
}

struct GroupShared {
    origin: Instant,
    client_errors: AtomicU64,
    commit: AtomicBool,
    stop: AtomicBool,
}

impl GroupShared {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

struct GroupContext {
    member: usize,
    state: Arc<MemberState>,
    shared: Arc<GroupShared>,
}

impl GroupContext {
    fn note_error(&self, what: &str) {
        let n = self.shared.client_errors.fetch_add(1, Ordering::Relaxed);
        if n < MAX_SHOWN_ERRORS {
            eprintln!("runnel-bench: member {}: {what}", self.member);
        } else if n == MAX_SHOWN_ERRORS {
            eprintln!("runnel-bench: (further client errors not shown)");
        }
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        if std::env::var_os("RUNNEL_BENCH_LOG_ALL").is_some() {
            eprintln!(
                "{:.3} member {} rdkafka {fac}: {msg}",
                self.shared.origin.elapsed().as_secs_f64(),
                self.member
            );
        } else if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.note_error(&format!("log {fac}: {msg}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note_error(&format!("error {error}: {reason}"));
    }
}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (assign, tpl) = match rebalance {
            Rebalance::Assign(t) => (true, t),
            Rebalance::Revoke(t) => (false, t),
            Rebalance::Error(e) => {
                self.note_error(&format!("rebalance error: {e}"));
                return;
            }
        };
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let at = self.shared.now_ns();
        if std::env::var_os("RUNNEL_BENCH_LOG_ALL").is_some() {
            eprintln!(
                "{:.3} member {} {} {parts:?}",
                at as f64 / 1e9,
                self.member,
                if assign { "assigned" } else { "revoked" }
            );
        }
        self.state.events.lock().unwrap().push((at, assign, parts));
    }
}

fn group_member(
    member: usize,
    args: Args,
    topic: String,
    group_id: String,
    nparts: usize,
    state: Arc<MemberState>,
    shared: Arc<GroupShared>,
) {
    let mut cfg = base_config(&args);
    cfg.set("client.id", format!("runnel-bench-g{member}"))
        .set("group.id", &group_id)
        .set("statistics.interval.ms", "0")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // As for `consume`: do not stall 1 s whenever the application is the slower side.
        .set("fetch.queue.backoff.ms", "10");
    let ctx = GroupContext {
        member,
        state: state.clone(),
        shared: shared.clone(),
    };
    let consumer: BaseConsumer<GroupContext> = with_extra(&mut cfg, &args)
        .create_with_context(ctx)
        .unwrap_or_else(|e| die(&format!("group consumer: {e}")));
    while !state.go.load(Ordering::Acquire) {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    state
        .subscribed_ns
        .store(shared.now_ns(), Ordering::Release);
    consumer
        .subscribe(&[&topic])
        .unwrap_or_else(|e| die(&format!("subscribe: {e}")));
    let mut next = vec![-1i64; nparts];
    let (mut pending, mut pending_bytes, mut last_ns) = (0u64, 0u64, 0u64);
    let flush = |pending: &mut u64, bytes: &mut u64, last_ns: u64| {
        if *pending > 0 {
            state.last_ns.store(last_ns, Ordering::Release);
            state.bytes.fetch_add(*bytes, Ordering::AcqRel);
            state.received.fetch_add(*pending, Ordering::AcqRel);
            *pending = 0;
            *bytes = 0;
        }
    };
    while !shared.stop.load(Ordering::Acquire) {
        if shared.commit.load(Ordering::Acquire) && !state.committed.load(Ordering::Acquire) {
            // Positions committed before the next member joins, so the new owners resume where
            // the old ones stopped (auto-commit would get there within 5 s, or on revoke).
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => {
                    let n = state.errors.fetch_add(1, Ordering::Relaxed);
                    if n < 5 {
                        eprintln!("runnel-bench: member {member}: commit: {e}");
                    }
                }
            }
            state.committed.store(true, Ordering::Release);
        }
        match consumer.poll(Duration::from_millis(50)) {
            None => flush(&mut pending, &mut pending_bytes, last_ns),
            Some(Err(e)) => {
                let n = state.errors.fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    eprintln!("runnel-bench: member {member}: consume error: {e}");
                }
            }
            Some(Ok(m)) => {
                last_ns = shared.now_ns();
                if state.first_ns.load(Ordering::Relaxed) == 0 {
                    state.first_ns.store(last_ns, Ordering::Release);
                }
                pending += 1;
                pending_bytes += m.payload_len() as u64;
                if let Some(n) = next.get_mut(m.partition() as usize) {
                    if *n >= 0 {
                        if m.offset() > *n {
                            state.gaps.fetch_add(1, Ordering::Relaxed);
                        } else if m.offset() < *n {
                            state.dups.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    *n = m.offset() + 1;
                }
                if pending >= 1024 {
                    flush(&mut pending, &mut pending_bytes, last_ns);
                }
            }
        }
    }
    flush(&mut pending, &mut pending_bytes, last_ns);
    // Dropping the consumer closes it (LeaveGroup); the caller does not wait long for that.
}

/// If every member's latest rebalance event is an assignment made at or after `since_ns` and
/// together they cover each partition exactly once: the time of the latest such assignment.
fn group_settled(members: &[Arc<MemberState>], nparts: usize, since_ns: u64) -> Option<u64> {
    let mut owned = vec![false; nparts];
    let mut latest = 0u64;
    for m in members {
        let ev = m.events.lock().unwrap();
        let (at, assign, parts) = ev.last()?;
        if !assign || *at < since_ns {
            return None;
        }
        for p in parts {
            let slot = owned.get_mut(*p as usize)?;
            if *slot {
                return None;
            }
            *slot = true;
        }
        latest = latest.max(*at);
    }
    owned.iter().all(|o| *o).then_some(latest)
}

fn group(args: &Args) -> i32 {
    let topic = required(args, "topic").to_string();
    let n: u64 = arg_num(args, "messages", 1_000_000);
    let members: usize = arg_num(args, "members", 4);
    let timeout = Duration::from_secs(arg_num(args, "timeout-secs", 45));
    let idle_limit = Duration::from_secs(arg_num(args, "idle-secs", 10));
    let origin = Instant::now();
    let deadline = origin + timeout;
    let group_id = args.get("group").cloned().unwrap_or_else(|| {
        format!(
            "runnel-bench-group-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        )
    });
    // The heartbeat interval the rebalance target is relative to: librdkafka's default unless
    // overridden with --set.
    let heartbeat_ms: u64 = args
        .get("set")
        .and_then(|s| {
            s.split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.trim() == "heartbeat.interval.ms")
                .and_then(|(_, v)| v.trim().parse().ok())
        })
        .unwrap_or(3000);

    let nparts = {
        let probe: BaseConsumer = consumer_config(args)
            .set("statistics.interval.ms", "0")
            .create()
            .unwrap_or_else(|e| die(&format!("consumer: {e}")));
        let parts = partitions_of(&probe, &topic);
        parts.iter().copied().max().unwrap_or(0) as usize + 1
    };

    let shared = Arc::new(GroupShared {
        origin,
        client_errors: AtomicU64::new(0),
        commit: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let mut states: Vec<Arc<MemberState>> = Vec::new();
    let mut threads = Vec::new();
    let spawn = |i: usize,
                 states: &mut Vec<Arc<MemberState>>,
                 threads: &mut Vec<std::thread::JoinHandle<()>>| {
        let st = Arc::new(MemberState::default());
        states.push(st.clone());
        let (a, t, g, sh) = (
            args.clone(),
            topic.clone(),
            group_id.clone(),
            shared.clone(),
        );
        threads.push(std::thread::spawn(move || {
            group_member(i, a, t, g, nparts, st, sh)
        }));
    };
    for i in 0..members {
        spawn(i, &mut states, &mut threads);
    }
    // Clients created (threads started): release them together. The group "starts" at the
    // first subscribe().
    std::thread::sleep(Duration::from_millis(200));
    for st in &states {
        st.go.store(true, Ordering::Release);
    }
    let total = |states: &[Arc<MemberState>], f: fn(&MemberState) -> &AtomicU64| -> u64 {
        states.iter().map(|s| f(s).load(Ordering::Acquire)).sum()
    };
    let mut failure: Option<&str> = None;

    // Phase 1: drain.
    let mut last_total = 0u64;
    let mut last_progress = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let got = total(&states, |s| &s.received);
        let now = Instant::now();
        if got >= n {
            break;
        }
        if got > last_total {
            last_total = got;
            last_progress = now;
        }
        // Before the first message, allow for the initial rebalance delay and then some.
        let limit = if got == 0 {
            idle_limit + Duration::from_secs(10)
        } else {
            idle_limit
        };
        if now > deadline || now.duration_since(last_progress) > limit {
            eprintln!(
                "runnel-bench: group drain stopped after {got}/{n} messages ({})",
                if now > deadline {
                    "timeout"
                } else {
                    "no progress for the idle limit"
                }
            );
            failure = Some(if got == 0 { "no-message" } else { "drain" });
            break;
        }
    }
    let start_ns = states
        .iter()
        .map(|s| s.subscribed_ns.load(Ordering::Acquire))
        .filter(|t| *t > 0)
        .min()
        .unwrap_or(0);
    let first_ns = states
        .iter()
        .map(|s| s.first_ns.load(Ordering::Acquire))
        .filter(|t| *t > 0)
        .min();
    // Initial assignment complete: the latest of each member's first assignment.
    let assigned_ns = states
        .iter()
        .map(|s| {
            s.events
                .lock()
                .unwrap()
                .iter()
                .find(|e| e.1 && !e.2.is_empty())
                .map(|e| e.0)
        })
        .collect::<Option<Vec<u64>>>()
        .and_then(|v| v.into_iter().max());

    // Phase 2: commit positions, make sure the group is stable, let one more member join.
    shared.commit.store(true, Ordering::Release);
    let settle_by = (Instant::now() + Duration::from_secs(10)).min(deadline);
    while Instant::now() < settle_by
        && !(states.iter().all(|s| s.committed.load(Ordering::Acquire))
            && group_settled(&states, nparts, 0).is_some())
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Drain figures are taken now (members flush their counts when poll() comes back empty).
    std::thread::sleep(Duration::from_millis(100));
    let received = total(&states, |s| &s.received);
    let bytes = total(&states, |s| &s.bytes);
    let gaps = total(&states, |s| &s.gaps);
    let dups = total(&states, |s| &s.dups);
    let member_msgs: Vec<String> = states
        .iter()
        .map(|s| s.received.load(Ordering::Acquire).to_string())
        .collect();
    let last_ns = states
        .iter()
        .map(|s| s.last_ns.load(Ordering::Acquire))
        .max()
        .unwrap_or(0);

    let mut join_ns = None;
    let mut rebalanced_ns = None;
    let mut first_revoke_ns = None;
    if group_settled(&states, nparts, 0).is_none() {
        eprintln!("runnel-bench: group not stable before the fifth member's join; not measured");
        failure.get_or_insert("unstable");
    } else {
        spawn(members, &mut states, &mut threads);
        states[members].go.store(true, Ordering::Release);
        // Bounded on its own (the drain may have used the overall timeout): the heartbeat
        // interval plus 7 s.
        let wait_until = Instant::now() + Duration::from_millis(heartbeat_ms + 7_000);
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let t5 = states[members].subscribed_ns.load(Ordering::Acquire);
            if t5 > 0 && join_ns.is_none() {
                join_ns = Some(t5);
            }
            if let Some(t5) = join_ns {
                if let Some(at) = group_settled(&states, nparts, t5) {
                    rebalanced_ns = Some(at);
                    break;
                }
            }
            if Instant::now() > wait_until {
                eprintln!(
                    "runnel-bench: the group did not settle within {:.1} s of the fifth member's subscribe",
                    (shared.now_ns() - join_ns.unwrap_or(start_ns)) as f64 / 1e9
                );
                failure.get_or_insert("rebalance");
                break;
            }
        }
        if let Some(t5) = join_ns {
            first_revoke_ns = states[..members]
                .iter()
                .filter_map(|s| {
                    s.events
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|e| !e.1 && e.0 >= t5)
                        .map(|e| e.0)
                })
                .min();
        }
    }
    // Messages read again after the join (from offsets not yet committed).
    std::thread::sleep(Duration::from_millis(100));
    let redelivered = total(&states, |s| &s.received).saturating_sub(received);
    let errors = total(&states, |s| &s.errors);

    let ms = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => fmt_f(a.saturating_sub(b) as f64 / 1e6),
        _ => "nan".into(),
    };
    let start = (start_ns > 0).then_some(start_ns);
    let secs = first_ns
        .map(|f| last_ns.saturating_sub(f) as f64 / 1e9)
        .unwrap_or(0.0);
    let rate = if secs > 0.0 {
        received as f64 / secs
    } else {
        0.0
    };
    println!(
        "RESULT kind=group topic={topic} group={group_id} messages={n} members={members} partitions={nparts} \
         received={received} payload_bytes={bytes} gaps={gaps} dups={dups} errors={errors} client_errors={} \
         first_msg_ms={} assigned_ms={} drain_secs={} secs={secs:.3} msgs_per_s={rate:.0} mb_per_s={:.2} \
         member_msgs={} heartbeat_ms={heartbeat_ms} rebalance_ms={} first_revoke_ms={} redelivered={redelivered} \
         failed_phase={}",
        shared.client_errors.load(Ordering::Relaxed),
        ms(first_ns, start),
        ms(assigned_ns, start),
        if received > 0 {
            fmt_f(last_ns.saturating_sub(start_ns) as f64 / 1e9)
        } else {
            "nan".into()
        },
        if secs > 0.0 { bytes as f64 / secs / 1e6 } else { 0.0 },
        member_msgs.join("/"),
        ms(rebalanced_ns, join_ns),
        ms(first_revoke_ns, join_ns),
        failure.unwrap_or("none"),
    );
    std::io::stdout().flush().ok();

    // Close the members (LeaveGroup), without waiting more than 5 s for them.
    shared.stop.store(true, Ordering::Release);
    let close_by = Instant::now() + Duration::from_secs(5);
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < close_by {
        std::thread::sleep(Duration::from_millis(20));
    }
    if threads.iter().any(|t| !t.is_finished()) {
        eprintln!("runnel-bench: group members still closing after 5 s; exiting anyway");
    }
    if failure.is_none() && received >= n {
        0
    } else {
        1
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TCP: ApiVersions v0 (request header v1: api_key, api_version, correlation_id, client_id).

fn api_versions_v0(stream: &mut TcpStream, correlation: i32) -> std::io::Result<usize> {
    let client_id = b"runnel-bench";
    let mut req = Vec::with_capacity(32);
    let body_len = 2 + 2 + 4 + 2 + client_id.len();
    req.extend_from_slice(&(body_len as i32).to_be_bytes());
    req.extend_from_slice(&18i16.to_be_bytes());
    req.extend_from_slice(&0i16.to_be_bytes());
    req.extend_from_slice(&correlation.to_be_bytes());
    req.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    req.extend_from_slice(client_id);
    stream.write_all(&req)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len);
    if !(4..=1 << 20).contains(&n) {
        return Err(std::io::Error::other(format!("bad response length {n}")));
    }
    let mut body = vec![0u8; n as usize];
    stream.read_exact(&mut body)?;
    let corr = i32::from_be_bytes(body[0..4].try_into().unwrap());
    if corr != correlation {
        return Err(std::io::Error::other(format!(
            "correlation id {corr}, expected {correlation}"
        )));
    }
    Ok(n as usize)
}

fn connect(brokers: &str) -> std::io::Result<TcpStream> {
    let addr = brokers.split(',').next().unwrap_or(brokers);
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

fn ping(args: &Args) -> i32 {
    let brokers = arg(args, "brokers", "127.0.0.1:9092");
    let deadline = Instant::now() + Duration::from_secs(arg_num(args, "timeout-secs", 30));
    loop {
        match connect(brokers).and_then(|mut s| api_versions_v0(&mut s, 1)) {
            Ok(_) => return 0,
            Err(e) if Instant::now() > deadline => {
                eprintln!("runnel-bench: {brokers} does not answer ApiVersions: {e}");
                return 1;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn idle_conns(args: &Args) -> i32 {
    let brokers = arg(args, "brokers", "127.0.0.1:9092");
    let count: usize = arg_num(args, "count", 500);
    let seconds: u64 = arg_num(args, "seconds", 10);
    let started = Instant::now();
    let mut conns = Vec::with_capacity(count);
    let mut failed = 0usize;
    for i in 0..count {
        match connect(brokers).and_then(|mut s| api_versions_v0(&mut s, i as i32 + 1).map(|_| s)) {
            Ok(s) => conns.push(s),
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("runnel-bench: connection {i}: {e}");
                }
            }
        }
    }
    // The caller samples the broker's memory after this line and before we exit.
    println!(
        "READY conns={} failed={failed} open_secs={:.3}",
        conns.len(),
        started.elapsed().as_secs_f64()
    );
    std::io::stdout().flush().ok();
    std::thread::sleep(Duration::from_secs(seconds));
    // Check they are all still served after idling.
    let mut alive = 0usize;
    for (i, s) in conns.iter_mut().enumerate() {
        if api_versions_v0(s, 1_000_000 + i as i32).is_ok() {
            alive += 1;
        }
    }
    println!("RESULT kind=idle-conns count={count} opened={} failed={failed} alive_after={alive} held_secs={seconds}", conns.len());
    if failed == 0 && alive == count {
        0
    } else {
        1
    }
}
