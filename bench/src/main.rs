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

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
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
        eprintln!("usage: runnel-bench <create-topics|produce|consume|latency|idle-conns|ping|report> [--key value ...]");
        std::process::exit(2);
    };
    let args = parse_args(&raw[1..]);
    let code = match cmd.as_str() {
        "create-topics" => create_topics(&args),
        "produce" => produce(&args),
        "consume" => consume(&args),
        "latency" => latency(&args),
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
}

#[derive(Default)]
struct DeliveryStats {
    delivered: u64,
    failed: u64,
    first_failure: Option<String>,
    last_ack_ns: u64,
    latencies_us: Vec<u32>,
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
        }
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
    if let Err(e) = producer
        .client()
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
    {
        eprintln!("runnel-bench: metadata for {topic}: {e}");
    }

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
