//! Cron schedules: parsing (five or six fields, a UTC or IANA time zone), and the pure planning
//! of which fire times are due, as a function of the schedule, what the database recorded, and
//! `now`. The scheduler service (`services::scheduler`) acts on the plan.

use std::str::FromStr;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use drover_core::CronState;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Most missed fire times the `all` policy enqueues at once; older ones are skipped (logged).
pub const MAX_CATCH_UP: usize = 100;

/// How late a fire time may be and still count as on time for the `skip` policy (a leader
/// handover or a slow start is not an outage).
pub const ON_TIME_GRACE: SignedDuration = SignedDuration::from_secs(60);

/// What to do with fire times missed while nothing was running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CatchUp {
    /// One run for everything missed (the latest missed fire time). The default.
    #[default]
    Once,
    /// No run for missed fire times; only the next one.
    Skip,
    /// One run per missed fire time, at most [`MAX_CATCH_UP`].
    All,
}

impl FromStr for CatchUp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "once" => Ok(CatchUp::Once),
            "skip" => Ok(CatchUp::Skip),
            "all" => Ok(CatchUp::All),
            other => Err(format!(
                "unknown catch_up {other:?}; expected once, skip or all"
            )),
        }
    }
}

/// A periodic job, as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct CronSchedule {
    /// Unique name: fire records are keyed by it.
    pub name: String,
    /// Five fields (minute hour day-of-month month day-of-week) or six (seconds first).
    pub expression: String,
    /// IANA time zone the expression is read in; UTC when absent.
    pub timezone: Option<String>,
    /// Kind of the job to enqueue.
    pub kind: String,
    /// Args of the job (a JSON object).
    pub args: String,
    /// Queue; the task's default when absent.
    pub queue: Option<String>,
    /// Missed fire times policy.
    pub catch_up: CatchUp,
}

/// A schedule whose expression and time zone were checked.
#[derive(Debug, Clone)]
pub struct ParsedSchedule {
    /// The declaration.
    pub schedule: CronSchedule,
    cron: Cron,
    tz: TimeZone,
}

impl CronSchedule {
    /// The enqueue it makes at each fire (the kind's task defaults still to apply).
    pub fn request(&self) -> crate::client::EnqueueRequest {
        let mut request = crate::client::EnqueueRequest::raw(self.kind.clone(), self.args.clone());
        request.queue = self.queue.clone();
        request
    }
}

fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Parses a cron expression; an error names the field at fault (croner's own says only
/// "Number out of bounds", not where).
fn parse_expression(expression: &str) -> Result<Cron, String> {
    let err = match cron_parser().parse(expression) {
        Ok(cron) => return Ok(cron),
        Err(err) => err.to_string(),
    };
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let names: &[&str] = match fields.len() {
        5 => &["minute", "hour", "day of month", "month", "day of week"],
        6 => &[
            "second",
            "minute",
            "hour",
            "day of month",
            "month",
            "day of week",
        ],
        _ => return Err(err),
    };
    // Each field alone, every other one a wildcard: the first that fails is the culprit.
    for (i, name) in names.iter().enumerate() {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if i == j { fields[j] } else { "*" })
            .collect();
        if let Err(field_err) = cron_parser().parse(&alone.join(" ")) {
            return Err(format!("the {name} field {:?}: {field_err}", fields[i]));
        }
    }
    Err(err)
}

