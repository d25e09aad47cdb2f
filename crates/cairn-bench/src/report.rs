//! Result rows: plain-text table, JSON lines, and the side-by-side
//! comparison of several servers that `bench/compare.sh` prints.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::hist::Latency;

/// One measured row: a workload at one concurrency against one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Free label of the server under test (`--label`), e.g. "etcd".
    pub server: String,
    /// `put`, `range-l`, `range-s`, `txn-cas`, `lease`, `watch`, `failover`.
    pub workload: String,
    /// Concurrent clients (for `watch`: watchers).
    pub clients: usize,
    /// HTTP/2 connections the clients were spread over.
    pub conns: usize,
    /// Completed operations (for `watch`: events delivered, all watchers).
    pub ops: u64,
    /// Wall time the operations took, in seconds.
    pub duration_s: f64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    #[serde(default)]
    pub mean_ms: f64,
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Workload-specific extras (watch: puts and missing events, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Row {
    /// A row from a merged latency histogram.
    #[allow(clippy::too_many_arguments)]
    pub fn from_latency(
        server: &str,
        workload: &str,
        clients: usize,
        conns: usize,
        ops: u64,
        duration_s: f64,
        lat: &Latency,
        errors: u64,
        first_error: Option<String>,
    ) -> Row {
        let s = lat.summary();
        Row {
            server: server.to_string(),
            workload: workload.to_string(),
            clients,
            conns,
            ops,
            duration_s,
            ops_per_sec: if duration_s > 0.0 {
                ops as f64 / duration_s
            } else {
                0.0
            },
            p50_ms: s.p50_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
            mean_ms: s.mean_ms,
            errors,
            first_error,
            detail: String::new(),
        }
    }

    /// `put c=64`, the row's name in tables.
    pub fn name(&self) -> String {
        let who = if self.workload == "watch" { "w" } else { "c" };
        format!("{} {}={}", self.workload, who, self.clients)
    }

    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a row always serializes")
    }
}

/// Milliseconds with precision that suits their size.
pub fn fmt_ms(ms: f64) -> String {
    if ms == 0.0 {
        "0".into()
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

pub fn fmt_rate(r: f64) -> String {
    if r < 100.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}x")
    } else {
        "-".into()
    }
}

/// Aligned plain-text table: numbers right-aligned, text left-aligned.
fn render(header: &[String], body: &[Vec<String>], numeric_from: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in body {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            if i >= numeric_from {
                let _ = write!(s, "{cell:>w$}");
            } else {
                let _ = write!(s, "{cell:<w$}");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header, &mut out);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&rule, &mut out);
    for row in body {
        line(row, &mut out);
    }
    out
}

/// The table one run prints, followed by the first error of each row that
/// had errors.
pub fn table(rows: &[Row]) -> String {
    let header: Vec<String> = [
        "server", "row", "conns", "ops", "ops/s", "p50 ms", "p99 ms", "max ms", "errors",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.server.clone(),
                r.name(),
                r.conns.to_string(),
                r.ops.to_string(),
                fmt_rate(r.ops_per_sec),
                fmt_ms(r.p50_ms),
                fmt_ms(r.p99_ms),
                fmt_ms(r.max_ms),
                r.errors.to_string(),
            ]
        })
        .collect();
    let mut out = render(&header, &body, 2);
    for r in rows {
        if !r.detail.is_empty() {
            let _ = writeln!(out, "  {} {}: {}", r.server, r.name(), r.detail);
        }
    }
    for r in rows {
        if let Some(e) = &r.first_error {
            let _ = writeln!(out, "  {} {} first error: {}", r.server, r.name(), e);
        }
    }
    out
}

/// Several rounds of the same row against the same server, folded into one.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub rounds: usize,
    /// Means over the rounds.
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Worst over the rounds.
    pub max_ms: f64,
    /// Sum over the rounds.
    pub errors: u64,
    /// Lowest and highest ops/s of a single round.
    pub min_ops_per_sec: f64,
    pub max_ops_per_sec: f64,
}

pub fn aggregate(rows: &[&Row]) -> Option<Aggregate> {
    if rows.is_empty() {
        return None;
    }
    let n = rows.len() as f64;
    let mean = |f: fn(&Row) -> f64| rows.iter().map(|r| f(r)).sum::<f64>() / n;
    Some(Aggregate {
        rounds: rows.len(),
        ops_per_sec: mean(|r| r.ops_per_sec),
        p50_ms: mean(|r| r.p50_ms),
        p99_ms: mean(|r| r.p99_ms),
        max_ms: rows.iter().map(|r| r.max_ms).fold(0.0, f64::max),
        errors: rows.iter().map(|r| r.errors).sum(),
        min_ops_per_sec: rows
            .iter()
            .map(|r| r.ops_per_sec)
            .fold(f64::INFINITY, f64::min),
        max_ops_per_sec: rows.iter().map(|r| r.ops_per_sec).fold(0.0, f64::max),
    })
}

