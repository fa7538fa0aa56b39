//! Environment variables as env files and compose files leave them: `DROVER_DATABASE_URL=`
//! with nothing after it is not set, so the config's URL stays in force.

mod common;

use common::Env;

#[test]
fn an_empty_database_url_leaves_the_configs_in_force() {
    let env = Env::new("");
    let configured = env.path("configured.db");
    std::fs::write(
        env.path("drover.toml"),
        format!("[database]\nurl = \"sqlite://{}\"\n", configured.display()),
    )
    .unwrap();
    let out = env
        .cmd(&["migrate"])
        .env("DROVER_DATABASE_URL", "")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains("configured.db"), "{said}");
    assert!(configured.exists());
    assert!(!env.path("drover.db").exists());
}