impl ParsedSchedule {
    /// Parses the expression and the time zone; the error names the schedule and what is wrong.
    pub fn parse(schedule: CronSchedule) -> Result<ParsedSchedule, Error> {
        drover_core::validate::check_name("cron name", &schedule.name)?;
        let cron = parse_expression(&schedule.expression).map_err(|err| {
            Error::Config(format!(
                "cron {:?}: invalid expression {:?}: {err}",
                schedule.name, schedule.expression
            ))
        })?;
        let tz = match &schedule.timezone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|err| {
                Error::Config(format!(
                    "cron {:?}: unknown time zone {name:?}: {err}",
                    schedule.name
                ))
            })?,
        };
        let parsed = ParsedSchedule { schedule, cron, tz };
        // An expression that never matches (like 30 February) is refused now, not at 3 am.
        if parsed.next_after(Timestamp::now()).is_none() {
            return Err(Error::Config(format!(
                "cron {:?}: expression {:?} never fires",
                parsed.schedule.name, parsed.schedule.expression
            )));
        }
        Ok(parsed)
    }

    fn zoned(&self, at: Timestamp) -> Zoned {
        at.to_zoned(self.tz.clone())
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&self.zoned(after), false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The last fire time at or before `at`.
    pub fn latest_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&self.zoned(at), true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The fire times to enqueue at `now`, oldest first, given what the database recorded.
    /// Times after the baseline (the last fire, or the registration when it never fired) and
    /// at or before `now` are due. When every one of them is under [`ON_TIME_GRACE`] late,
    /// nothing was missed but a leader handover or a restart, and all of them run (a schedule
    /// every 2 s loses no fire time to a 4 s handover); otherwise the catch-up policy says
    /// which run.
    pub fn plan(&self, state: Option<&CronState>, now: Timestamp) -> Vec<Timestamp> {
        let baseline = match state {
            Some(state) => state.last_fire_at.unwrap_or(state.registered_at),
            None => now,
        };
        let Some(latest) = self.latest_at_or_before(now).filter(|t| *t > baseline) else {
            return Vec::new();
        };
        let (due, complete) = self.due_back_to(latest, baseline);
        let on_time = |t: Timestamp| now.duration_since(t) <= ON_TIME_GRACE;
        if complete && on_time(due[0]) {
            return due;
        }
        match self.schedule.catch_up {
            CatchUp::Once => vec![latest],
            CatchUp::Skip if on_time(latest) => vec![latest],
            CatchUp::Skip => Vec::new(),
            CatchUp::All => due,
        }
    }

    /// The fire times from `latest` back to just after `baseline`, oldest first, at most
    /// [`MAX_CATCH_UP`] of them, and whether they reach back to the baseline.
    fn due_back_to(&self, latest: Timestamp, baseline: Timestamp) -> (Vec<Timestamp>, bool) {
        let mut due = vec![latest];
        let complete = loop {
            if due.len() >= MAX_CATCH_UP {
                break false;
            }
            let before = due
                .last()
                .expect("not empty")
                .checked_sub(SignedDuration::from_nanos(1));
            match before.ok().and_then(|t| self.latest_at_or_before(t)) {
                Some(t) if t > baseline => due.push(t),
                _ => break true,
            }
        };
        due.reverse();
        (due, complete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(expression: &str, timezone: Option<&str>, catch_up: CatchUp) -> ParsedSchedule {
        ParsedSchedule::parse(CronSchedule {
            name: "s".into(),
            expression: expression.into(),
            timezone: timezone.map(str::to_owned),
            kind: "k".into(),
            args: "{}".into(),
            queue: None,
            catch_up,
        })
        .unwrap()
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_bad_expression_names_the_field_at_fault() {
        for (expression, field) in [
            ("61 * * * *", "the minute field \"61\""),
            ("0 25 * * *", "the hour field \"25\""),
            ("0 0 32 * *", "the day of month field \"32\""),
            ("*/0 * * * *", "the minute field \"*/0\""),
            ("0 0 0 * * 9", "the day of week field \"9\""),
            ("70 0 0 * * *", "the second field \"70\""),
        ] {
            let err = parse_expression(expression).unwrap_err();
            assert!(err.contains(field), "{expression}: {err}");
        }
        assert!(
            parse_expression("* * * *")
                .unwrap_err()
                .contains("5 or 6 fields")
        );
        assert!(parse_expression("0 3 * * 1-5").is_ok());
    }

    fn state(registered: &str, last: Option<&str>) -> CronState {
        CronState {
            name: "s".into(),
            registered_at: ts(registered),
            last_fire_at: last.map(ts),
            last_job_id: None,
        }
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_naming_the_schedule() {
        for (expr, tz) in [
            ("61 * * * *", None),
            ("* * *", None),
            ("0 0 30 2 *", None),
            ("0 0 * * * * 2030", None),
            ("0 3 * * *", Some("Mars/Olympus")),
        ] {
            let err = ParsedSchedule::parse(CronSchedule {
                name: "nightly-report".into(),
                expression: expr.into(),
                timezone: tz.map(str::to_owned),
                kind: "k".into(),
                args: "{}".into(),
                queue: None,
                catch_up: CatchUp::Once,
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains("nightly-report"), "{expr}: {err}");
        }
    }

    #[test]
    fn five_and_six_fields() {
        let five = schedule("0 3 * * *", None, CatchUp::Once);
        assert_eq!(
            five.next_after(ts("2026-05-07T10:00:00Z")),
            Some(ts("2026-05-08T03:00:00Z"))
        );
        let six = schedule("30 0 3 * * *", None, CatchUp::Once);
        assert_eq!(
            six.next_after(ts("2026-05-07T10:00:00Z")),
            Some(ts("2026-05-08T03:00:30Z"))
        );
    }

    #[test]
    fn catch_up_policies() {
        let now = ts("2026-05-07T10:00:30Z");
        // Registered at 06:59; hourly fire times 07:00, 08:00, 09:00, 10:00 were all missed.
        let registered = state("2026-05-07T06:59:00Z", None);
        let once = schedule("0 * * * *", None, CatchUp::Once);
        assert_eq!(
            once.plan(Some(&registered), now),
            vec![ts("2026-05-07T10:00:00Z")]
        );
        let all = schedule("0 * * * *", None, CatchUp::All);
        assert_eq!(all.plan(Some(&registered), now).len(), 4);
        let skip = schedule("0 * * * *", None, CatchUp::Skip);
        assert_eq!(
            skip.plan(Some(&registered), now),
            vec![ts("2026-05-07T10:00:00Z")],
            "30 s late is on time"
        );
        assert!(
            skip.plan(Some(&registered), ts("2026-05-07T10:30:00Z"))
                .is_empty()
        );
        // Fired at 10:00 already: nothing until 11:00.
        let fired = state("2026-05-07T06:59:00Z", Some("2026-05-07T10:00:00Z"));
        assert!(
            once.plan(Some(&fired), ts("2026-05-07T10:59:59Z"))
                .is_empty()
        );
        assert_eq!(
            once.plan(Some(&fired), ts("2026-05-07T11:00:00Z")),
            vec![ts("2026-05-07T11:00:00Z")]
        );
        // `all` is bounded.
        let minutely = schedule("* * * * *", None, CatchUp::All);
        let week = state("2026-04-30T00:00:00Z", None);
        assert_eq!(minutely.plan(Some(&week), now).len(), MAX_CATCH_UP);
    }

    /// A leader handover of a few seconds under a schedule of every 2 s: the times it missed
    /// are all under the grace, so they all fire whatever the policy; after a real outage (a
    /// missed time older than the grace) the policy decides again.
    #[test]
    fn a_handover_shorter_than_the_grace_loses_no_fire_time() {
        let fired = state("2026-05-07T08:00:00Z", Some("2026-05-07T08:22:52Z"));
        let now = ts("2026-05-07T08:22:57.030Z");
        let missed = vec![ts("2026-05-07T08:22:54Z"), ts("2026-05-07T08:22:56Z")];
        for catch_up in [CatchUp::Once, CatchUp::Skip, CatchUp::All] {
            let every_2s = schedule("*/2 * * * * *", None, catch_up);
            assert_eq!(every_2s.plan(Some(&fired), now), missed, "{catch_up:?}");
        }
        // Ten minutes away: the oldest missed time is past the grace.
        let later = ts("2026-05-07T08:32:53Z");
        let once = schedule("*/2 * * * * *", None, CatchUp::Once);
        assert_eq!(
            once.plan(Some(&fired), later),
            vec![ts("2026-05-07T08:32:52Z")]
        );
        let skip = schedule("*/2 * * * * *", None, CatchUp::Skip);
        assert_eq!(
            skip.plan(Some(&fired), later),
            vec![ts("2026-05-07T08:32:52Z")],
            "the latest is on time"
        );
        let all = schedule("*/2 * * * * *", None, CatchUp::All);
        assert_eq!(all.plan(Some(&fired), later).len(), MAX_CATCH_UP);
    }

    #[test]
    fn daylight_saving_transitions_neither_skip_nor_repeat_a_day() {
        let berlin = schedule("30 2 * * *", Some("Europe/Berlin"), CatchUp::All);
        // Spring forward: 2026-03-29 has no 02:30 in Berlin; the day still fires once.
        let mut t = ts("2026-03-27T12:00:00Z");
        let mut fires = Vec::new();
        for _ in 0..4 {
            t = berlin.next_after(t).unwrap();
            fires.push(t);
        }
        let days: Vec<String> = fires
            .iter()
            .map(|f| {
                f.to_zoned(TimeZone::get("Europe/Berlin").unwrap())
                    .date()
                    .to_string()
            })
            .collect();
        assert_eq!(
            days,
            ["2026-03-28", "2026-03-29", "2026-03-30", "2026-03-31"]
        );
        // Fall back: 2026-10-25 has 02:30 twice; it fires once.
        let mut t = ts("2026-10-23T12:00:00Z");
        let mut days = Vec::new();
        for _ in 0..4 {
            t = berlin.next_after(t).unwrap();
            days.push(
                t.to_zoned(TimeZone::get("Europe/Berlin").unwrap())
                    .date()
                    .to_string(),
            );
        }
        assert_eq!(
            days,
            ["2026-10-24", "2026-10-25", "2026-10-26", "2026-10-27"]
        );
    }
}
