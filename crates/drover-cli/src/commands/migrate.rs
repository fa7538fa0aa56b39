//! `drover migrate`.

use crate::backend;
use crate::config::Config;

pub(crate) async fn run(url: &str, config: &Config) -> anyhow::Result<()> {
    // `open` migrates; a second call reports the version.
    let store = backend::open(url, config, false).await?;
    let report = store.migrate().await?;
    outln!(
        "database {} is at schema version {}",
        backend::redact(url),
        report.version
    );
    store.close().await;
    Ok(())
}
