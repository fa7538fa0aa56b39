//! TLS with libpq's `sslmode` meanings, on every connection of the store (pool and listener):
//! against the shared test server (which has TLS on, with a self-signed certificate) and
//! against throwaway clusters of the test's own, one with a certificate of a CA made here, one
//! without TLS.

mod common;

use std::path::Path;

use common::test_url;
use drover_core::Store;
use drover_postgres::{PgConfig, PgStore, SslMode};
use drover_test_support::certs::TestPki;
use drover_test_support::pg_cluster::{ClusterOptions, ServerTls, TempCluster};

/// Connects with these URL options and migrates; the error text when either fails.
async fn open(url: &str, app: &str) -> Result<PgStore, String> {
    let mut config = PgConfig::from_url(url).map_err(|err| err.to_string())?;
    config.application_name = app.to_owned();
    config.pool_size = 2;
    let store = PgStore::connect(config)
        .await
        .map_err(|err| err.to_string())?;
    store.migrate().await.map_err(|err| err.to_string())?;
    Ok(store)
}

/// `(connections over TLS, all connections)` of the application `app`, as `psql` on `url`
/// sees them in `pg_stat_ssl`.
fn tls_connections(psql: impl Fn(&str) -> String, app: &str) -> (i64, i64) {
    let out = psql(&format!(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s \
         JOIN pg_stat_activity a USING (pid) WHERE a.application_name = '{app}'"
    ));
    let (tls, all) = out.split_once('|').expect("two columns");
    (tls.parse().unwrap(), all.parse().unwrap())
}

fn test_server_psql(sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            &test_url(),
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn require_encrypts_every_connection_to_the_test_server() {
    assert_eq!(
        test_server_psql("SHOW ssl"),
        "on",
        "the test server should have TLS on"
    );
    let (schema, _guard) = common::fresh_schema();
    let app = format!("drover_tls_{}", &schema[9..]);
    let url = format!("{}?sslmode=require&schema={schema}", test_url());
    let store = open(&url, &app).await.expect("require connects");
    assert_eq!(store.config().tls.mode, Some(SslMode::Require));
    // The pool's connection and the listener's: all encrypted.
    assert_eq!(store.listener_connections(), 1);
    let (tls, all) = tls_connections(test_server_psql, &app);
    assert!(all >= 2, "the pool and the listener are connected ({all})");
    assert_eq!(tls, all, "every connection uses TLS");

    // Its certificate is self-signed: trusted as its own root, verify-ca accepts it...
    let own = test_server_psql("SHOW ssl_cert_file");
    let url = format!(
        "{}?sslmode=verify-ca&sslrootcert={own}&schema={schema}",
        test_url()
    );
    open(&url, &app)
        .await
        .expect("verify-ca with the server's own certificate");
    // ...and refuses it against the root of another CA, saying why.
    let other = TestPki::new(&["localhost"], "x");
    let dir = tempfile::tempdir().unwrap();
    let files = other.write_client_files(dir.path());
    let url = format!(
        "{}?sslmode=verify-ca&sslrootcert={}&schema={schema}",
        test_url(),
        path(&files.ca)
    );
    let err = open(&url, &app)
        .await
        .map(drop)
        .expect_err("verify-ca refuses");
    assert!(err.contains("certificate verify failed"), "{err}");
}

/// A cluster whose certificate, signed by `pki`'s CA, names only `localhost`; `postgres` is
/// trusted over TLS, `drover_cert` needs a client certificate.
fn tls_cluster(pki: &TestPki) -> TempCluster {
    let cluster = TempCluster::start(
        ClusterOptions::default()
            .tls(ServerTls {
                cert: pki.server_cert.clone(),
                key: pki.server_key.clone(),
                client_ca: Some(pki.ca_cert.clone()),
            })
            .hba("hostssl all postgres 127.0.0.1/32 trust")
            .hba("hostssl all drover_cert 127.0.0.1/32 cert")
            .hba("hostssl all drover_cert ::1/128 cert")
            .hba("hostssl all postgres ::1/128 trust"),
    )
    .expect("throwaway cluster starts");
    cluster
        .psql("postgres", "CREATE ROLE drover_cert LOGIN SUPERUSER")
        .expect("role");
    cluster
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let pki = TestPki::new(&["localhost"], "drover_cert");
    let cluster = tls_cluster(&pki);
    let files_dir = tempfile::tempdir().unwrap();
    let files = pki.write_client_files(files_dir.path());
    let port = cluster.port();
    let ca = path(&files.ca);

    // The name in the certificate: verified.
    let url = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    );
    let store = open(&url, "drover_tls_full")
        .await
        .expect("verify-full connects");
    assert_eq!(store.listener_connections(), 1);
    let (tls, all) = tls_connections(
        |sql| cluster.psql("postgres", sql).unwrap(),
        "drover_tls_full",
    );
    assert!(all >= 2 && tls == all, "{tls} of {all} connections use TLS");
    drop(store);

    // An address the certificate does not name: refused, clearly, without the password.
    let url = format!(
        "postgres://postgres:hunter2@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    );
    let err = open(&url, "drover_tls_mismatch")
        .await
        .map(drop)
        .expect_err("refused");
    assert!(err.contains("certificate host name mismatch"), "{err}");
    assert!(
        err.contains("127.0.0.1") && err.contains("(it names localhost)"),
        "{err}"
    );
    assert!(!err.contains("DnsName"), "rustls' own notation: {err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");

    // verify-ca checks the chain only, so the address is fine.
    let url =
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-ca&sslrootcert={ca}");
    open(&url, "drover_tls_ca")
        .await
        .expect("verify-ca connects");

    // require with a root certificate behaves as verify-ca (libpq): a foreign CA is refused.
    let other = TestPki::new(&["localhost"], "x");
    let other_dir = tempfile::tempdir().unwrap();
    let other_files = other.write_client_files(other_dir.path());
    let url = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=require&sslrootcert={}",
        path(&other_files.ca)
    );
    let err = open(&url, "drover_tls_foreign")
        .await
        .map(drop)
        .expect_err("refused");
    assert!(err.contains("not signed by a trusted root"), "{err}");
    // ...and without one, require does not check the certificate.
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require");
    open(&url, "drover_tls_req")
        .await
        .expect("require connects");

    // A server without TLS never sees a plain connection from disable: this one refuses it.
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let err = open(&url, "drover_tls_off")
        .await
        .map(drop)
        .expect_err("refused");
    assert!(
        err.contains("no encryption") || err.contains("pg_hba.conf"),
        "{err}"
    );
}

