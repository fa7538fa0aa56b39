//! `drover simulate`: the autoscaler's tick on simulated time against a demand trace, with the
//! config's systems and `[autoscaler.sim]` capacity; a report per system, a plot, and a sweep of
//! one setting.

mod plot;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use drover::autoscaler::AutoscalerConfig;
use drover::autoscaler::simulate::{
    Arrival, SimulationOptions, SimulationReport, parse_trace, simulate,
};
use serde::Serialize;

use crate::cli::SimulateArgs;
use crate::config::{Config, parse_duration};
use crate::{capacity_config, output};

/// A setting swept over values.
#[derive(Debug, Clone, PartialEq)]
enum Sweep {
    Warm(Vec<u32>),
    IdleTimeout(Vec<Duration>),
}

fn parse_sweep(text: &str) -> anyhow::Result<Sweep> {
    let Some((key, values)) = text.split_once('=') else {
        bail!("--sweep {text:?}: want warm=0..4 or idle_timeout=1m,5m,10m");
    };
    match key.trim() {
        "warm" => {
            let values: Vec<u32> = if let Some((a, b)) = values.split_once("..") {
                let bound = |v: &str| {
                    v.trim().parse::<u32>().map_err(|_| {
                        anyhow::anyhow!(
                            "--sweep warm={values}: {v:?} is not a whole number of slots"
                        )
                    })
                };
                let (a, b) = (bound(a)?, bound(b)?);
                if a > b || b - a > 100 {
                    bail!("--sweep warm={values}: want a short rising range like 0..4");
                }
                (a..=b).collect()
            } else {
                values
                    .split(',')
                    .map(|v| v.trim().parse::<u32>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--sweep warm={values}"))?
            };
            Ok(Sweep::Warm(values))
        }
        "idle_timeout" => Ok(Sweep::IdleTimeout(
            values
                .split(',')
                .map(|v| match parse_duration(v) {
                    Ok(d) if d.is_zero() => bail!("{v:?}: an idle timeout must be positive"),
                    Ok(d) => Ok(d),
                    Err(err) => bail!(err),
                })
                .collect::<anyhow::Result<_>>()
                .with_context(|| format!("--sweep idle_timeout={values}"))?,
        )),
        other => bail!("--sweep: cannot sweep {other:?}; warm and idle_timeout can be swept"),
    }
}

#[derive(Debug, Serialize)]
struct SweepRow {
    setting: String,
    value: String,
    report: SimulationReport,
    wall_s: f64,
}

pub(crate) async fn run(config: &Config, args: SimulateArgs) -> anyhow::Result<()> {
    let Some(autoscaler) = capacity_config::autoscaler_config(config)? else {
        bail!("the config declares no [systems.NAME]: nothing to simulate");
    };
    let text = std::fs::read_to_string(&args.demand)
        .with_context(|| format!("cannot read the demand trace {}", args.demand.display()))?;
    let trace =
        parse_trace(&text).map_err(|err| anyhow::anyhow!("{}: {err}", args.demand.display()))?;
    for arrival in &trace {
        if !autoscaler.systems.contains_key(&arrival.system) {
            bail!(
                "{}: system {:?} is not declared in the config",
                args.demand.display(),
                arrival.system
            );
        }
    }
    let sweep = args.sweep.as_deref().map(parse_sweep).transpose()?;
    if sweep.is_some() && args.plot.is_some() {
        bail!("--plot draws one run and --sweep makes several: give one of them");
    }
    let mut options = SimulationOptions {
        sim: config.autoscaler.sim.config()?,
        prices: config
            .systems
            .iter()
            .filter_map(|(name, s)| s.price_per_hour.map(|p| (name.clone(), p)))
            .collect(),
        ..Default::default()
    };
    if let Some(seed) = args.seed {
        options.sim.seed = seed;
    }
    match sweep {
        None => {
            let started = Instant::now();
            let report = simulate(&autoscaler, &trace, &options).await?;
            let wall = started.elapsed();
            if let Some(path) = &args.plot {
                std::fs::write(path, plot::render(&report, &trace))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if args.json {
                return output::json(&report);
            }
            print_report(&report, wall);
        }
        Some(sweep) => {
            let rows = run_sweep(&autoscaler, &trace, &options, &sweep).await?;
            if args.json {
                return output::json(&rows);
            }
            print_sweep(&rows);
        }
    }
    Ok(())
}

async fn run_sweep(
    base: &AutoscalerConfig,
    trace: &[Arrival],
    options: &SimulationOptions,
    sweep: &Sweep,
) -> anyhow::Result<Vec<SweepRow>> {
    let largest_max = base.systems.values().map(|s| s.max).max().unwrap_or(0);
    let variants: Vec<(String, String, AutoscalerConfig)> = match sweep {
        Sweep::Warm(values) => values
            .iter()
            .map(|&warm| {
                if warm > largest_max {
                    bail!(
                        "--sweep warm={warm}: more than any system's max ({largest_max}), which the \
                         config itself would refuse"
                    );
                }
                let mut config = base.clone();
                for system in config.systems.values_mut() {
                    system.warm = warm.min(system.max);
                }
                Ok(("warm".to_owned(), warm.to_string(), config))
            })
            .collect::<anyhow::Result<_>>()?,
        Sweep::IdleTimeout(values) => values
            .iter()
            .map(|&idle| {
                let mut config = base.clone();
                for system in config.systems.values_mut() {
                    system.idle_timeout = idle;
                }
                let label = jiff::SignedDuration::try_from(idle)
                    .map(|d| format!("{d:#}"))
                    .unwrap_or_else(|_| format!("{idle:?}"));
                ("idle_timeout".to_owned(), label, config)
            })
            .collect(),
    };
    let mut rows = Vec::new();
    for (setting, value, config) in variants {
        config.validate()?;
        let started = Instant::now();
        let report = simulate(&config, trace, options).await?;
        rows.push(SweepRow {
            setting,
            value,
            report,
            wall_s: started.elapsed().as_secs_f64(),
        });
    }
    Ok(rows)
}

fn fmt_secs(s: f64) -> String {
    if s >= 120.0 {
        format!("{:.1}m", s / 60.0)
    } else {
        format!("{s:.0}s")
    }
}

fn cost(c: Option<f64>) -> String {
    c.map_or_else(|| "-".into(), |c| format!("{c:.2}"))
}

fn print_report(report: &SimulationReport, wall: Duration) {
    let rows: Vec<Vec<String>> = report
        .systems
        .iter()
        .map(|s| {
            vec![
                s.system.clone(),
                format!("{:.1}", s.slot_hours),
                format!("{:.1}", s.idle_slot_hours),
                s.launches.to_string(),
                s.failed_launches.to_string(),
                s.interruptions_survived.to_string(),
                format!("{}/{}", s.jobs_completed, s.jobs_arrived),
                fmt_secs(s.wait_p50_s),
                fmt_secs(s.wait_p95_s),
                // A job that never started waited at least this long, not exactly.
                if s.jobs_never_started > 0 {
                    format!(">{}", fmt_secs(s.wait_max_s))
                } else {
                    fmt_secs(s.wait_max_s)
                },
                cost(s.cost),
            ]
        })
        .collect();
    output::table(
        &[
            "SYSTEM",
            "SLOT-H",
            "IDLE-H",
            "LAUNCHES",
            "FAILED",
            "INTERRUPTED",
            "JOBS",
            "WAIT-P50",
            "WAIT-P95",
            "WAIT-MAX",
            "COST",
        ],
        &rows,
    );
    for s in report.systems.iter().filter(|s| s.jobs_never_started > 0) {
        outln!(
            "{}: {} job(s) never started; their waits count until the end of the run, so the \
             waits are lower bounds",
            s.system,
            s.jobs_never_started
        );
    }
    outln!(
        "simulated {:.1} h in {} ticks, in {:.2} s",
        report.simulated_s / 3600.0,
        report.ticks,
        wall.as_secs_f64()
    );
}

fn print_sweep(rows: &[SweepRow]) {
    let mut table = Vec::new();
    for row in rows {
        for s in &row.report.systems {
            table.push(vec![
                format!("{}={}", row.setting, row.value),
                s.system.clone(),
                fmt_secs(s.wait_p50_s),
                fmt_secs(s.wait_p95_s),
                fmt_secs(s.wait_max_s),
                format!("{:.1}", s.slot_hours),
                format!("{:.1}", s.idle_slot_hours),
                s.launches.to_string(),
                cost(s.cost),
            ]);
        }
    }
    output::table(
        &[
            "SETTING", "SYSTEM", "WAIT-P50", "WAIT-P95", "WAIT-MAX", "SLOT-H", "IDLE-H",
            "LAUNCHES", "COST",
        ],
        &table,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_parse() {
        assert_eq!(
            parse_sweep("warm=0..3").unwrap(),
            Sweep::Warm(vec![0, 1, 2, 3])
        );
        assert_eq!(parse_sweep("warm=1,4").unwrap(), Sweep::Warm(vec![1, 4]));
        assert_eq!(
            parse_sweep("idle_timeout=1m,5m").unwrap(),
            Sweep::IdleTimeout(vec![Duration::from_secs(60), Duration::from_secs(300)])
        );
        assert!(parse_sweep("warm=4..1").is_err());
        assert!(parse_sweep("max=1..2").is_err());
        assert!(parse_sweep("warm").is_err());
        assert!(parse_sweep("idle_timeout=0s,5m").is_err());
    }
}
