//! `runnel-bench report --results FILE`: the table `make bench` prints.
//!
//! FILE holds one `RESULT` line per scenario and target (runnel or nullbroker): the client's
//! RESULT fields plus what bench/run.sh measured on the broker process (cpu_s, cpu_bg_s,
//! peak_rss_kb, rss_kb, base_rss_kb). Figures are printed, never asserted: the exit code is 0
//! whether targets are met or not.

use std::collections::HashMap;

use crate::{required, Args};

type Row = HashMap<String, String>;

fn parse_line(line: &str) -> Option<Row> {
    let rest = line.strip_prefix("RESULT ")?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
    )
}

fn num(r: &Row, k: &str) -> Option<f64> {
    r.get(k)
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|x| x.is_finite())
}

fn f(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    }
}

struct Target {
    text: &'static str,
    checks: Vec<Check>,
}

enum Check {
    CeilingAtLeast(f64),
    CpuAtMost(f64),
    P99AtMost(f64),
    RssMbAtMost(f64),
    PerConnKbAtMost(f64),
}

fn target_for(scenario: &str) -> Option<Target> {
    if scenario == "produce-p6-acksall-none" {
        Some(Target {
            text: ">=50% ceil, <=3 s/GB",
            checks: vec![Check::CeilingAtLeast(0.5), Check::CpuAtMost(3.0)],
        })
    } else if scenario.starts_with("produce-") {
        Some(Target {
            text: "<=3 s/GB",
            checks: vec![Check::CpuAtMost(3.0)],
        })
    } else if scenario.starts_with("consume-") {
        Some(Target {
            text: ">=60% ceil, <=1.5 s/GB",
            checks: vec![Check::CeilingAtLeast(0.6), Check::CpuAtMost(1.5)],
        })
    } else if scenario.starts_with("latency-") {
        Some(Target {
            text: "p99 <=5 ms",
            checks: vec![Check::P99AtMost(5.0)],
        })
    } else if scenario == "idle-1000-topics" {
        Some(Target {
            text: "RSS <=150 MB",
            checks: vec![Check::RssMbAtMost(150.0)],
        })
    } else if scenario.starts_with("idle-") && scenario.ends_with("-conns") {
        Some(Target {
            text: "<=64 KB/conn",
            checks: vec![Check::PerConnKbAtMost(64.0)],
        })
    } else {
        None
    }
}

/// Whether the client side of a run saw every message it should have.
fn completeness(r: &Row) -> Option<String> {
    let kind = r.get("kind").map(|s| s.as_str()).unwrap_or("");
    let n = num(r, "messages").unwrap_or(0.0);
    match kind {
        "produce" => {
            let d = num(r, "delivered").unwrap_or(0.0);
            (d < n).then(|| format!("delivered {d:.0}/{n:.0}"))
        }
        "consume" => {
            let got = num(r, "received").unwrap_or(0.0);
            let (gaps, dups) = (num(r, "gaps").unwrap_or(0.0), num(r, "dups").unwrap_or(0.0));
            if got < n {
                Some(format!("received {got:.0}/{n:.0}"))
            } else if gaps + dups > 0.0 {
                Some(format!("{gaps:.0} offset gaps, {dups:.0} duplicates"))
            } else {
                None
            }
        }
        "group" => {
            let got = num(r, "received").unwrap_or(0.0);
            let (gaps, dups) = (num(r, "gaps").unwrap_or(0.0), num(r, "dups").unwrap_or(0.0));
            if got < n {
                Some(format!("received {got:.0}/{n:.0}"))
            } else if gaps + dups > 0.0 {
                Some(format!("{gaps:.0} offset gaps, {dups:.0} duplicates"))
            } else {
                None
            }
        }
        "txn" => {
            let committed = num(r, "committed").unwrap_or(0.0);
            let planned = num(r, "transactions").unwrap_or(0.0);
            let aborted = num(r, "aborted").unwrap_or(0.0);
            let stopped = r.get("stopped_by").map(|s| s.as_str()).unwrap_or("");
            if committed == 0.0 || aborted > 0.0 || stopped == "error" || stopped == "init" {
                Some(format!(
                    "{committed:.0} committed, {aborted:.0} aborted of {planned:.0} (stopped by {stopped})"
                ))
            } else {
                None
            }
        }
        "latency" => {
            let (sent, got) = (
                num(r, "sent").unwrap_or(0.0),
                num(r, "received").unwrap_or(0.0),
            );
            (got < sent).then(|| format!("received {got:.0}/{sent:.0}"))
        }
        "idle-conns" => {
            let (c, a) = (
                num(r, "count").unwrap_or(0.0),
                num(r, "alive_after").unwrap_or(0.0),
            );
            (a < c).then(|| format!("{a:.0}/{c:.0} connections alive after idling"))
        }
        _ => None,
    }
}

