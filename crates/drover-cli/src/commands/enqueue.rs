//! `drover enqueue`: one job from flags, or many from a JSONL file. Every line of a file is
//! checked before anything is stored; one bad line refuses the file and names each bad line.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use anyhow::Context;
use drover::{Client, EnqueueRequest};
use drover_core::validate::parse_time;
use drover_core::{Delivery, JobId, NewJob};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;

use crate::cli::EnqueueArgs;
use crate::config::{Config, parse_duration};
use crate::{backend, output, setup};

/// Jobs per transaction when enqueuing a file.
const CHUNK: usize = 1000;
/// Bad lines listed before the rest are only counted.
const MAX_REPORTED: usize = 20;

pub(crate) async fn run(url: &str, config: &Config, args: EnqueueArgs) -> anyhow::Result<()> {
    if let Some(file) = &args.file {
        return run_file(url, config, file, args.json).await;
    }
    let kind = args
        .kind
        .clone()
        .expect("clap requires a kind without --file");
    let mut request = EnqueueRequest::raw(kind, args.args);
    request.queue = args.queue;
    request.priority = args.priority;
    request.max_attempts = args.max_attempts;
    request.unique_key = args.unique_key;
    request.delay = args.delay;
    if let Some(at) = &args.run_at {
        request.run_at = Some(
            parse_time(at)
                .map_err(anyhow::Error::msg)
                .context("--run-at")?,
        );
    }
    if args.at_most_once {
        request.delivery = Some(Delivery::AtMostOnce);
    }
    // Validate with a client that has no store yet: bad input never opens the database.
    let job = prepare(config, request)?;
    let store = backend::open(url, config, false).await?;
    let client = setup::client(store.clone(), config);
    let result = client.insert(vec![job]).await;
    store.close().await;
    let inserted = result?.remove(0);
    if args.json {
        outln!("{}", serde_json::to_string(&inserted)?);
    } else if inserted.duplicate {
        outln!("{} (already enqueued with this unique key)", inserted.id);
    } else {
        outln!("{}", inserted.id);
    }
    Ok(())
}

/// Validates a request with the config's task defaults, without a database.
fn prepare(config: &Config, request: EnqueueRequest) -> anyhow::Result<NewJob> {
    Ok(setup::job_defaults(config).prepare(request)?)
}

/// One line of a JSONL file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    kind: String,
    /// Kept as written: numbers of any size keep every digit.
    #[serde(default)]
    args: Option<Box<serde_json::value::RawValue>>,
    queue: Option<String>,
    priority: Option<i32>,
    max_attempts: Option<i32>,
    delay: Option<String>,
    /// As the HTTP API and the Python client name it: a line written for them reads here too.
    delay_seconds: Option<f64>,
    run_at: Option<String>,
    unique_key: Option<String>,
    delivery: Option<String>,
}

/// Reads a line; one that is JSON but not an object says what a line should be, rather than
/// serde's words about the type it reads into ("struct Line with 9 elements").
fn parse_line(text: &str) -> anyhow::Result<Line> {
    let mut reader = serde_json::Deserializer::from_str(text);
    let line = serde_path_to_error::deserialize::<_, Line>(&mut reader).map_err(|err| {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) if !value.is_object() => anyhow::anyhow!(
                "expected a JSON object like {{\"kind\": \"email.send\", \"args\": {{}}}}, got {}",
                drover_core::validate::json_type_name(&value)
            ),
            _ => {
                // The field at fault, and the column: serde's "at line 1" would read as the
                // file's first line.
                let path = err.path().to_string();
                let inner = err.into_inner();
                let message = inner.to_string();
                let message = message
                    .rsplit_once(" at line ")
                    .map_or(message.as_str(), |(head, _)| head);
                let column = inner.column();
                if inner.is_syntax() || inner.is_eof() {
                    // serde's "expected ident" for `not json` reads as a field's problem.
                    return anyhow::anyhow!("not valid JSON: {message} (column {column})");
                }
                match path.as_str() {
                    "." | "?" => anyhow::anyhow!("{message} (column {column})"),
                    field => anyhow::anyhow!("{field}: {message} (column {column})"),
                }
            }
        }
    })?;
    // One job per line: a second object (or anything) after the first was dropped unseen.
    reader.end().map_err(|err| {
        anyhow::anyhow!(
            "more after the job's JSON object (column {}): one job per line",
            err.column()
        )
    })?;
    Ok(line)
}

