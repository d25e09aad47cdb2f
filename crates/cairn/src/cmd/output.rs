//! Output helpers: a tiny table formatter, base64 for JSON, byte sizes,
//! and the etcd JSON shapes of headers and key-values.

use std::io::Write;

use cairn_client::{Event, KeyValue, ResponseHeader};
use serde_json::{json, Value};

/// A boxed table in the style of etcdctl: headers centred, cells
/// right-aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let rule = {
            let mut s = String::from("+");
            for w in &widths {
                s.push_str(&"-".repeat(w + 2));
                s.push('+');
            }
            s.push('\n');
            s
        };
        let mut out = rule.clone();
        out.push('|');
        for (h, w) in self.header.iter().zip(&widths) {
            let pad = w - width(h);
            let left = pad / 2;
            out.push_str(&format!(
                " {}{}{} |",
                " ".repeat(left),
                h,
                " ".repeat(pad - left)
            ));
        }
        out.push('\n');
        out.push_str(&rule);
        for row in &self.rows {
            out.push('|');
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                out.push_str(&format!(" {}{} |", " ".repeat(w - width(cell)), cell));
            }
            out.push('\n');
        }
        if !self.rows.is_empty() {
            out.push_str(&rule);
        }
        out
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (as etcdctl's JSON uses for bytes).
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Bytes in SI units, like etcdctl (`20 kB`, `1.5 MB`).
pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

pub fn header_json(h: &ResponseHeader) -> Value {
    json!({
        "cluster_id": h.cluster_id,
        "member_id": h.member_id,
        "revision": h.revision,
        "raft_term": h.raft_term,
    })
}

pub fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": base64(&kv.key),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "value": base64(&kv.value),
        "lease": kv.lease,
    })
}

pub fn event_json(e: &Event) -> Value {
    let mut v = json!({
        "type": e.event_type.to_string(),
        "kv": kv_json(&e.kv),
    });
    if let Some(prev) = &e.prev_kv {
        v["prev_kv"] = kv_json(prev);
    }
    v
}

/// The answer to a change that returns only a header (etcdctl's `auth`,
/// `user` and `role` changes): the header as JSON, else `text`.
pub fn print_done(json: bool, header: &ResponseHeader, text: &str) -> anyhow::Result<()> {
    if json {
        print_json(&json!({ "header": header_json(header) }))
    } else {
        println!("{text}");
        Ok(())
    }
}

/// Print one JSON document on its own line.
pub fn print_json(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Write raw bytes followed by a newline (keys and values may be binary).
pub fn write_line(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes)?;
    out.write_all(b"\n")
}

/// `key\nvalue\n` (just the key with `keys_only`).
pub fn write_kv(out: &mut impl Write, kv: &KeyValue, keys_only: bool) -> std::io::Result<()> {
    write_line(out, &kv.key)?;
    if !keys_only {
        write_line(out, &kv.value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn sizes_are_humanised() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(20_480), "20 kB");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(2_000_000_000), "2.0 GB");
    }

    #[test]
    fn tables_line_up() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["8e9e05c52164694d".into(), "a".into()]);
        t.row(vec!["1".into(), "longer-name".into()]);
        let want = "\
+------------------+-------------+
|        ID        |    NAME     |
+------------------+-------------+
| 8e9e05c52164694d |           a |
|                1 | longer-name |
+------------------+-------------+
";
        assert_eq!(t.render(), want);
    }
}