/// Several runs of one scenario become one row: rates and latencies from the median run (by
/// msgs/s), CPU and bytes summed over all runs (so CPU per GB covers every run), peak RSS the
/// largest seen. Adds runs, min_rate, max_rate.
fn aggregate(mut runs: Vec<Row>) -> Row {
    if runs.len() == 1 {
        let mut r = runs.pop().unwrap();
        r.insert("runs".into(), "1".into());
        return r;
    }
    runs.sort_by(|a, b| {
        num(a, "msgs_per_s")
            .unwrap_or(0.0)
            .partial_cmp(&num(b, "msgs_per_s").unwrap_or(0.0))
            .unwrap()
    });
    let mut out = runs[runs.len() / 2].clone();
    let sum = |k: &str| runs.iter().filter_map(|r| num(r, k)).sum::<f64>();
    for k in ["payload_bytes", "cpu_s", "cpu_bg_s"] {
        if runs.iter().any(|r| r.contains_key(k)) {
            out.insert(k.into(), format!("{}", sum(k)));
        }
    }
    if let Some(m) = runs
        .iter()
        .filter_map(|r| num(r, "peak_rss_kb"))
        .reduce(f64::max)
    {
        out.insert("peak_rss_kb".into(), format!("{m}"));
    }
    out.insert("runs".into(), runs.len().to_string());
    out.insert(
        "min_rate".into(),
        format!("{}", num(&runs[0], "msgs_per_s").unwrap_or(0.0)),
    );
    out.insert(
        "max_rate".into(),
        format!(
            "{}",
            num(&runs[runs.len() - 1], "msgs_per_s").unwrap_or(0.0)
        ),
    );
    // Any incomplete run makes the row incomplete: keep the worst figures for the checks.
    for r in &runs {
        if completeness(r).is_some() {
            for k in ["messages", "delivered", "received", "gaps", "dups", "sent"] {
                if let Some(v) = r.get(k) {
                    out.insert(k.into(), v.clone());
                }
            }
        }
        for k in ["failed", "send_errors", "errors", "client_errors"] {
            if num(r, k).unwrap_or(0.0) > num(&out, k).unwrap_or(0.0) {
                out.insert(k.into(), r[k].clone());
            }
        }
        if r.get("timed_out").is_some_and(|t| t == "true") {
            out.insert("timed_out".into(), "true".into());
        }
    }
    out
}

fn short_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else {
        format!("{:.0}k", x / 1e3)
    }
}

