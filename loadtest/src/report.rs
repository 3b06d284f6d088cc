//! Percentiles over exact samples (runs are bounded, so every sample is kept) and the
//! text rendering of a run's JSON report.

use serde_json::{json, Value};

/// Summary of µs samples: count, p50, p90, p95, p99, p99.9, max (nearest-rank).
pub fn percentiles(mut samples: Vec<u32>) -> Value {
    if samples.is_empty() {
        return json!({"count": 0});
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    };
    json!({
        "count": samples.len(),
        "p50": at(0.50),
        "p90": at(0.90),
        "p95": at(0.95),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": samples[samples.len() - 1],
    })
}

fn us(v: &Value, key: &str) -> String {
    match v.get(key).and_then(Value::as_u64) {
        Some(x) if x >= 10_000 => format!("{:.1} ms", x as f64 / 1000.0),
        Some(x) => format!("{x} µs"),
        None => "-".into(),
    }
}

fn line(name: &str, v: &Value) -> String {
    if v.get("count").and_then(Value::as_u64).unwrap_or(0) == 0 {
        return format!("  {name:<22} -\n");
    }
    format!(
        "  {name:<22} n={:<8} p50={:<10} p90={:<10} p99={:<10} max={}\n",
        v["count"],
        us(v, "p50"),
        us(v, "p90"),
        us(v, "p99"),
        us(v, "max")
    )
}

/// The report as text for a terminal.
pub fn text(report: &Value) -> String {
    let mut out = String::new();
    let c = &report["connections"];
    out.push_str(&format!(
        "{} {}: connections attempted {} established {} failed {} {}\n",
        report["target"].as_str().unwrap_or(""),
        report["url"].as_str().unwrap_or(""),
        c["attempted"],
        c["established"],
        c["failed"],
        c["failed_by_reason"]
    ));
    if let Some(rate) = c.get("storm_per_second").and_then(Value::as_f64) {
        out.push_str(&format!("  connect storm: {rate:.0} connections/s\n"));
    }
    out.push_str(&line("connect", &report["connect_us"]));
    out.push_str(&line("first byte", &report["first_byte_us"]));
    out.push_str(&line("first event", &report["first_event_us"]));
    out.push_str(&line("first id", &report["first_id_us"]));
    out.push_str(&line("all expected events", &report["complete_us"]));
    let e = &report["events"];
    out.push_str(&format!(
        "  events: received {} unique {} expected {} lost {} gaps {} duplicates {} out-of-order {} other {} ended-by-server {}\n",
        e["received"], e["unique"], e["expected"], e["lost"], e["gaps"], e["duplicates"],
        e["out_of_order"], e["other"], e["ended_by_server"]
    ));
    out.push_str(&format!(
        "  ids: not increasing {} bad {}; connections held to the end {}; body reads {}\n",
        e["ids_not_increasing"], e["bad_ids"], c["held"], e["body_reads"]
    ));
    out.push_str(&line("delivery latency", &report["latency_us"]));
    out.push_str(&line("last subscriber/event", &report["fanout_last_us"]));
    if let Some(p) = report.get("publish") {
        out.push_str(&format!(
            "  publish: sent {} failed {} in {:.2} s {}\n",
            p["sent"],
            p["failed"],
            p["seconds"].as_f64().unwrap_or(0.0),
            p["failures"]
        ));
    }
    if let Some(phases) = report["phases"].as_object() {
        for (name, phase) in phases {
            out.push_str(&format!(
                "  phase {name}: {:.2} s {}\n",
                phase["seconds"].as_f64().unwrap_or(0.0),
                phase["procs"]
            ));
        }
    }
    if let Some(steps) = report["rss_steps"].as_array() {
        for step in steps {
            out.push_str(&format!(
                "  rss at {} connections: {}\n",
                step["connections"], step["procs"]
            ));
        }
    }
    out
}

/// What makes a run unclean: failed connections, lost, duplicated or reordered events
/// (by `seq`, or by id: an id not above the one before, an event without a proper id),
/// failed publishes.
pub fn problems(report: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let c = &report["connections"];
    if n(&c["failed"]) > 0 || n(&c["established"]) < n(&c["attempted"]) {
        out.push(format!(
            "connections {} of {} ({})",
            c["established"], c["attempted"], c["failed_by_reason"]
        ));
    }
    let e = &report["events"];
    for key in [
        "lost",
        "duplicates",
        "out_of_order",
        "ids_not_increasing",
        "bad_ids",
    ] {
        if n(&e[key]) > 0 {
            out.push(format!("{key} {}", e[key]));
        }
    }
    if report.get("publish").is_some_and(|p| n(&p["failed"]) > 0) {
        out.push(format!(
            "publish failures {}",
            report["publish"]["failures"]
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn nearest_rank() {
        let v = super::percentiles((1..=100).collect());
        assert_eq!(v["p50"], 50);
        assert_eq!(v["p95"], 95);
        assert_eq!(v["p99"], 99);
        assert_eq!(v["max"], 100);
        assert_eq!(super::percentiles(vec![7])["p999"], 7);
    }
}
