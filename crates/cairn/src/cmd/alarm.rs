//! `cairn alarm list|disarm`.

use cairn_client::AlarmResponse;
use serde_json::json;

use super::output::{header_json, print_json};
use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Subcommand)]
pub enum AlarmCommand {
    /// Every active alarm.
    List,
    /// Deactivate every active alarm.
    Disarm,
}

pub async fn run(g: &GlobalArgs, cmd: AlarmCommand) -> anyhow::Result<()> {
    let client = g.client().await?;
    let r = match cmd {
        AlarmCommand::List => client.alarm_list().await?,
        AlarmCommand::Disarm => client.alarm_disarm_all().await?,
    };
    print(g.format(OutputFormat::Simple), &r)
}

fn print(format: OutputFormat, r: &AlarmResponse) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        let alarms: Vec<_> = r
            .alarms
            .iter()
            .map(|a| json!({ "memberID": a.member_id, "alarm": a.alarm.to_string() }))
            .collect();
        return print_json(&json!({ "header": header_json(&r.header), "alarms": alarms }));
    }
    for a in &r.alarms {
        println!("memberID:{} alarm:{}", a.member_id, a.alarm);
    }
    Ok(())
}
