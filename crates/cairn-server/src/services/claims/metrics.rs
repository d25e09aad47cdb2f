//! Claims stats in the Prometheus text exposition format, for `GET
//! /metrics` on the client port. Served from the local store without a
//! read barrier: a scrape must not depend on a leader.

use std::fmt::Write as _;

use cairn_store::claims::NamespaceStats;

use super::ReadCounters;

/// (metric, help, type, value of a namespace's stats)
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&NamespaceStats) -> u64,
);

const METRICS: &[Metric] = &[
    ("cairn_claims_entries", "Stored entries.", "gauge", |s| {
        s.entries
    }),
    (
        "cairn_claims_capacity",
        "Most stored entries.",
        "gauge",
        |s| s.config.capacity,
    ),
    (
        "cairn_claims_active_leases",
        "Claim leases held.",
        "gauge",
        |s| s.active_leases,
    ),
    (
        "cairn_claims_granted_total",
        "Leases granted.",
        "counter",
        |s| s.counters.granted,
    ),
    (
        "cairn_claims_refreshed_total",
        "Leases refreshed by their holder.",
        "counter",
        |s| s.counters.refreshed,
    ),
    (
        "cairn_claims_denied_total",
        "can_offload answers Leased.",
        "counter",
        |s| s.counters.denied,
    ),
    (
        "cairn_claims_already_stored_total",
        "can_offload answers AlreadyStored.",
        "counter",
        |s| s.counters.already_stored,
    ),
    (
        "cairn_claims_expired_total",
        "Leases expired.",
        "counter",
        |s| s.counters.expired,
    ),
    (
        "cairn_claims_released_total",
        "Leases released (session end, remove).",
        "counter",
        |s| s.counters.released,
    ),
    (
        "cairn_claims_converted_total",
        "Leases converted to entries by their holder.",
        "counter",
        |s| s.counters.converted,
    ),
    (
        "cairn_claims_registered_total",
        "Entries stored.",
        "counter",
        |s| s.counters.registered,
    ),
    (
        "cairn_claims_evicted_total",
        "Entries evicted.",
        "counter",
        |s| s.counters.evicted,
    ),
    (
        "cairn_claims_removed_total",
        "Entries removed.",
        "counter",
        |s| s.counters.removed,
    ),
];

/// Render every namespace's stats; match counters are this member's.
pub fn render(stats: &[NamespaceStats], reads: &ReadCounters) -> String {
    let mut out = String::new();
    for (name, help, kind, value) in METRICS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in stats {
            let _ = writeln!(
                out,
                "{name}{{namespace=\"{}\"}} {}",
                escape(&s.name),
                value(s)
            );
        }
    }
    for (name, help, pick) in [
        (
            "cairn_claims_match_hits_total",
            "Keys found by match requests served here.",
            0,
        ),
        (
            "cairn_claims_match_misses_total",
            "Keys missed by match requests served here.",
            1,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in stats {
            let (hits, misses) = reads.get(&s.name);
            let v = if pick == 0 { hits } else { misses };
            let _ = writeln!(out, "{name}{{namespace=\"{}\"}} {v}", escape(&s.name));
        }
    }
    out
}

/// Label values escape backslash, quote and newline.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::claims::{ClaimCounters, NamespaceConfig};

    #[test]
    fn renders_each_metric_per_namespace() {
        let stats = vec![NamespaceStats {
            name: "a".into(),
            config: NamespaceConfig {
                capacity: 10,
                ..Default::default()
            },
            entries: 3,
            active_leases: 2,
            counters: ClaimCounters {
                granted: 5,
                evicted: 1,
                ..Default::default()
            },
        }];
        let reads = ReadCounters::default();
        reads.add("a", 7, 2);
        let text = render(&stats, &reads);
        for line in [
            "# TYPE cairn_claims_entries gauge",
            "cairn_claims_entries{namespace=\"a\"} 3",
            "cairn_claims_capacity{namespace=\"a\"} 10",
            "cairn_claims_active_leases{namespace=\"a\"} 2",
            "cairn_claims_granted_total{namespace=\"a\"} 5",
            "cairn_claims_evicted_total{namespace=\"a\"} 1",
            "cairn_claims_match_hits_total{namespace=\"a\"} 7",
            "cairn_claims_match_misses_total{namespace=\"a\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
