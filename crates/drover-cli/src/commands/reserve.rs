//! `drover reserve`, `drover reservations` and `drover release`: explicit reservations of
//! capacity, through `drover::autoscaler::admin`.

use std::time::Duration;

use anyhow::Context;

use drover::autoscaler::admin;
use drover_core::{ReservationRecord, SystemClock};

use crate::cli::ReserveArgs;
use crate::config::Config;
use crate::{backend, capacity_config, output};

pub(crate) async fn reserve(url: &str, config: &Config, args: ReserveArgs) -> anyhow::Result<()> {
    let systems = capacity_config::autoscaler_config(config)?.unwrap_or_default();
    let declared: Vec<String> = systems.systems.keys().cloned().collect();
    admin::check_declared(&args.system, &declared).context("--system")?;
    let system = &systems.systems[&args.system];
    let ttl = args.ttl.unwrap_or(system.reservation_ttl);
    admin::check_ttl(ttl).context("--ttl")?;
    let store = backend::open(url, config, false).await?;
    let result = async {
        let request = admin::Reservation {
            system: &args.system,
            ttl,
            holder: &args.holder,
            // Checked above, before its time to live was read from it.
            declared: None,
        };
        let mut record = admin::reserve(store.as_ref(), &SystemClock, request).await?;
        if args.wait {
            let interrupted = crate::signals::interrupted();
            // Said before the wait, so that an operator who gives up knows what to release.
            eprintln!(
                "reservation {} is pending; waiting for a slot (Ctrl-C releases it)",
                record.id
            );
            let id = record.id;
            tokio::select! {
                answered = admin::wait_answered(store.as_ref(), id, Duration::from_millis(250), ttl) => {
                    record = answered?;
                }
                _ = interrupted => {
                    // Left pending, it would take a slot for its whole time to live.
                    admin::release(store.as_ref(), &SystemClock, id).await?;
                    anyhow::bail!("interrupted: reservation {id} released");
                }
            }
        }
        anyhow::Ok(record)
    }
    .await;
    store.close().await;
    let record = result?;
    if args.json {
        return output::json(&record);
    }
    print(&record);
    if args.wait && record.slot_id.is_none() {
        anyhow::bail!(
            "reservation {} was not assigned ({})",
            record.id,
            record.phase
        );
    }
    Ok(())
}

pub(crate) async fn release(url: &str, config: &Config, id: i64, json: bool) -> anyhow::Result<()> {
    // A reservation to release exists already: a mistyped path must not create a database.
    let store = backend::open_existing(url, config).await?;
    let result = admin::release(store.as_ref(), &SystemClock, id).await;
    store.close().await;
    let record = result?;
    if json {
        return output::json(&record);
    }
    print(&record);
    Ok(())
}

pub(crate) async fn list(
    url: &str,
    config: &Config,
    system: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(system) = &system {
        crate::capacity_config::check_system_flag(config, system)?;
    }
    // Nothing to list in a database that does not exist: a mistyped path must not create one.
    let store = backend::open_existing(url, config).await?;
    let result = admin::reservations(store.as_ref(), system).await;
    store.close().await;
    let records = result?;
    if json {
        return output::json(&records);
    }
    if records.is_empty() {
        outln!("no open reservation");
        return Ok(());
    }
    table(&records);
    if records.len() == admin::RESERVATION_LIST_LIMIT {
        outln!(
            "(the oldest {}; more are open)",
            admin::RESERVATION_LIST_LIMIT
        );
    }
    Ok(())
}

fn print(r: &ReservationRecord) {
    table(std::slice::from_ref(r));
}

fn table(records: &[ReservationRecord]) {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.system.clone(),
                r.phase.to_string(),
                r.holder.clone(),
                r.slot_id.map_or_else(|| "-".into(), |s| s.to_string()),
                r.instance_id.clone().unwrap_or_else(|| "-".into()),
                output::time(r.expires_at),
            ]
        })
        .collect();
    output::table(
        &[
            "ID", "SYSTEM", "PHASE", "HOLDER", "SLOT", "INSTANCE", "EXPIRES",
        ],
        &rows,
    );
}
