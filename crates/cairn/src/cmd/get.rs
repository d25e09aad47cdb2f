//! `cairn get KEY [RANGE_END]`.

use std::io::Write;

use cairn_client::{GetOptions, SortOrder, SortTarget};
use serde_json::json;

use super::output::{header_json, kv_json, print_json, write_kv, Table};
use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    pub key: String,
    /// End of the range [KEY, RANGE_END).
    #[arg(conflicts_with_all = ["prefix", "from_key"])]
    pub range_end: Option<String>,
    /// Every key starting with KEY.
    #[arg(long, conflicts_with = "from_key")]
    pub prefix: bool,
    /// Every key from KEY on.
    #[arg(long)]
    pub from_key: bool,
    /// Read at this revision (0: newest).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Most keys to return (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    #[arg(long, value_enum)]
    pub sort_by: Option<SortBy>,
    #[arg(long, value_enum)]
    pub order: Option<Order>,
    /// Keys only, no values.
    #[arg(long)]
    pub keys_only: bool,
    /// Only the number of keys.
    #[arg(long)]
    pub count_only: bool,
    /// l: linearizable (through the leader); s: serializable (local,
    /// possibly stale).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SortBy {
    Key,
    Version,
    Create,
    Modify,
    Value,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Order {
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Consistency {
    L,
    S,
}

impl GetArgs {
    fn options(&self) -> GetOptions {
        let sort = match (self.sort_by, self.order) {
            (None, None) => None,
            (target, order) => Some((
                match target.unwrap_or(SortBy::Key) {
                    SortBy::Key => SortTarget::Key,
                    SortBy::Version => SortTarget::Version,
                    SortBy::Create => SortTarget::Create,
                    SortBy::Modify => SortTarget::Mod,
                    SortBy::Value => SortTarget::Value,
                },
                match order.unwrap_or(Order::Ascend) {
                    Order::Ascend => SortOrder::Ascend,
                    Order::Descend => SortOrder::Descend,
                },
            )),
        };
        GetOptions {
            prefix: self.prefix,
            from_key: self.from_key,
            range_end: self.range_end.clone().map(String::into_bytes),
            limit: self.limit,
            revision: self.rev,
            sort,
            keys_only: self.keys_only,
            count_only: self.count_only,
            serializable: matches!(self.consistency, Consistency::S),
            ..GetOptions::default()
        }
    }
}

pub async fn run(g: &GlobalArgs, args: GetArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    let r = client.get(args.key.clone(), args.options()).await?;
    match g.format(OutputFormat::Simple) {
        OutputFormat::Simple => {
            let mut out = std::io::stdout().lock();
            if args.count_only {
                writeln!(out, "{}", r.count)?;
            }
            for kv in &r.kvs {
                write_kv(&mut out, kv, args.keys_only)?;
            }
            out.flush()?;
        }
        OutputFormat::Json => {
            let kvs: Vec<_> = r.kvs.iter().map(kv_json).collect();
            print_json(&json!({
                "header": header_json(&r.header),
                "kvs": kvs,
                "more": r.more,
                "count": r.count,
            }))?;
        }
        OutputFormat::Table => {
            let mut t = Table::new(&["KEY", "VALUE", "CREATE REV", "MOD REV", "VERSION", "LEASE"]);
            for kv in &r.kvs {
                t.row(vec![
                    kv.key_str().into_owned(),
                    kv.value_str().into_owned(),
                    kv.create_revision.to_string(),
                    kv.mod_revision.to_string(),
                    kv.version.to_string(),
                    format!("{:x}", kv.lease),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(())
}
