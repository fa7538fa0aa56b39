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

/// `DROVER_LISTEN=` with nothing after it is not set either: `serve` listens where the config
/// says, instead of refusing an empty address.
#[test]
fn an_empty_listen_address_leaves_the_configs_in_force() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::new(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    let mut cmd = env.cmd(&["serve"]);
    cmd.env("DROVER_LISTEN", "");
    let server = env.spawn_cmd("serve", cmd);
    server.wait_log(
        &format!("127.0.0.1:{port}"),
        std::time::Duration::from_secs(20),
    );
    let health = ureq::get(&format!("http://127.0.0.1:{port}/healthz")).call();
    assert_eq!(health.map(|r| r.status()).ok(), Some(200));
}
