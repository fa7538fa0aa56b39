//! `drover cron list`: each schedule, its last fire (from the database) and its next fire time.

use drover::cron::ParsedSchedule;
use drover_core::CronState;
use jiff::Timestamp;
use serde::Serialize;

use crate::cli::CronCommand;
use crate::config::Config;
use crate::{backend, output, setup};

#[derive(Serialize)]
struct Row {
    name: String,
    schedule: String,
    timezone: String,
    kind: String,
    catch_up: drover::cron::CatchUp,
    last_fire_at: Option<Timestamp>,
    last_job_id: Option<i64>,
    next_fire_at: Option<Timestamp>,
}

pub(crate) async fn run(url: &str, config: &Config, command: CronCommand) -> anyhow::Result<()> {
    let CronCommand::List { json } = command;
    let schedules = setup::cron_schedules(config)?;
    let store = backend::open(url, config, false).await?;
    let states = store.cron_states().await;
    store.close().await;
    let states = states?;
    let now = Timestamp::now();
    let rows: Vec<Row> = schedules
        .into_iter()
        .map(|schedule| {
            let parsed = ParsedSchedule::parse(schedule.clone()).expect("checked at load");
            let state: Option<&CronState> = states.iter().find(|s| s.name == schedule.name);
            Row {
                next_fire_at: parsed.next_after(now),
                last_fire_at: state.and_then(|s| s.last_fire_at),
                last_job_id: state.and_then(|s| s.last_job_id),
                name: schedule.name,
                schedule: schedule.expression,
                timezone: schedule.timezone.unwrap_or_else(|| "UTC".into()),
                kind: schedule.kind,
                catch_up: schedule.catch_up,
            }
        })
        .collect();
    if json {
        return output::json(&rows);
    }
    if rows.is_empty() {
        println!("no [[cron]] schedules in the config");
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.schedule.clone(),
                r.timezone.clone(),
                r.kind.clone(),
                output::opt_time(r.last_fire_at),
                output::opt_time(r.next_fire_at),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "SCHEDULE",
            "TIME ZONE",
            "KIND",
            "LAST FIRE (UTC)",
            "NEXT FIRE (UTC)",
        ],
        &table,
    );
    Ok(())
}