fn line_request(line: Line) -> anyhow::Result<EnqueueRequest> {
    let args = match line.args {
        None => "{}".to_owned(),
        Some(raw) => raw.get().to_owned(),
    };
    let mut request = EnqueueRequest::raw(line.kind, args);
    request.queue = line.queue;
    request.priority = line.priority;
    request.max_attempts = line.max_attempts;
    request.unique_key = line.unique_key;
    let delays = [
        line.delay.is_some(),
        line.delay_seconds.is_some(),
        line.run_at.is_some(),
    ];
    if delays.iter().filter(|&&given| given).count() > 1 {
        anyhow::bail!("give one of delay, delay_seconds and run_at");
    }
    if let Some(delay) = line.delay {
        request.delay = Some(parse_duration(&delay).map_err(anyhow::Error::msg)?);
    }
    if let Some(seconds) = line.delay_seconds {
        // The API's bound, so that a line means the same whichever way it is sent.
        if !(0.0..=1e9).contains(&seconds) {
            anyhow::bail!("delay_seconds must be between 0 and 1e9");
        }
        request.delay = Some(std::time::Duration::from_secs_f64(seconds));
    }
    if let Some(at) = line.run_at {
        request.run_at = Some(parse_time(&at).map_err(anyhow::Error::msg)?);
    }
    if let Some(delivery) = line.delivery {
        request.delivery = Some(delivery.parse().map_err(anyhow::Error::msg)?);
    }
    Ok(request)
}

async fn run_file(url: &str, config: &Config, path: &Path, json: bool) -> anyhow::Result<()> {
    let jobs = read_jobs(config, path)?;
    let store = backend::open(url, config, false).await?;
    let client: Client = setup::client(store.clone(), config);
    let inserted = insert_chunks(&client, &jobs, json).await;
    store.close().await;
    let (ids, duplicates) = inserted?;
    print_file_summary(path, jobs.len(), duplicates, &ids, json);
    Ok(())
}

/// Every line of the file (`-`: stdin) checked as a job, or an error naming the bad lines.
fn read_jobs(config: &Config, path: &Path) -> anyhow::Result<Vec<NewJob>> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ))
    };
    let checker = setup::job_defaults(config);
    let mut jobs = Vec::new();
    let mut bad = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("cannot read line {number}"))?;
        // A byte order mark, as some Windows editors write, is no part of the first line's JSON.
        let line = if number == 1 {
            line.strip_prefix('\u{feff}')
                .map(str::to_owned)
                .unwrap_or(line)
        } else {
            line
        };
        if line.trim().is_empty() {
            continue;
        }
        let checked = parse_line(&line)
            .and_then(line_request)
            .and_then(|request| Ok(checker.prepare(request)?));
        match checked {
            Ok(job) => jobs.push(job),
            Err(err) => bad.push(format!(
                "line {number}: {}",
                output::cut(&err.to_string(), MAX_MESSAGE)
            )),
        }
    }
    if !bad.is_empty() {
        return Err(refuse_bad_lines(&bad, path));
    }
    Ok(jobs)
}

/// Longest message printed for a bad line: a value quoted in it may be megabytes long.
const MAX_MESSAGE: usize = 300;

/// Prints the first bad lines to stderr and returns the error that refuses the file.
fn refuse_bad_lines(bad: &[String], path: &Path) -> anyhow::Error {
    for line in bad.iter().take(MAX_REPORTED) {
        eprintln!("{line}");
    }
    if bad.len() > MAX_REPORTED {
        eprintln!("... and {} more bad lines", bad.len() - MAX_REPORTED);
    }
    anyhow::anyhow!(
        "{} bad line(s) in {}; nothing was enqueued",
        bad.len(),
        path.display()
    )
}

/// Inserts `jobs` CHUNK at a time, with a progress bar when a person is watching: the ids and
/// how many were duplicates, or an error saying how far it got (earlier chunks stay enqueued).
async fn insert_chunks(
    client: &Client,
    jobs: &[NewJob],
    json: bool,
) -> anyhow::Result<(Vec<JobId>, usize)> {
    let progress = if std::io::stderr().is_terminal() && !json {
        ProgressBar::with_draw_target(Some(jobs.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} jobs  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    let total = jobs.len();
    let mut ids = Vec::with_capacity(total);
    let mut duplicates = 0;
    let mut result = Ok(());
    for chunk in jobs.chunks(CHUNK) {
        match client.insert(chunk.to_vec()).await {
            Ok(inserted) => {
                duplicates += inserted.iter().filter(|j| j.duplicate).count();
                ids.extend(inserted.iter().map(|j| j.id));
                progress.inc(chunk.len() as u64);
            }
            Err(err) => {
                result = Err(anyhow::anyhow!(
                    "stopped after {} of {total} jobs: {err}",
                    ids.len()
                ));
                break;
            }
        }
    }
    progress.finish_and_clear();
    result.map(|()| (ids, duplicates))
}

fn print_file_summary(path: &Path, total: usize, duplicates: usize, ids: &[JobId], json: bool) {
    if json {
        outln!(
            "{}",
            serde_json::json!({ "enqueued": total - duplicates, "duplicates": duplicates, "ids": ids })
        );
    } else {
        let enqueued = total - duplicates;
        outln!(
            "enqueued {enqueued} job{} from {}{}",
            if enqueued == 1 { "" } else { "s" },
            path.display(),
            if duplicates > 0 {
                format!(" ({duplicates} already enqueued with their unique key)")
            } else {
                String::new()
            }
        );
    }
}
