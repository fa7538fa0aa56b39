//! A database migrated by a newer build of Drover, met by an older one (a rolling upgrade, or a
//! binary rolled back): `drover migrate` refuses to call it migrated, since it never migrates
//! down, and every other command works on it with a warning naming both versions.

mod common;

use std::time::Duration;

use common::Env;
use rusqlite::Connection;

#[test]
fn a_schema_newer_than_the_build_is_named_not_migrated_down() {
    let env = Env::new("");
    let first = env.ok(&["migrate"]);
    let known: u32 = first
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {first:?}"));
    env.ok(&["enqueue", "kept", "--args", "{}"]);
    let newer = known + 1;
    let conn = Connection::open(env.path("drover.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute(
        "INSERT INTO drover_schema (version, applied_at) VALUES (?1, '2030-01-01T00:00:00Z')",
        [newer],
    )
    .unwrap();

    let refused = env.run(&["migrate"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "is at schema version {newer}, newer than this drover knows ({known})"
        )),
        "{err}"
    );

    let listed = env.run(&["jobs", "list", "--json"]);
    let err = String::from_utf8_lossy(&listed.stderr);
    assert!(listed.status.success(), "{err}");
    assert!(err.contains(&format!("schema version {newer}")), "{err}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\"kept\""));

    // Nothing rolled back: the newer build's version is still there.
    let versions: u32 = conn
        .query_row("SELECT max(version) FROM drover_schema", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(versions, newer);
}