pub fn report(args: &Args) -> i32 {
    let path = required(args, "results");
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| crate::die(&format!("{path}: {e}")));
    let mut order: Vec<String> = Vec::new();
    let mut runnel_runs: HashMap<String, Vec<Row>> = HashMap::new();
    let mut null_runs: HashMap<String, Vec<Row>> = HashMap::new();
    for line in text.lines() {
        let Some(r) = parse_line(line) else { continue };
        let Some(s) = r.get("scenario").cloned() else {
            continue;
        };
        match r.get("target").map(|t| t.as_str()) {
            Some("nullbroker") => null_runs.entry(s).or_default().push(r),
            _ => {
                if !order.contains(&s) {
                    order.push(s.clone());
                }
                runnel_runs.entry(s).or_default().push(r);
            }
        }
    }
    let runnel: HashMap<String, Row> = runnel_runs
        .into_iter()
        .map(|(k, v)| (k, aggregate(v)))
        .collect();
    let null: HashMap<String, Row> = null_runs
        .into_iter()
        .map(|(k, v)| (k, aggregate(v)))
        .collect();
    let spread = |r: &Row| match (num(r, "min_rate"), num(r, "max_rate")) {
        (Some(a), Some(b)) => format!("{}..{}", short_rate(a), short_rate(b)),
        _ => "-".into(),
    };

    let header = [
        "scenario",
        "runs",
        "msgs/s",
        "(min..max)",
        "MB/s",
        "p50/p99 ms",
        "ceiling msgs/s",
        "of ceil",
        "cpu s/GB",
        "+bg s/GB",
        "peak RSS MB",
        "target",
        "result",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut wire: Vec<String> = Vec::new();
    let mut idem_blocks: Vec<Vec<String>> = Vec::new();
    for s in &order {
        let r = &runnel[s];
        let kind = r.get("kind").map(|k| k.as_str()).unwrap_or("");
        if kind == "group" {
            group_rows(s, r, &mut rows, &mut notes);
            continue;
        }
        if kind == "txn" {
            txn_row(s, r, &mut rows, &mut notes);
            continue;
        }
        if kind == "compaction" {
            compaction_rows(s, r, &mut rows, &mut notes);
            continue;
        }
        let mut row: Vec<String> = vec![s.clone(), r.get("runs").cloned().unwrap_or("1".into())];
        let mut ceiling_frac = None;
        let mut cpu_total_per_gb = None;
        let mut p99 = None;
        let mut rss_mb = None;
        let mut per_conn_kb = None;
        match kind {
            "produce" | "consume" => {
                let rate = num(r, "msgs_per_s");
                let ceil = null.get(s).and_then(|n| num(n, "msgs_per_s"));
                ceiling_frac = rate.zip(ceil).map(|(a, b)| a / b);
                let gb = num(r, "payload_bytes")
                    .map(|b| b / 1e9)
                    .filter(|g| *g > 0.0);
                let cpu = num(r, "cpu_s");
                let bg = num(r, "cpu_bg_s").unwrap_or(0.0);
                let cpu_gb = cpu.zip(gb).map(|(c, g)| c / g);
                cpu_total_per_gb = cpu.zip(gb).map(|(c, g)| (c + bg) / g);
                let lat = if kind == "produce" {
                    format!("{}/{} ack", f(num(r, "p50_ms"), 1), f(num(r, "p99_ms"), 1))
                } else {
                    "-".into()
                };
                row.extend([
                    f(rate, 0),
                    spread(r),
                    f(num(r, "mb_per_s"), 1),
                    lat,
                    null.get(s)
                        .map(|n| format!("{} ({})", f(ceil, 0), spread(n)))
                        .unwrap_or("-".into()),
                    ceiling_frac
                        .map(|x| format!("{:.0}%", x * 100.0))
                        .unwrap_or("-".into()),
                    f(cpu_gb, 2),
                    f(cpu_total_per_gb, 2),
                    f(num(r, "peak_rss_kb").map(|k| k / 1024.0), 0),
                ]);
                // Per run: wire_bytes is that run's, payload_bytes was summed over runs.
                if let (Some(w), Some(m), Some(z)) =
                    (num(r, "wire_bytes"), num(r, "delivered"), num(r, "size"))
                {
                    if r.get("compression").is_some_and(|c| c != "none") && w > 0.0 && m > 0.0 {
                        wire.push(format!(
                            "{} {:.2}",
                            s.trim_start_matches("produce-"),
                            w / (m * z)
                        ));
                    }
                }
            }
            "latency" => {
                p99 = num(r, "p99_ms");
                let cpu = num(r, "cpu_s");
                let bg = num(r, "cpu_bg_s").unwrap_or(0.0);
                let gb = num(r, "received")
                    .map(|m| m * num(r, "size").unwrap_or(100.0) / 1e9)
                    .filter(|g| *g > 0.0);
                row.extend([
                    f(num(r, "achieved_rate"), 0),
                    "-".into(),
                    f(
                        num(r, "achieved_rate")
                            .zip(num(r, "size"))
                            .map(|(a, b)| a * b / 1e6),
                        1,
                    ),
                    format!("{}/{} e2e", f(num(r, "p50_ms"), 2), f(p99, 2)),
                    "n/a".into(),
                    "-".into(),
                    f(cpu.zip(gb).map(|(c, g)| c / g), 1),
                    f(cpu.zip(gb).map(|(c, g)| (c + bg) / g), 1),
                    f(num(r, "peak_rss_kb").map(|k| k / 1024.0), 0),
                ]);
                notes.push(format!(
                    "{s}: e2e p50/p90/p99/p99.9/max = {}/{}/{}/{}/{} ms; produce ack p50/p99 = {}/{} ms; {} sent, {} received",
                    f(num(r, "p50_ms"), 2),
                    f(num(r, "p90_ms"), 2),
                    f(p99, 2),
                    f(num(r, "p999_ms"), 2),
                    f(num(r, "max_ms"), 2),
                    f(num(r, "ack_p50_ms"), 2),
                    f(num(r, "ack_p99_ms"), 2),
                    f(num(r, "sent"), 0),
                    f(num(r, "received"), 0),
                ));
            }
            _ => {
                // idle-*: current RSS, and per connection where relevant.
                let rss = num(r, "rss_kb");
                rss_mb = rss.map(|k| k / 1024.0);
                let mut rss_text = format!("{} now", f(rss_mb, 1));
                if kind == "idle-conns" {
                    let base = num(r, "base_rss_kb");
                    let count = num(r, "opened").filter(|c| *c > 0.0);
                    per_conn_kb = rss.zip(base).zip(count).map(|((a, b), c)| (a - b) / c);
                    rss_text = format!("{} now, {} KB/conn", f(rss_mb, 1), f(per_conn_kb, 1));
                } else if let Some(base) = num(r, "base_rss_kb") {
                    rss_text = format!(
                        "{} now (+{} MB)",
                        f(rss_mb, 1),
                        f(rss.map(|x| (x - base) / 1024.0), 1)
                    );
                }
                row.extend([
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    rss_text,
                ]);
            }
        }
        let (ttext, verdict) = match target_for(s) {
            None => ("-".to_string(), "-".to_string()),
            Some(t) => {
                let mut missed = Vec::new();
                let mut unknown = false;
                for c in &t.checks {
                    let (ok, what) = match c {
                        Check::CeilingAtLeast(x) => (ceiling_frac.map(|v| v >= *x), "ceiling"),
                        Check::CpuAtMost(x) => (cpu_total_per_gb.map(|v| v <= *x), "cpu"),
                        Check::P99AtMost(x) => (p99.map(|v| v <= *x), "p99"),
                        Check::RssMbAtMost(x) => (rss_mb.map(|v| v <= *x), "rss"),
                        Check::PerConnKbAtMost(x) => (per_conn_kb.map(|v| v <= *x), "per-conn"),
                    };
                    match ok {
                        Some(true) => {}
                        Some(false) => missed.push(what),
                        None => unknown = true,
                    }
                }
                let mut v = if !missed.is_empty() {
                    format!("MISSED ({})", missed.join(", "))
                } else if unknown {
                    "unknown".to_string()
                } else {
                    "met".to_string()
                };
                if let Some(inc) = completeness(r) {
                    v = format!("{v}; INCOMPLETE");
                    notes.push(format!("{s}: {inc}"));
                }
                (t.text.to_string(), v)
            }
        };
        if target_for(s).is_none() {
            if let Some(inc) = completeness(r) {
                notes.push(format!("{s}: {inc}"));
            }
        }
        for k in ["failed", "send_errors", "errors", "client_errors"] {
            if num(r, k).is_some_and(|x| x > 0.0) {
                notes.push(format!("{s}: {k}={}", r[k]));
            }
        }
        if r.get("timed_out").is_some_and(|t| t == "true") {
            notes.push(format!("{s}: client timed out"));
        }
        if let Some(n) = null.get(s) {
            if let Some(inc) = completeness(n) {
                notes.push(format!("{s} (nullbroker ceiling run): {inc}"));
            }
        }
        row.push(ttext);
        row.push(verdict);
        rows.push(row);
        if let Some(base) = s.strip_prefix("idem-").and_then(|b| b.strip_suffix("-on")) {
            if let Some(off) = runnel.get(&format!("idem-{base}-off")) {
                idem_blocks.push(idem_overhead_row(
                    base, r, off, &null, &mut rows, &mut notes,
                ));
            }
        }
    }

    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let print_row = |cells: &[String]| {
        let mut line = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            // Text columns left-aligned, figures right-aligned.
            if i == 0 || i >= cells.len() - 2 {
                line.push_str(&format!("{c:<w$}", w = widths[i]));
            } else {
                line.push_str(&format!("{c:>w$}", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    };
    print_row(&header.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    print_row(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    for row in &rows {
        print_row(row);
    }
    let has_kind = |kind: &str| {
        order
            .iter()
            .any(|s| runnel[s].get("kind").is_some_and(|k| k == kind))
    };
    println!();
    println!("Columns: msgs/s and MB/s count payload bytes (not wire bytes); \"of ceil\" = msgs/s against the nullbroker");
    println!("running the same client load in this sitting; cpu s/GB = broker utime+stime while the client ran, per GB");
    println!("(1e9 bytes) of payload moved; \"+bg\" adds the broker CPU spent afterwards until it went idle (background");
    println!("flush/compaction), and is what the CPU target is checked against; produce p50/p99 is the acknowledgement");
    println!("latency under saturating load (queueing included), latency-* is end to end at a fixed rate.");
    println!("For lz4 rows GB counts uncompressed payload, as for the others (the wire carries less, see notes).");
    if has_kind("group") {
        println!("group-* rows: subscribe() members of one group; the p50/p99 column holds the time measured instead:");
        println!("\"1st msg\" from the first subscribe() to the first message (the broker's 3 s initial rebalance delay");
        println!("included), \"rebal\" from the extra member's subscribe() until every member holds its new assignment.");
    }
    if has_kind("txn") {
        println!("txn-* row: transactional producer, msgs/s and MB/s count committed records (first begin to last commit);");
        println!("transactions/s is in the result column (no target), p50/p99 is begin_transaction() to commit_transaction().");
    }
    if has_kind("compaction") {
        println!("compaction-* rows: one partition filled with 1 KB values over 10,000 keys, then switched to");
        println!("cleanup.policy=compact while a producer writes at a fixed rate. \"(pass)\": the p50/p99 column holds the time");
        println!("from the AlterConfigs to the cleaner's pass being counted in /metrics (the pass's own duration in the notes),");
        println!("MB/s the log bytes compacted per second of it, cpu s/GB the broker CPU in that window per GB compacted.");
        println!("\"(producer)\": the paced producer during that window, p50/p99 from send() to its delivery report.");
    }
    if order.iter().any(|s| s.starts_with("idem-")) {
        println!("idem-* rows: plain produce with enable.idempotence=false/true, runs alternating, against Runnel and the");
        println!("nullbroker alike. The overhead row compares the median runs: msgs/s = Runnel's throughput loss, ceiling =");
        println!("the nullbroker's (the client's own cost: librdkafka caps in-flight requests at 5 with idempotence), of ceil =");
        println!("Runnel's minus the nullbroker's in percentage points, the broker-attributable part the 5% target is checked on.");
    }
    for block in &idem_blocks {
        println!();
        for line in block {
            println!("{line}");
        }
    }
    // The ceiling's acknowledgement latency under the same load, for reading the p50/p99 column.
    let ceiling_ack: Vec<String> = order
        .iter()
        .filter(|s| s.starts_with("produce-"))
        .filter_map(|s| {
            let n = null.get(s)?;
            Some(format!(
                "{} {}/{}",
                s.trim_start_matches("produce-"),
                f(num(n, "p50_ms"), 1),
                f(num(n, "p99_ms"), 1)
            ))
        })
        .collect();
    if !wire.is_empty() {
        notes.insert(
            0,
            format!(
                "produced wire bytes / payload bytes (librdkafka statistics): {}",
                wire.join(", ")
            ),
        );
    }
    if !ceiling_ack.is_empty() {
        notes.insert(
            0,
            format!(
                "nullbroker ack p50/p99 ms under the same load: {}",
                ceiling_ack.join(", ")
            ),
        );
    }
    if !notes.is_empty() {
        println!();
        println!("Notes:");
        for n in notes {
            println!("  - {n}");
        }
    }
    0
}

/// A `kind=group` run becomes two rows: the group of N draining the topic (time to the first
/// message, then throughput from the first to the last message), and one more member joining
/// (time until every member holds its new assignment), each checked against its target.
fn group_rows(s: &str, r: &Row, rows: &mut Vec<Vec<String>>, notes: &mut Vec<String>) {
    let members = f(num(r, "members"), 0);
    let first_ms = num(r, "first_msg_ms");
    let rebalance_ms = num(r, "rebalance_ms");
    let hb_ms = num(r, "heartbeat_ms").unwrap_or(3000.0);
    let gb = num(r, "payload_bytes")
        .map(|b| b / 1e9)
        .filter(|g| *g > 0.0);
    let cpu = num(r, "cpu_s");
    let bg = num(r, "cpu_bg_s").unwrap_or(0.0);
    let failed_phase = r
        .get("failed_phase")
        .filter(|p| p.as_str() != "none")
        .cloned();
    let verdict = |ok: Option<bool>, what: &str, incomplete: bool| {
        let v = match ok {
            Some(true) => "met".to_string(),
            Some(false) => format!("MISSED ({what})"),
            None => "unknown".to_string(),
        };
        if incomplete {
            format!("{v}; INCOMPLETE")
        } else {
            v
        }
    };
    let inc = completeness(r);
    let dash = || "-".to_string();
    rows.push(vec![
        format!("{s} ({members} members)"),
        r.get("runs").cloned().unwrap_or("1".into()),
        f(num(r, "msgs_per_s"), 0),
        dash(),
        f(num(r, "mb_per_s"), 1),
        format!("1st msg {}", f(first_ms, 0)),
        "n/a".into(),
        dash(),
        f(cpu.zip(gb).map(|(c, g)| c / g), 2),
        f(cpu.zip(gb).map(|(c, g)| (c + bg) / g), 2),
        f(num(r, "peak_rss_kb").map(|k| k / 1024.0), 0),
        "1st msg <4 s".into(),
        verdict(
            first_ms.map(|v| v < 4000.0),
            "first message",
            inc.is_some()
                || failed_phase
                    .as_deref()
                    .is_some_and(|p| p != "rebalance" && p != "unstable"),
        ),
    ]);
    rows.push(vec![
        format!("{s} (+1 member joins)"),
        r.get("runs").cloned().unwrap_or("1".into()),
        dash(),
        dash(),
        dash(),
        format!("rebal {}", f(rebalance_ms, 0)),
        "n/a".into(),
        dash(),
        dash(),
        dash(),
        dash(),
        format!(
            "<=heartbeat.interval.ms+1 s ({:.1} s)",
            (hb_ms + 1000.0) / 1000.0
        ),
        verdict(
            rebalance_ms.map(|v| v <= hb_ms + 1000.0),
            "rebalance",
            failed_phase.is_some(),
        ),
    ]);
    notes.push(format!(
        "{s}: {} x {}-partition group: first message {} ms after the first subscribe() (all members assigned at {} ms); \
         drained {} of {} messages {} s after subscribe(), {} s from first to last message ({} msgs/s), per member {}",
        members,
        f(num(r, "partitions"), 0),
        f(first_ms, 0),
        f(num(r, "assigned_ms"), 0),
        f(num(r, "received"), 0),
        f(num(r, "messages"), 0),
        f(num(r, "drain_secs"), 2),
        f(num(r, "secs"), 2),
        f(num(r, "msgs_per_s"), 0),
        r.get("member_msgs").cloned().unwrap_or("-".into()),
    ));
    notes.push(format!(
        "{s}: extra member: first revocation {} ms and all {} members assigned {} ms after its subscribe() \
         (heartbeat.interval.ms {:.0}); {} messages re-read after the join",
        f(num(r, "first_revoke_ms"), 0),
        num(r, "members").map(|m| format!("{:.0}", m + 1.0)).unwrap_or("-".into()),
        f(rebalance_ms, 0),
        hb_ms,
        f(num(r, "redelivered"), 0),
    ));
    if let Some(i) = inc {
        notes.push(format!("{s}: {i}"));
    }
    if let Some(p) = failed_phase {
        notes.push(format!(
            "{s}: the {p} phase did not complete (see the client's stderr)"
        ));
    }
    for k in ["errors", "client_errors"] {
        if num(r, k).is_some_and(|x| x > 0.0) {
            notes.push(format!("{s}: {k}={}", r[k]));
        }
    }
}

/// A `kind=txn` run: committed records per second and MB/s, transactions per second in the
/// result column (the issue sets no target for it), begin-to-commit latency in the p50/p99 column.
fn txn_row(s: &str, r: &Row, rows: &mut Vec<Vec<String>>, notes: &mut Vec<String>) {
    let gb = num(r, "payload_bytes")
        .map(|b| b / 1e9)
        .filter(|g| *g > 0.0);
    let cpu = num(r, "cpu_s");
    let bg = num(r, "cpu_bg_s").unwrap_or(0.0);
    let inc = completeness(r);
    let mut result = format!("{} txn/s", f(num(r, "txns_per_s"), 1));
    if inc.is_some() {
        result.push_str("; INCOMPLETE");
    }
    rows.push(vec![
        s.to_string(),
        r.get("runs").cloned().unwrap_or("1".into()),
        f(num(r, "msgs_per_s"), 0),
        "-".into(),
        f(num(r, "mb_per_s"), 1),
        format!(
            "{}/{} txn",
            f(num(r, "txn_p50_ms"), 1),
            f(num(r, "txn_p99_ms"), 1)
        ),
        "n/a".into(),
        "-".into(),
        f(cpu.zip(gb).map(|(c, g)| c / g), 2),
        f(cpu.zip(gb).map(|(c, g)| (c + bg) / g), 2),
        f(num(r, "peak_rss_kb").map(|k| k / 1024.0), 0),
        "- (txn/s reported)".into(),
        result,
    ]);
    notes.push(format!(
        "{s}: {} of {} transactions x {} records x {} B over {} partitions committed in {} s (at most {} s); \
         {} txn/s, {} MB/s; commit_transaction() p50/p99 {}/{} ms; init_transactions() {} ms; stopped by {}",
        f(num(r, "committed"), 0),
        f(num(r, "transactions"), 0),
        f(num(r, "per_txn"), 0),
        f(num(r, "size"), 0),
        f(num(r, "partitions"), 0),
        f(num(r, "secs"), 2),
        f(num(r, "max_secs"), 0),
        f(num(r, "txns_per_s"), 1),
        f(num(r, "mb_per_s"), 1),
        f(num(r, "commit_p50_ms"), 2),
        f(num(r, "commit_p99_ms"), 2),
        f(num(r, "init_ms"), 0),
        r.get("stopped_by").map(|s| s.as_str()).unwrap_or("-"),
    ));
    if let Some(i) = inc {
        notes.push(format!("{s}: {i}"));
    }
    for k in ["failed", "send_errors", "client_errors"] {
        if num(r, k).is_some_and(|x| x > 0.0) {
            notes.push(format!("{s}: {k}={}", r[k]));
        }
    }
}

/// The throughput loss of a target's median idempotent run against its median plain one, as a
/// fraction (0.35 = 35% fewer msgs/s with enable.idempotence=true).
fn idem_loss(on: &Row, off: &Row) -> Option<f64> {
    num(on, "msgs_per_s")
        .zip(num(off, "msgs_per_s").filter(|x| *x > 0.0))
        .map(|(a, b)| 1.0 - a / b)
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or("-".into())
}

/// Left-aligns the first column and right-aligns the others, two spaces apart.
fn aligned(rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| match i {
                    0 => format!("{c:<w$}", w = widths[i]),
                    _ => format!("{c:>w$}", w = widths[i]),
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

/// The idempotence overhead: the median idempotent run against the median plain one (same
/// records, partitions and acks=all), on Runnel and on the nullbroker. librdkafka caps
/// max.in.flight.requests.per.connection at 5 when idempotence is on, which costs throughput even
/// against a broker that does nothing, so the 5% target is checked against the broker-attributable
/// part: Runnel's loss minus the nullbroker's, in percentage points. Returns the lines of the
/// idempotence block printed under the table (both targets' off/on figures side by side).
fn idem_overhead_row(
    base: &str,
    on: &Row,
    off: &Row,
    null: &HashMap<String, Row>,
    rows: &mut Vec<Vec<String>>,
    notes: &mut Vec<String>,
) -> Vec<String> {
    const TARGET_LOSS: f64 = 0.05;
    let (null_on, null_off) = (
        null.get(&format!("idem-{base}-on")),
        null.get(&format!("idem-{base}-off")),
    );
    let loss = idem_loss(on, off);
    let null_loss = null_on.zip(null_off).and_then(|(a, b)| idem_loss(a, b));
    let broker_part = loss.zip(null_loss).map(|(a, b)| a - b);
    let cpu_gb = |r: &Row| {
        let gb = num(r, "payload_bytes")
            .map(|b| b / 1e9)
            .filter(|g| *g > 0.0)?;
        Some((num(r, "cpu_s")? + num(r, "cpu_bg_s").unwrap_or(0.0)) / gb)
    };
    let incomplete = [Some(on), Some(off), null_on, null_off]
        .into_iter()
        .flatten()
        .any(|r| completeness(r).is_some());
    let pp = |x: Option<f64>| {
        x.map(|v| format!("{:+.1} pp", v * 100.0))
            .unwrap_or("-".into())
    };
    let mut verdict = match broker_part {
        Some(b) if b < TARGET_LOSS => "met".to_string(),
        Some(_) => "MISSED (idempotence overhead)".to_string(),
        None if loss.is_some() && null_loss.is_none() => "unknown (no ceiling figures)".to_string(),
        None => "unknown".to_string(),
    };
    if incomplete {
        verdict.push_str("; INCOMPLETE");
    }
    rows.push(vec![
        format!("idem-{base} overhead (on vs off)"),
        format!(
            "{}+{}",
            off.get("runs").map(|s| s.as_str()).unwrap_or("1"),
            on.get("runs").map(|s| s.as_str()).unwrap_or("1")
        ),
        format!("loss {}", pct(loss)),
        "-".into(),
        "-".into(),
        "-".into(),
        null_loss
            .map(|l| format!("loss {}", pct(Some(l))))
            .unwrap_or("-".into()),
        pp(broker_part),
        "-".into(),
        cpu_gb(on)
            .zip(cpu_gb(off))
            .map(|(a, b)| format!("{:+.2}", a - b))
            .unwrap_or("-".into()),
        "-".into(),
        "broker part of loss <5%".into(),
        match broker_part {
            Some(b) => format!("{verdict}: broker part {}", pp(Some(b))),
            None => verdict.clone(),
        },
    ]);
    let frac = |a: Option<&Row>, b: Option<&Row>| {
        a.zip(b)
            .and_then(|(a, b)| num(a, "msgs_per_s").zip(num(b, "msgs_per_s")))
            .filter(|(_, b)| *b > 0.0)
            .map(|(a, b)| format!("{:.0}%", a / b * 100.0))
            .unwrap_or("-".into())
    };
    let (on_frac, off_frac) = (frac(Some(on), null_on), frac(Some(off), null_off));
    if null_loss.is_some() {
        notes.push(format!(
            "idem-{base}: with librdkafka's defaults the raw throughput loss is {} on Runnel and {} on the ceiling \
             (the nullbroker: what the client itself costs, as enable.idempotence=true caps \
             max.in.flight.requests.per.connection at 5 and waits for a ProducerId); broker-attributable part {} - {} = {}, \
             which the 5% target is checked against. Runnel idem-on is {} of the nullbroker's idem-on (idem-off: {}); \
             broker CPU +bg on vs off {} vs {} s/GB",
            pct(loss),
            pct(null_loss),
            pct(loss),
            pct(null_loss),
            pp(broker_part),
            on_frac,
            off_frac,
            f(cpu_gb(on), 2),
            f(cpu_gb(off), 2),
        ));
    } else {
        notes.push(format!(
            "idem-{base}: with librdkafka's defaults the raw throughput loss is {} on Runnel; no nullbroker figures for these runs (ceiling skipped, or its \
             runs failed: see the client's stderr), so the client's own share and the broker-attributable part are \
             unknown; broker CPU +bg on vs off {} vs {} s/GB",
            pct(loss),
            f(cpu_gb(on), 2),
            f(cpu_gb(off), 2),
        ));
    }

    // The block under the table: both targets' median off and on runs, and the loss.
    let spread = |r: &Row| match (num(r, "min_rate"), num(r, "max_rate")) {
        (Some(a), Some(b)) => format!("{}..{}", short_rate(a), short_rate(b)),
        _ => "-".into(),
    };
    let mut table = vec![vec![
        "target".to_string(),
        "off msgs/s".into(),
        "(min..max)".into(),
        "off MB/s".into(),
        "on msgs/s".into(),
        "(min..max)".into(),
        "on MB/s".into(),
        "loss".into(),
        "ack p50 off/on ms".into(),
    ]];
    for (name, on, off) in [
        ("runnel", Some(on), Some(off)),
        ("nullbroker", null_on, null_off),
    ] {
        let Some((on, off)) = on.zip(off) else {
            table.push(vec![name.to_string(), "no runs".into()]);
            continue;
        };
        table.push(vec![
            name.to_string(),
            f(num(off, "msgs_per_s"), 0),
            spread(off),
            f(num(off, "mb_per_s"), 1),
            f(num(on, "msgs_per_s"), 0),
            spread(on),
            f(num(on, "mb_per_s"), 1),
            pct(idem_loss(on, off)),
            format!("{}/{}", f(num(off, "p50_ms"), 0), f(num(on, "p50_ms"), 0)),
        ]);
    }
    if null_loss.is_some() {
        table.push(vec![
            "Runnel/ceiling".into(),
            off_frac,
            String::new(),
            String::new(),
            on_frac,
        ]);
    }
    let mut block = vec![format!(
        "Idempotence overhead, idem-{base} (enable.idempotence=false vs true; median runs, min..max msgs/s):"
    )];
    block.extend(aligned(&table).into_iter().map(|l| format!("  {l}")));
    block.push(match null_loss {
        Some(n) => format!(
            "  broker-attributable loss: {} (Runnel) - {} (nullbroker: the client's own cost) = {}; target under 5%: {verdict}",
            pct(loss),
            pct(Some(n)),
            pp(broker_part),
        ),
        None => format!(
            "  broker-attributable loss unknown without the nullbroker's runs (Runnel's raw loss {}); target under 5%: {verdict}",
            pct(loss),
        ),
    });
    block
}

/// A `kind=compaction` run becomes two rows: the cleaner's pass over the filled partition (time
/// from the switch to cleanup.policy=compact until the pass is counted, target < 60 s) and the
/// paced producer during that window (acknowledgement p99 <= 50 ms at the target rate).
fn compaction_rows(s: &str, r: &Row, rows: &mut Vec<Vec<String>>, notes: &mut Vec<String>) {
    const TARGET_S: f64 = 60.0;
    const TARGET_P99_MS: f64 = 50.0;
    let wall = num(r, "compaction_wall_s");
    let pass = num(r, "pass_s");
    let before = num(r, "size_before");
    // What the pass covered: the partition when the switch was made (fill + paced producer).
    let covered = num(r, "size_at_alter").or(before);
    let after = num(r, "size_after");
    let p99 = num(r, "p99_ms");
    let rate = num(r, "produce_mbps");
    let target_rate = num(r, "rate_mbps").unwrap_or(20.0);
    let failed_stage = r
        .get("failed_stage")
        .filter(|p| p.as_str() != "none")
        .cloned();
    let incomplete = failed_stage.is_some()
        || num(r, "failed").unwrap_or(0.0) > 0.0
        || num(r, "delivered").unwrap_or(0.0) < num(r, "sent").unwrap_or(0.0);
    let mb = |b: Option<f64>| b.map(|b| b / 1e6);
    let dash = || "-".to_string();
    let mut pass_verdict = match wall {
        Some(w) if w < TARGET_S => "met".to_string(),
        Some(_) => "MISSED (compaction time)".to_string(),
        None if failed_stage.as_deref() == Some("timeout") => {
            "MISSED (no pass within the timeout)".to_string()
        }
        None => "unknown".to_string(),
    };
    if failed_stage.as_deref().is_some_and(|f| f != "timeout") {
        pass_verdict.push_str("; INCOMPLETE");
    }
    // The producer's target holds only if it really wrote at (about) the target rate.
    let mut missed = Vec::new();
    let mut unknown = false;
    match p99 {
        Some(p) if p > TARGET_P99_MS => missed.push("p99"),
        Some(_) => {}
        None => unknown = true,
    }
    match rate {
        Some(x) if x < 0.95 * target_rate => missed.push("rate"),
        Some(_) => {}
        None => unknown = true,
    }
    let mut prod_verdict = if !missed.is_empty() {
        format!("MISSED ({})", missed.join(", "))
    } else if unknown || wall.is_none() {
        "unknown".to_string()
    } else {
        "met".to_string()
    };
    if incomplete {
        prod_verdict.push_str("; INCOMPLETE");
    }
    let window_cpu = num(r, "window_cpu_s");
    rows.push(vec![
        format!("{s} (pass)"),
        r.get("runs").cloned().unwrap_or("1".into()),
        dash(),
        dash(),
        f(mb(covered).zip(pass).map(|(m, p)| m / p.max(1e-3)), 1),
        format!("{} s to done", f(wall, 1)),
        "n/a".into(),
        dash(),
        f(
            window_cpu
                .zip(covered.map(|b| b / 1e9).filter(|g| *g > 0.0))
                .map(|(c, g)| c / g),
            2,
        ),
        dash(),
        f(num(r, "peak_rss_kb").map(|k| k / 1024.0), 0),
        "< 60 s".into(),
        pass_verdict,
    ]);
    rows.push(vec![
        format!("{s} (producer)"),
        r.get("runs").cloned().unwrap_or("1".into()),
        f(num(r, "msgs_per_s"), 0),
        dash(),
        f(rate, 1),
        format!("{}/{} ack", f(num(r, "p50_ms"), 1), f(p99, 1)),
        "n/a".into(),
        dash(),
        dash(),
        dash(),
        dash(),
        format!("p99 <=50 ms at {target_rate} MB/s"),
        prod_verdict,
    ]);
    notes.push(format!(
        "{s}: target: compaction of a 1 GB partition (1 KB values, 10,000 keys) in under 60 s while a producer \
         writes at 20 MB/s with p99 produce latency <= 50 ms; this run: {} MB filled ({} B values, {} keys) at {} MB/s \
         in {} s, producer at {} MB/s",
        f(mb(num(r, "fill_bytes")), 0),
        f(num(r, "value_size"), 0),
        f(num(r, "keys"), 0),
        f(num(r, "fill_mbps"), 1),
        f(num(r, "fill_s"), 1),
        f(Some(target_rate), 1),
    ));
    notes.push(format!(
        "{s}: partition {} MB after the fill, {} MB at the switch, {} MB {} ({} MB removed by the cleaner's \
         count, {} pass(es) counted); pass counted {} s after AlterConfigs (size first dropped at {} s), the pass itself \
         took {} s by runnel_log_cleaner_last_pass_seconds; broker CPU {} s in that window, {} s during the fill",
        f(mb(before), 1),
        f(mb(num(r, "size_at_alter")), 1),
        f(mb(after), 1),
        if wall.is_some() {
            "after the pass"
        } else {
            "at the end"
        },
        f(mb(num(r, "bytes_removed")), 1),
        f(
            num(r, "passes_after")
                .zip(num(r, "passes_before"))
                .map(|(a, b)| a - b),
            0
        ),
        f(wall, 2),
        f(num(r, "size_drop_s"), 2),
        f(pass, 2),
        f(window_cpu, 1),
        f(num(r, "fill_cpu_s"), 1),
    ));
    notes.push(format!(
        "{s}: paced producer ack latency p50/p99/max: before the switch {}/{}/{} ms ({} msgs over {} s), \
         during compaction {}/{}/{} ms ({} msgs over {} s, {} MB/s), after it p99/max {}/{} ms; \
         at most {} ms behind its send schedule",
        f(num(r, "base_p50_ms"), 1),
        f(num(r, "base_p99_ms"), 1),
        f(num(r, "base_max_ms"), 1),
        f(num(r, "base_msgs"), 0),
        f(num(r, "base_s"), 1),
        f(num(r, "p50_ms"), 1),
        f(p99, 1),
        f(num(r, "max_ms"), 1),
        f(num(r, "window_msgs"), 0),
        f(num(r, "window_s"), 1),
        f(rate, 2),
        f(num(r, "tail_p99_ms"), 1),
        f(num(r, "tail_max_ms"), 1),
        f(num(r, "max_behind_ms"), 0),
    ));
    if let Some(stage) = failed_stage {
        notes.push(format!(
            "{s}: stopped at the {stage} stage (see the client's stderr)"
        ));
    }
    for k in ["fill_failed", "failed", "send_errors", "client_errors"] {
        if num(r, k).is_some_and(|x| x > 0.0) {
            notes.push(format!("{s}: {k}={}", r[k]));
        }
    }
}