#[tokio::test]
async fn client_certificates_authenticate() {
    let pki = TestPki::new(&["localhost"], "drover_cert");
    let cluster = tls_cluster(&pki);
    let files_dir = tempfile::tempdir().unwrap();
    let files = pki.write_client_files(files_dir.path());
    let port = cluster.port();

    let base = format!(
        "postgres://drover_cert@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        path(&files.ca)
    );
    // The settings may come from the config instead of the URL.
    let mut config = PgConfig::from_url(&base).unwrap();
    config.tls.client_cert = Some(files.cert.clone());
    config.tls.client_key = Some(files.key.clone());
    let store = PgStore::connect(config)
        .await
        .expect("the certificate is accepted");
    store.migrate().await.expect("migrate");
    drop(store);

    let err = open(&base, "drover_tls_nocert")
        .await
        .map(drop)
        .expect_err("refused");
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn prefer_falls_back_on_a_server_without_tls_and_require_refuses_it() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("throwaway cluster");
    let port = cluster.port();

    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=prefer");
    let store = open(&url, "drover_tls_prefer")
        .await
        .expect("prefer connects");
    assert_eq!(store.listener_connections(), 1);
    let (tls, all) = tls_connections(
        |sql| cluster.psql("postgres", sql).unwrap(),
        "drover_tls_prefer",
    );
    assert!(all >= 2 && tls == 0, "{tls} of {all} connections use TLS");
    // Unset means prefer.
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    open(&url, "drover_tls_default")
        .await
        .expect("the default connects");

    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/postgres?sslmode=require");
    let err = open(&url, "drover_tls_require")
        .await
        .map(drop)
        .expect_err("require refuses");
    assert!(err.contains("server does not support TLS"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}
