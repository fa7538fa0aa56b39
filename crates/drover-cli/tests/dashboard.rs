//! The dashboard in a real headless Chromium against a real `drover serve`: an operator finds a
//! job enqueued through the API, retries a failed job and sees its new state without a reload,
//! pauses a queue and sees none of its jobs start, discards every job matching a filter after a
//! confirmation that says how many, and signs in to a server that a token guards. The same run
//! takes the screenshots in `docs/` when `DROVER_SCREENSHOTS` names a folder.

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/pg.rs"]
mod pg;

use std::time::Duration;

use browser::Browser;
use common::Env;
use common::api::Server;
use fantoccini::Locator;
use serde_json::{Value, json};

const CONFIG: &str = r#"
[queues]
default = 2
mail = 1
flaky = 1
bulk = 1

[worker]
lease = "5s"
counts_interval = "200ms"

[[cron]]
name = "nightly-report"
schedule = "0 3 * * *"
kind = "drover.noop"
timezone = "Europe/Berlin"

[jobs_archive]
days = 7
"#;

/// Runs a blocking helper (HTTP calls, waits) without stalling the browser's connection.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn state_of(server: &Server, id: i64) -> String {
    let (status, job) = server.get(&format!("/api/v1/jobs/{id}"));
    assert_eq!(status, 200, "{job}");
    job["state"].as_str().unwrap().to_owned()
}

fn wait_state(server: &Server, id: i64, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = state_of(server, id);
        if state == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} is {state}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn enqueue(server: &Server, body: Value) -> i64 {
    server.ok("/api/v1/jobs", &body)["id"].as_i64().unwrap()
}