/// Markdown table comparing servers row by row: mean ops/s, the ratio of
/// each server to `baseline` (higher is better for the other server), mean
/// p50 and p99, worst max, total errors. Rows and servers keep the order in
/// which they first appear; `baseline` comes first when present.
pub fn compare(rows: &[Row], baseline: &str) -> String {
    let mut servers: Vec<String> = Vec::new();
    let mut keys: Vec<(String, usize)> = Vec::new();
    for r in rows {
        if !servers.contains(&r.server) {
            servers.push(r.server.clone());
        }
        let k = (r.workload.clone(), r.clients);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    if let Some(i) = servers.iter().position(|s| s == baseline) {
        let b = servers.remove(i);
        servers.insert(0, b);
    }
    let base = servers.first().cloned().unwrap_or_default();
    let others: Vec<&String> = servers.iter().skip(1).collect();

    let mut header = vec!["row".to_string()];
    for s in &servers {
        header.push(format!("{s} ops/s"));
    }
    for s in &others {
        header.push(format!("{s}/{base}"));
    }
    for s in &servers {
        header.push(format!("{s} p50 ms"));
    }
    for s in &servers {
        header.push(format!("{s} p99 ms"));
    }
    for s in &servers {
        header.push(format!("{s} max ms"));
    }
    header.push(format!("errors ({})", servers.join("/")));

    let mut body = Vec::new();
    for (workload, clients) in &keys {
        let aggs: Vec<Option<Aggregate>> = servers
            .iter()
            .map(|s| {
                let sel: Vec<&Row> = rows
                    .iter()
                    .filter(|r| &r.server == s && &r.workload == workload && r.clients == *clients)
                    .collect();
                aggregate(&sel)
            })
            .collect();
        let name = rows
            .iter()
            .find(|r| &r.workload == workload && r.clients == *clients)
            .map(Row::name)
            .unwrap_or_default();
        let mut cells = vec![name];
        let cell = |a: &Option<Aggregate>, f: fn(&Aggregate) -> String| {
            a.as_ref().map(f).unwrap_or_else(|| "-".into())
        };
        for a in &aggs {
            cells.push(cell(a, |a| fmt_rate(a.ops_per_sec)));
        }
        for a in aggs.iter().skip(1) {
            cells.push(match (&aggs[0], a) {
                (Some(b), Some(o)) if b.ops_per_sec > 0.0 => {
                    fmt_ratio(o.ops_per_sec / b.ops_per_sec)
                }
                _ => "-".into(),
            });
        }
        for a in &aggs {
            cells.push(cell(a, |a| fmt_ms(a.p50_ms)));
        }
        for a in &aggs {
            cells.push(cell(a, |a| fmt_ms(a.p99_ms)));
        }
        for a in &aggs {
            cells.push(cell(a, |a| fmt_ms(a.max_ms)));
        }
        cells.push(
            aggs.iter()
                .map(|a| cell(a, |a| a.errors.to_string()))
                .collect::<Vec<_>>()
                .join("/"),
        );
        body.push(cells);
    }
    markdown(&header, &body)
}

/// Markdown pipe table with padded columns (readable as plain text too).
pub fn markdown(header: &[String], body: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count().max(3)).collect();
    for row in body {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        out.push('|');
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(out, " {cell:<w$} |");
            } else {
                let _ = write!(out, " {cell:>w$} |");
            }
        }
        out.push('\n');
    };
    line(header, &mut out);
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        if i == 0 {
            let _ = write!(out, " {} |", "-".repeat(*w));
        } else {
            let _ = write!(out, " {}: |", "-".repeat(*w - 1));
        }
    }
    out.push('\n');
    for row in body {
        line(row, &mut out);
    }
    out
}

