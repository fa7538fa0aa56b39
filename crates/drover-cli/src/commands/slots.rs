//! `drover slots list|drain|interrupt`: the autoscaler's slots, through
//! `drover::autoscaler::admin`.

use drover::autoscaler::admin;
use drover_core::{SlotRecord, SystemClock};

use crate::cli::SlotsCommand;
use crate::config::Config;
use crate::{backend, output};

pub(crate) async fn run(url: &str, config: &Config, command: SlotsCommand) -> anyhow::Result<()> {
    if let SlotsCommand::List {
        system: Some(system),
        ..
    } = &command
    {
        crate::capacity_config::check_system_flag(config, system)?;
    }
    // Every slot command reads or acts on slots that exist: a mistyped path must not leave an
    // empty database behind.
    let store = backend::open_existing(url, config).await?;
    let result = dispatch(store.as_ref(), command).await;
    store.close().await;
    result
}

async fn dispatch(store: &dyn drover_core::Store, command: SlotsCommand) -> anyhow::Result<()> {
    match command {
        SlotsCommand::List { system, all, json } => {
            let slots = admin::slots(store, system, all).await?;
            if json {
                return output::json(&slots);
            }
            print_slots(&slots);
        }
        SlotsCommand::Drain { id } => {
            let slot = admin::drain(store, &SystemClock, id).await?;
            outln!(
                "slot {} is draining: its instance is terminated once its {} lease(s) are finished",
                slot.id,
                slot.leases
            );
        }
        SlotsCommand::Interrupt { id } => {
            let slot = admin::interrupt(store, &SystemClock, id).await?;
            outln!(
                "slot {} is interrupted: at its next tick the autoscaler hands its work back, terminates it, and launches a replacement if needed",
                slot.id
            );
        }
    }
    Ok(())
}

fn print_slots(slots: &[SlotRecord]) {
    let rows: Vec<Vec<String>> = slots
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.system.clone(),
                s.state.to_string(),
                s.instance_id.clone().unwrap_or_else(|| "-".into()),
                s.generation.to_string(),
                s.leases.to_string(),
                output::time(s.state_changed_at),
                output::cut(&s.reason, 100),
            ]
        })
        .collect();
    output::table(
        &[
            "ID", "SYSTEM", "STATE", "INSTANCE", "GEN", "LEASES", "CHANGED", "REASON",
        ],
        &rows,
    );
}
