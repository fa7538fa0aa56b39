//! Test helpers shared by Drover's crates (a dev-dependency only).
//!
//! - [`pg_cluster::TempCluster`]: a throwaway PostgreSQL cluster of its own (`initdb` in a
//!   temporary directory, on a free port of 127.0.0.1), for tests that need a server set up
//!   differently from the shared test server: TLS with a certificate of the test's own, TLS
//!   off, settings that cannot change on a shared server. Stopped and removed when dropped.
//! - [`certs::TestPki`]: a certificate authority and a server certificate made in the test.

pub mod certs;
pub mod pg_cluster;
