//! `drover migrate`.

use crate::backend;
use crate::config::Config;

pub(crate) async fn run(url: &str, config: &Config) -> anyhow::Result<()> {
    let store = backend::connect(url, config, false).await?;
    let report = backend::migrate(&store, url).await?;
    if report.is_newer_than_known() {
        store.close().await;
        // A schema is never migrated down: the newer build's columns and rows stay.
        anyhow::bail!("{}", backend::newer_schema(url, &report));
    }
    outln!(
        "database {} is at schema version {}",
        backend::redact(url),
        report.version
    );
    store.close().await;
    Ok(())
}
