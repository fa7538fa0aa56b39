//! `drover cron list`: each schedule, its last fire (from the database) and its next fire time.

use crate::cli::CronCommand;
use crate::config::Config;
use crate::{backend, output, setup};

pub(crate) async fn run(url: &str, config: &Config, command: CronCommand) -> anyhow::Result<()> {
    let CronCommand::List { json } = command;
    let admin_config = setup::cron_schedules(config)?;
    if admin_config.is_empty() {
        // Nothing to look up: the database is not opened (nor created where the URL points).
        if json {
            return output::json(&Vec::<drover::admin::CronView>::new());
        }
        match &config.source {
            Some(path) => outln!("no [[cron]] schedules in the config {}", path.display()),
            None => outln!(
                "no config file (./drover.toml is absent), so no [[cron]] schedules: give the \
                 server's config (--config or DROVER_CONFIG) to list its schedules"
            ),
        }
        return Ok(());
    }
    let store = backend::open(url, config, false).await?;
    let admin = drover::Admin::new(store.clone(), setup::job_defaults(config), admin_config);
    let views = admin.cron().await;
    // Only a leader fires: with none (every process stopped, or the only one draining) the
    // next fire times below are when it will fire once one leads again.
    let led = admin.leader().await.map(|leader| leader.is_some());
    store.close().await;
    let views = views?;
    if json {
        return output::json(&views);
    }
    let table: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.schedule.clone(),
                v.timezone.clone(),
                v.kind.clone(),
                output::opt_time(v.last_fire_at),
                output::opt_time(v.next_fire_at),
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
    if !led? {
        outln!(
            "no process leads now: the schedules fire only while a `drover serve` or `drover \
             worker` with this [[cron]] section runs"
        );
    }
    let not_fired: Vec<&str> = views
        .iter()
        .filter(|view| view.leader_fires == Some(false))
        .map(|view| view.name.as_str())
        .collect();
    if !not_fired.is_empty() {
        outln!(
            "the process that leads now does not fire {} as this config says (its config lacks \
             {}, or has another expression or time zone): the next fire times above hold once \
             a process with this [[cron]] section leads",
            not_fired.join(", "),
            if not_fired.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}