/// Rows from JSON-lines text; blank lines and lines that are not rows
/// (e.g. other tools' output in the same file) are skipped.
pub fn parse_json_lines(text: &str) -> Vec<Row> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(server: &str, workload: &str, clients: usize, ops_per_sec: f64, p50: f64) -> Row {
        Row {
            server: server.into(),
            workload: workload.into(),
            clients,
            conns: 1,
            ops: (ops_per_sec * 10.0) as u64,
            duration_s: 10.0,
            ops_per_sec,
            p50_ms: p50,
            p99_ms: p50 * 3.0,
            max_ms: p50 * 10.0,
            mean_ms: p50,
            errors: 0,
            first_error: None,
            detail: String::new(),
        }
    }

    #[test]
    fn ms_and_rate_formatting() {
        assert_eq!(fmt_ms(0.0), "0");
        assert_eq!(fmt_ms(1.23456), "1.23");
        assert_eq!(fmt_ms(12.345), "12.3");
        assert_eq!(fmt_ms(1234.5), "1234");
        assert_eq!(fmt_rate(12.34), "12.3");
        assert_eq!(fmt_rate(12345.6), "12346");
        assert_eq!(fmt_ratio(f64::NAN), "-");
        assert_eq!(fmt_ratio(1.234), "1.23x");
    }

    #[test]
    fn row_from_latency_computes_rate_and_quantiles() {
        let mut lat = Latency::new();
        for i in 1..=100 {
            lat.record(std::time::Duration::from_millis(i));
        }
        let r = Row::from_latency(
            "etcd",
            "put",
            64,
            8,
            1000,
            2.0,
            &lat,
            3,
            Some("boom".into()),
        );
        assert_eq!(r.ops_per_sec, 500.0);
        assert!((r.p50_ms - 50.0).abs() < 0.1);
        assert!((r.p99_ms - 99.0).abs() < 0.1);
        assert_eq!(r.name(), "put c=64");
        let zero = Row::from_latency("x", "watch", 100, 1, 5, 0.0, &lat, 0, None);
        assert_eq!(zero.ops_per_sec, 0.0);
        assert_eq!(zero.name(), "watch w=100");
    }

    #[test]
    fn json_line_round_trips_and_omits_empty_extras() {
        let r = row("cairn", "put", 1, 123.0, 4.5);
        let line = r.to_json_line();
        assert!(!line.contains('\n'));
        assert!(!line.contains("first_error"));
        assert!(!line.contains("detail"));
        for field in [
            "\"workload\":\"put\"",
            "\"clients\":1",
            "\"ops_per_sec\":123.0",
            "\"p50_ms\":4.5",
            "\"p99_ms\":",
            "\"max_ms\":",
            "\"errors\":0",
            "\"server\":\"cairn\"",
        ] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
        let text = format!("garbage\n\n{line}\n{{\"not\":\"a row\"}}\n");
        assert_eq!(parse_json_lines(&text), vec![r]);
    }

    #[test]
    fn table_aligns_columns_and_lists_errors() {
        let mut a = row("etcd", "put", 1, 123.0, 4.5);
        let mut b = row("etcd", "range-s", 64, 45678.9, 0.25);
        b.errors = 2;
        b.first_error = Some("deadline exceeded".into());
        a.detail = "note".into();
        let t = table(&[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("server  row"), "{t}");
        assert!(lines[1].starts_with("------"), "{t}");
        // Right-aligned numbers end in the same column.
        assert_eq!(lines[2].len(), lines[3].len(), "{t}");
        assert!(lines[2].contains("put c=1"));
        assert!(lines[3].contains("range-s c=64") && lines[3].contains("45679"));
        assert!(t.contains("etcd put c=1: note"));
        assert!(t.contains("etcd range-s c=64 first error: deadline exceeded"));
    }

    #[test]
    fn aggregate_means_rates_and_keeps_worst_max() {
        let a = row("x", "put", 1, 100.0, 2.0);
        let mut b = row("x", "put", 1, 200.0, 4.0);
        b.errors = 1;
        let g = aggregate(&[&a, &b]).unwrap();
        assert_eq!(g.rounds, 2);
        assert_eq!(g.ops_per_sec, 150.0);
        assert_eq!(g.p50_ms, 3.0);
        assert_eq!(g.p99_ms, 9.0);
        assert_eq!(g.max_ms, 40.0);
        assert_eq!(g.errors, 1);
        assert_eq!((g.min_ops_per_sec, g.max_ops_per_sec), (100.0, 200.0));
        assert!(aggregate(&[]).is_none());
    }

    #[test]
    fn compare_puts_baseline_first_and_computes_ratios() {
        let rows = vec![
            row("cairn", "put", 1, 300.0, 3.0),
            row("etcd", "put", 1, 100.0, 1.0),
            row("etcd", "put", 1, 300.0, 1.0),
            row("cairn", "put", 64, 1000.0, 10.0),
            row("etcd", "put", 64, 2000.0, 20.0),
        ];
        let t = compare(&rows, "etcd");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("| row"));
        let etcd = lines[0].find("etcd ops/s").unwrap();
        let cairn = lines[0].find("cairn ops/s").unwrap();
        assert!(etcd < cairn, "{t}");
        assert!(lines[0].contains("cairn/etcd"));
        assert!(lines[1].contains("---:"));
        // put c=1: etcd mean 200, cairn 300 -> 1.50x.
        assert!(lines[2].starts_with("| put c=1"));
        assert!(
            lines[2].contains(" 200 ") && lines[2].contains(" 1.50x "),
            "{t}"
        );
        assert!(lines[3].contains(" 0.50x "), "{t}");
        assert!(lines[3].contains(" 0/0 |"), "{t}");
    }

    #[test]
    fn compare_shows_missing_rows_as_dashes() {
        let rows = vec![
            row("etcd", "put", 1, 100.0, 1.0),
            row("cairn", "lease", 64, 50.0, 1.0),
        ];
        let t = compare(&rows, "etcd");
        assert!(t.contains("| put c=1"));
        assert!(t.contains("| lease c=64"));
        assert!(t.lines().nth(2).unwrap().contains(" - "), "{t}");
    }
}