/// Saves a screenshot of the current page when `DROVER_SCREENSHOTS` names a folder; checks in
/// any case that the browser rendered one.
async fn screenshot(browser: &Browser, name: &str) {
    let png = browser.client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    if let Ok(dir) = std::env::var("DROVER_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

/// Clicks `css`. The page swaps its live regions every few seconds, so an element found just
/// before a swap can be gone by the click: then it is found again.
async fn click(browser: &Browser, css: &str) {
    for _ in 0..5 {
        match browser.find(css).await.click().await {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(err))
                if err.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
            Err(err) => panic!("click {css}: {err}"),
        }
    }
    panic!("click {css}: the element went stale five times");
}

/// Clicks `css`, checks the confirmation asks `question` with a button named `verb` (the
/// action, not a bare "Confirm" beside a "Cancel" that would read as one), and presses it.
async fn click_and_confirm(browser: &Browser, css: &str, question: &str, verb: &str) {
    click(browser, css).await;
    browser
        .until(
            "the confirmation opens",
            "document.getElementById('confirm').open",
        )
        .await;
    let text = browser.find("#confirm-text").await.text().await.unwrap();
    assert!(
        text.contains(question),
        "the confirmation says {text:?}, not {question:?}"
    );
    let buttons = (
        browser.find("#confirm-ok").await.text().await.unwrap(),
        browser.find("#confirm-cancel").await.text().await.unwrap(),
    );
    assert_eq!(buttons, (verb.to_owned(), "Back".to_owned()));
    click(browser, "#confirm-ok").await;
}

/// A server and a browser on it, for the steps of one operator's session.
struct Session {
    server: Server,
    browser: Browser,
}

impl Session {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_dashboard_in_a_real_browser() {
    let env = Env::new(CONFIG);
    let server = blocking(|| env.serve("serve", &[]));
    let browser = Browser::start(1280, 900, false).await;
    let session = Session { server, browser };

    find_a_job_by_its_args(&session).await;
    retry_a_failed_job_in_place(&session).await;
    pause_a_queue(&session).await;
    discard_everything_that_matches(&session).await;
    // A run for the retention page to show: a policy that never ran waits for its schedule.
    blocking(|| env.ok(&["archive", "run"]));
    visit_the_other_pages(&session).await;
    watch_the_overview_chart(&session).await;
    session.browser.close().await;
}

/// A job enqueued through the API is found by its args and opened.
async fn find_a_job_by_its_args(session: &Session) {
    let (server, browser) = (&session.server, &session.browser);
    let order = blocking(|| {
        let id = enqueue(
            server,
            json!({"kind": "drover.noop", "args": {"order": {"id": 4242}}}),
        );
        wait_state(server, id, "completed");
        id
    });
    browser.client.goto(&session.url("/")).await.unwrap();
    assert_eq!(browser.find("h1").await.text().await.unwrap(), "Overview");
    browser
        .until(
            "the overview counts the completed job",
            "document.querySelector('table.depth a.state-count[href*=\"state=completed\"]')",
        )
        .await;
    let filter = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("args", r#"{"order": {"id": 4242}}"#)
        .finish();
    browser
        .client
        .goto(&session.url(&format!("/jobs?{filter}")))
        .await
        .unwrap();
    let rows = browser
        .client
        .find_all(Locator::Css("table.jobs tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the args filter keeps one job");
    click(browser, &format!("a[href='/jobs/{order}']")).await;
    browser.find("#job[data-state='completed']").await;
    let args = browser.find("pre.json").await.text().await.unwrap();
    assert!(args.contains("4242"), "args shown: {args}");
}

/// A failed job, retried with a click: the page shows its new state without a reload.
async fn retry_a_failed_job_in_place(session: &Session) {
    let (server, browser) = (&session.server, &session.browser);
    let failed = blocking(|| {
        let id = enqueue(
            server,
            json!({"kind": "drover.fail", "args": {"message": "card declined"}, "queue": "flaky", "max_attempts": 1}),
        );
        wait_state(server, id, "discarded");
        // Paused, so that the retried job waits where the page can see it.
        server.ok("/api/v1/queues/flaky/pause", &json!({}));
        id
    });
    browser
        .client
        .goto(&session.url(&format!("/jobs/{failed}")))
        .await
        .unwrap();
    browser.find("#job[data-state='discarded']").await;
    let timeline = browser.find("ol.timeline").await.text().await.unwrap();
    assert!(
        timeline.contains("card declined"),
        "the error is on the timeline: {timeline}"
    );
    browser
        .eval("window.__sameDocument = true; return 1;")
        .await;
    click_and_confirm(
        browser,
        "button[data-post$='/retry']",
        &format!("Retry job {failed}"),
        "Retry",
    )
    .await;
    browser
        .until(
            "the retry's report",
            "document.getElementById('toast').textContent === 'Retry: changed (now available)'",
        )
        .await;
    browser
        .until(
            "the retried job shows as available",
            "document.querySelector('#job').dataset.state === 'available'",
        )
        .await;
    assert_eq!(
        browser.eval("return window.__sameDocument === true;").await,
        json!(true),
        "the page reloaded"
    );
    assert_eq!(blocking(|| state_of(server, failed)), "available");
    let timeline = browser.find("ol.timeline").await.text().await.unwrap();
    assert!(
        timeline.contains("operator retry"),
        "the retry is in the history: {timeline}"
    );
    screenshot(browser, "job").await;
}

/// Pausing a queue with a click: its job does not start, while a later job elsewhere does.
async fn pause_a_queue(session: &Session) {
    let (server, browser) = (&session.server, &session.browser);
    browser.client.goto(&session.url("/queues")).await.unwrap();
    click_and_confirm(
        browser,
        "tr[data-queue='mail'] button[data-post$='/pause']",
        "Pause queue mail",
        "Pause",
    )
    .await;
    browser.find("tr[data-queue='mail'] .badge.paused").await;
    let held = blocking(|| {
        let held = enqueue(server, json!({"kind": "drover.noop", "queue": "mail"}));
        let later = enqueue(server, json!({"kind": "drover.noop"}));
        wait_state(server, later, "completed");
        assert_eq!(
            state_of(server, held),
            "available",
            "a job of a paused queue started"
        );
        held
    });
    screenshot(browser, "queues").await;
    click_and_confirm(
        browser,
        "tr[data-queue='mail'] button[data-post$='/resume']",
        "Resume queue mail",
        "Resume",
    )
    .await;
    blocking(|| wait_state(server, held, "completed"));
}

/// Every job matching a filter, discarded after a confirmation that says how many.
async fn discard_everything_that_matches(session: &Session) {
    let (server, browser) = (&session.server, &session.browser);
    blocking(|| {
        server.ok("/api/v1/queues/bulk/pause", &json!({}));
        let jobs: Vec<Value> = (0..35)
            .map(|i| json!({"kind": "drover.noop", "queue": "bulk", "args": {"batch": if i < 30 { 7 } else { 8 }, "n": i}}))
            .collect();
        server.ok("/api/v1/jobs/batch", &json!({ "jobs": jobs }));
    });
    let filter = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("queue", "bulk")
        .append_pair("args", r#"{"batch": 7}"#)
        .finish();
    browser
        .client
        .goto(&session.url(&format!("/jobs?{filter}")))
        .await
        .unwrap();
    browser.find("tr[data-state='available']").await;
    screenshot(browser, "jobs").await;
    click(browser, "#select-matching").await;
    click_and_confirm(
        browser,
        "button[data-bulk='discard']",
        "Discard 30 jobs that match",
        "Discard 30 jobs",
    )
    .await;
    browser
        .until(
            "the report of the discard",
            "document.getElementById('toast').textContent.includes('30 jobs changed')",
        )
        .await;
    blocking(|| {
        let (_, page) = server.get("/api/v1/jobs?queue=bulk&state=discarded&limit=100");
        assert_eq!(page["jobs"].as_array().unwrap().len(), 30);
        let (_, page) = server.get("/api/v1/jobs?queue=bulk&state=available&limit=100");
        assert_eq!(
            page["jobs"].as_array().unwrap().len(),
            5,
            "jobs outside the filter are untouched"
        );
    });
}

/// The other pages, as an operator sees them.
async fn visit_the_other_pages(session: &Session) {
    let browser = &session.browser;
    // An HTTP worker holding a lease, for the processes page to list.
    let server = &session.server;
    server.ok(
        "/api/v1/jobs",
        &json!({"kind": "py.resize", "queue": "images"}),
    );
    server.ok(
        "/api/v1/leases",
        &json!({"queues": ["images"], "worker": "py-worker-1", "wait": 5}),
    );
    for (path, name, heading) in [
        ("/cron", "cron", "Cron"),
        ("/retention", "retention", "Retention"),
        ("/processes", "processes", "Processes"),
    ] {
        browser.client.goto(&session.url(path)).await.unwrap();
        assert_eq!(browser.find("h1").await.text().await.unwrap(), heading);
        if name == "cron" {
            let cron = browser
                .find("tr[data-cron='nightly-report']")
                .await
                .text()
                .await
                .unwrap();
            assert!(cron.contains("Europe/Berlin"), "{cron}");
        }
        if name == "retention" {
            browser
                .find("section[data-policy='drover_jobs'] table.runs")
                .await;
        }
        if name == "processes" {
            let row = browser
                .find("tr[data-http-worker='py-worker-1']")
                .await
                .text()
                .await
                .unwrap();
            assert!(row.contains("images") && row.contains('1'), "{row}");
        }
        screenshot(browser, name).await;
    }
}

/// Some work and some failures, then the overview: its chart gets this minute's bars once
/// the server flushed its counts (with its presence heartbeat, every 5 s).
async fn watch_the_overview_chart(session: &Session) {
    let (server, browser) = (&session.server, &session.browser);
    blocking(|| {
        let jobs: Vec<Value> = (0..60)
            .map(|i| match i % 6 {
                0 => json!({"kind": "drover.fail", "args": {"message": "upstream timed out"}, "max_attempts": 1}),
                _ => json!({"kind": "drover.sleep", "args": {"ms": 20}}),
            })
            .collect();
        server.ok("/api/v1/jobs/batch", &json!({ "jobs": jobs }));
    });
    browser.client.goto(&session.url("/")).await.unwrap();
    browser
        .until(
            "the chart shows completed and failed jobs (refreshed in place)",
            "document.querySelector('figure.chart').dataset.completed >= 50 && document.querySelector('figure.chart').dataset.failed >= 10",
        )
        .await;
    screenshot(browser, "overview").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_the_pages_and_read_only_hides_the_actions() {
    const TOKEN: &str = "dashboard-token-0123456789";
    let env = Env::new(&format!("{CONFIG}\n[http]\nread_only = true\n"));
    let server = blocking(|| {
        Server::start(
            &env,
            "serve",
            env.cmd(&common::api::serve_args(&[])),
            Some(TOKEN),
        )
    });
    let base = server.url.clone();
    // Dark, as an operator whose system is set to dark sees it.
    let browser = Browser::start(1280, 900, true).await;

    browser
        .client
        .goto(&format!("{base}/queues"))
        .await
        .unwrap();
    browser.find("input#token").await;
    assert!(
        browser
            .client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/login")
    );
    browser
        .find("input#token")
        .await
        .send_keys("not-the-token-at-all")
        .await
        .unwrap();
    click(&browser, "button[type='submit']").await;
    let error = browser.find(".form-error").await.text().await.unwrap();
    assert!(error.contains("not the token"), "{error}");
    browser
        .find("input#token")
        .await
        .send_keys(TOKEN)
        .await
        .unwrap();
    click(&browser, "button[type='submit']").await;
    browser
        .until(
            "signed in, sent back to the page asked for",
            "location.pathname === '/queues'",
        )
        .await;
    assert_eq!(browser.find("h1").await.text().await.unwrap(), "Queues");
    assert!(
        browser
            .client
            .find_all(Locator::Css("button[data-post]"))
            .await
            .unwrap()
            .is_empty(),
        "read-only mode shows no action"
    );
    browser.client.goto(&format!("{base}/jobs")).await.unwrap();
    browser.find("table.jobs, p.empty").await;
    assert!(
        browser
            .client
            .find_all(Locator::Css("button[data-bulk]"))
            .await
            .unwrap()
            .is_empty()
    );

    browser.client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(
        browser
            .eval("return matchMedia('(prefers-color-scheme: dark)').matches;")
            .await,
        json!(true),
        "the browser prefers dark"
    );
    let background = browser
        .eval("return getComputedStyle(document.body).backgroundColor;")
        .await;
    assert_eq!(
        background,
        json!("rgb(17, 21, 28)"),
        "the dark palette applies"
    );
    screenshot(&browser, "overview-dark").await;

    // Narrow windows get one column; the screenshot shows the overview as a phone would.
    browser.client.set_window_size(420, 860).await.unwrap();
    browser.client.goto(&format!("{base}/")).await.unwrap();
    browser.find("h1").await;
    screenshot(&browser, "overview-narrow").await;

    // Signing out ends the session: the next page asks for the token again.
    click(&browser, "form.signout button").await;
    browser
        .until("signed out", "location.pathname === '/login'")
        .await;
    browser.client.goto(&format!("{base}/jobs")).await.unwrap();
    browser.find("input#token").await;
    browser.close().await;
}

/// The autoscaler's capacity on its page: a reservation made through the API is shown assigned
/// to its slot, released from the page, and the slot it held is drained from the page and
/// terminated by the autoscaler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_releases_a_reservation_and_drains_a_slot() {
    let env = Env::new(
        r#"
[systems.gpu]
max = 2
warm = 0
max_leases_per_slot = 2
idle_timeout = "1h"
[queues.render]
concurrency = 1
system = "gpu"
[autoscaler]
runtime = "sim"
interval = "100ms"
[autoscaler.sim]
boot_min = "0s"
"#,
    );
    let server = blocking(|| env.serve("serve", &[]));
    let browser = Browser::start(1280, 900, false).await;
    let session = Session { server, browser };
    let (server, browser) = (&session.server, &session.browser);
    let reservation = blocking(|| {
        let made = server.ok(
            "/api/v1/reservations",
            &json!({"system": "gpu", "holder": "render-farm-7"}),
        );
        let id = made["id"].as_i64().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, now) = server.get(&format!("/api/v1/reservations/{id}"));
            assert_eq!(status, 200, "{now}");
            if now["phase"] == "assigned" {
                return now;
            }
            assert!(std::time::Instant::now() < deadline, "not assigned: {now}");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (id, slot) = (
        reservation["id"].as_i64().unwrap(),
        reservation["slot_id"].as_i64().unwrap(),
    );

    browser
        .client
        .goto(&session.url("/capacity"))
        .await
        .unwrap();
    assert_eq!(browser.find("h1").await.text().await.unwrap(), "Capacity");
    let system = browser
        .find("tr[data-system='gpu']")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        system.contains("1 ready") && system.contains("render"),
        "{system}"
    );
    let row = format!("tr[data-reservation='{id}']");
    let text = browser.find(&row).await.text().await.unwrap();
    assert!(
        text.contains("assigned") && text.contains("render-farm-7"),
        "{text}"
    );
    let slot_row = format!("tr[data-slot='{slot}']");
    let text = browser.find(&slot_row).await.text().await.unwrap();
    assert!(text.contains("ready") && text.contains("1 / 2"), "{text}");
    screenshot(browser, "capacity").await;
    // A phone's width: the wide tables scroll inside their cards, the page does not.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser
        .until(
            "the page is no wider than the window",
            "document.documentElement.scrollWidth <= window.innerWidth",
        )
        .await;
    browser.client.set_window_size(1280, 900).await.unwrap();

    click_and_confirm(
        browser,
        &format!("{row} button[data-post$='/release']"),
        &format!("Release reservation {id} of gpu?"),
        "Release",
    )
    .await;
    browser
        .until(
            "the released reservation leaves the list",
            &format!("!document.querySelector(\"{row}\")"),
        )
        .await;
    let (_, released) = blocking(|| server.get(&format!("/api/v1/reservations/{id}")));
    assert_eq!(released["phase"], "released", "{released}");

    click_and_confirm(
        browser,
        &format!("{slot_row} button[data-post$='/drain']"),
        &format!("Drain slot {slot}?"),
        "Drain",
    )
    .await;
    // Holding no lease, the draining slot is terminated at the autoscaler's next tick.
    browser
        .until(
            "the drained slot leaves the list",
            &format!("!document.querySelector(\"{slot_row}\")"),
        )
        .await;
    let (_, slots) = blocking(|| server.get("/api/v1/slots?all=true"));
    let drained = slots
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == slot)
        .unwrap();
    assert_eq!(drained["state"], "empty", "{drained}");
    assert!(
        ["drained", "terminated"].contains(&drained["reason"].as_str().unwrap()),
        "{drained}"
    );
    session.browser.close().await;
}

/// `drover bench --scenario pages` on both backends: every page and API read it times answers
/// 200 on a filled table (the bench fails otherwise), and it reports each of them.
#[test]
fn the_page_benchmark_fetches_every_page_on_both_backends() {
    let env = Env::new("");
    for (name, out) in [
        (
            "sqlite",
            env.ok(&["bench", "--scenario", "pages", "--jobs", "3000", "--json"]),
        ),
        (
            "postgres",
            env.ok(&[
                "bench",
                "--scenario",
                "pages",
                "--jobs",
                "3000",
                "--json",
                "--database",
                &pg::server_url(),
            ]),
        ),
    ] {
        let pages: Vec<Value> = out
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|_| panic!("{name}: not JSON: {line}"))
            })
            .collect();
        let names: Vec<&str> = pages.iter().map(|p| p["page"].as_str().unwrap()).collect();
        for page in [
            "/",
            "/jobs",
            "/queues",
            "/cron",
            "/retention",
            "/processes",
            "/capacity",
        ] {
            assert!(
                names.contains(&page),
                "{name}: {page} not measured: {names:?}"
            );
        }
        assert!(
            names.iter().any(|p| p.starts_with("/jobs?args=")),
            "{name}: no args search"
        );
        for page in &pages {
            assert!(page["p50_ms"].as_f64().unwrap() > 0.0, "{name}: {page}");
            assert!(page["bytes"].as_u64().unwrap() > 100, "{name}: {page}");
        }
    }
}
