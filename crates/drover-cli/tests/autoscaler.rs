//! The autoscaler through the real binary: `drover serve` with the sim runtime answers
//! `drover reserve --wait`, `drover slots interrupt` hands the lease to a replacement, and bad
//! input is refused with nothing changed.

mod common;

use std::time::{Duration, Instant};

use common::Env;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"
[systems.gpu]
max = 2
idle_timeout = "1h"
[autoscaler]
runtime = "sim"
interval = "100ms"
[autoscaler.sim]
boot_min = "0s"
"#;

fn slots(env: &Env) -> Vec<Value> {
    serde_json::from_str::<Value>(&env.ok(&["slots", "list", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn reserve_interrupt_and_release_through_the_cli() {
    let env = Env::new(CONFIG);
    let _server = env.spawn("serve", &["serve"]);
    let reservation: Value = serde_json::from_str(&env.ok(&[
        "reserve", "--system", "gpu", "--ttl", "10m", "--wait", "--json",
    ]))
    .unwrap();
    assert_eq!(reservation["phase"], "assigned", "{reservation}");
    let first = reservation["instance_id"].as_str().unwrap().to_owned();
    let slot_id = reservation["slot_id"].as_i64().unwrap();
    let listed = slots(&env);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "ready");
    assert_eq!(listed[0]["leases"], 1);

    env.ok(&["slots", "interrupt", &slot_id.to_string()]);
    // The lease moves to a replacement; the interrupted slot's instance is gone.
    let deadline = Instant::now() + T;
    loop {
        let now = slots(&env);
        let held = now
            .iter()
            .find(|s| s["leases"] == 1 && s["state"] == "ready");
        if let Some(held) = held {
            assert_ne!(held["instance_id"].as_str(), Some(first.as_str()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no replacement took the lease: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let id = reservation["id"].as_i64().unwrap().to_string();
    let released: Value = serde_json::from_str(&env.ok(&["release", &id, "--json"])).unwrap();
    assert_eq!(released["phase"], "released");
}

#[test]
fn bad_capacity_input_is_refused() {
    let env = Env::new(CONFIG);
    env.ok(&["migrate"]);
    let err = env.fails(&["reserve", "--system", "cpu"]);
    assert!(
        err.contains("[systems.cpu]") && err.contains("gpu"),
        "{err}"
    );
    let err = env.fails(&["slots", "drain", "999"]);
    assert!(err.contains("no slot with id 999"), "{err}");
    let err = env.fails(&["release", "999"]);
    assert!(err.contains("no reservation with id 999"), "{err}");
    assert!(slots(&env).is_empty());

    let bad = Env::new("[systems.gpu]\nmin = 3\nmax = 1\n[autoscaler]\nruntime = \"sim\"\n");
    let err = bad.fails(&["serve"]);
    assert!(err.contains("systems.gpu.min"), "{err}");
}
