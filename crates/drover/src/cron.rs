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
    /// Whether a wall-clock time repeated when the clocks fall back fires on both passes.
    repeats_in_fall_back: bool,
}

impl CronSchedule {
    /// How a process's presence row names it: what another process compares with its own.
    pub fn signature(&self) -> drover_core::CronSignature {
        drover_core::CronSignature {
            name: self.name.clone(),
            schedule: self.expression.clone(),
            timezone: self.timezone.clone(),
        }
    }

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
    // Each field's name and what it takes.
    const SECOND: (&str, &str) = ("second", "0-59");
    let names: &[(&str, &str)] = &[
        ("minute", "0-59"),
        ("hour", "0-23"),
        ("day of month", "1-31, L, W"),
        ("month", "1-12 or JAN-DEC"),
        ("day of week", "0-7 or SUN-SAT, L, #"),
    ];
    let names: Vec<(&str, &str)> = match fields.len() {
        5 => names.to_vec(),
        6 => std::iter::once(SECOND)
            .chain(names.iter().copied())
            .collect(),
        _ => return Err(err),
    };
    // Each field alone, every other one a wildcard: the first that fails is the culprit.
    for (i, (name, takes)) in names.iter().enumerate() {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if i == j { fields[j] } else { "*" })
            .collect();
        if let Err(field_err) = cron_parser().parse(&alone.join(" ")) {
            // croner's words after its own prefix: "Number out of bounds.", "Invalid pattern".
            let why = field_err.to_string();
            let why = why.strip_prefix("Component error: ").unwrap_or(&why);
            let why = why.trim_end_matches('.');
            return Err(format!(
                "the {name} field {:?}: {why} (a {name} is {takes}, with * , - and /)",
                fields[i]
            ));
        }
    }
    Err(err)
}

/// Whether a schedule fires on both passes of an hour repeated when the clocks fall back: as
/// in Vixie cron, only when its second, minute or hour field is `*` or a step (`*/15`, `0/10`),
/// a rate in real time. A schedule of named times (`30 2`, `0,30 2`, `0 2-4`) fires at each
/// wall-clock time once, on its first pass.
fn repeats_in_fall_back(cron: &Cron) -> bool {
    let pattern = &cron.pattern;
    [&pattern.seconds, &pattern.minutes, &pattern.hours]
        .iter()
        .any(|field| field.from_wildcard || field.step > 1)
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
        let repeats_in_fall_back = repeats_in_fall_back(&cron);
        let parsed = ParsedSchedule {
            schedule,
            cron,
            tz,
            repeats_in_fall_back,
        };
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
        let mut from = after;
        let next = loop {
            let next = self
                .cron
                .find_next_occurrence(&self.zoned(from), false)
                .ok()?
                .timestamp();
            if !self.skips(next) {
                break next;
            }
            from = next;
        };
        Some(self.skipped_over(after, next).unwrap_or(next))
    }

    /// The last fire time at or before `at`.
    pub fn latest_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        let mut to = at;
        let latest = loop {
            let latest = self
                .cron
                .find_previous_occurrence(&self.zoned(to), true)
                .ok()?
                .timestamp();
            if !self.skips(latest) {
                break latest;
            }
            to = latest.checked_sub(SignedDuration::from_nanos(1)).ok()?;
        };
        Some(self.skipped_over(latest, at).unwrap_or(latest))
    }

    /// The instant in `(from, to]` when the clocks sprang over a wall-clock time that this
    /// schedule names, if any: its fire time that night. croner gives it for a pattern of one
    /// time (`30 2 * * *` at 03:00) but skips it for one of several (`0,30 2 * * *`).
    fn skipped_over(&self, from: Timestamp, to: Timestamp) -> Option<Timestamp> {
        if self.repeats_in_fall_back {
            return None;
        }
        let just_before = |t: Timestamp| t.checked_sub(SignedDuration::from_nanos(1)).ok();
        for transition in self.tz.following(from) {
            let at = transition.timestamp();
            if at > to {
                break;
            }
            let old = self.tz.to_offset(just_before(at)?);
            if transition.offset() <= old {
                continue;
            }
            // The wall clock jumped from `at` in the old offset to `at` in the new one.
            let (gap_start, gap_end) = (old.to_datetime(at), transition.offset().to_datetime(at));
            let probe = gap_start.to_zoned(TimeZone::UTC).ok()?;
            let named = self.cron.find_next_occurrence(&probe, true).ok()?;
            if named.datetime() < gap_end {
                return Some(at);
            }
        }
        None
    }

    /// Whether croner's `fire` is the second pass of a wall-clock time that this schedule
    /// fires only once. croner repeats every time of a pattern with more than one value in its
    /// second, minute or hour field, so that `0,30 2 * * *` fired twice at 02:00 and at 02:30
    /// on the night the clocks fall back, where `30 2 * * *` fired once.
    fn skips(&self, fire: Timestamp) -> bool {
        if self.repeats_in_fall_back {
            return false;
        }
        let wall = fire.to_zoned(self.tz.clone()).datetime();
        self.tz
            .to_ambiguous_timestamp(wall)
            .earlier()
            .is_ok_and(|first| first < fire)
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
        // What the field takes, in place of croner's "Component error: Number out of bounds.".
        let err = parse_expression("61 * * * *").unwrap_err();
        assert_eq!(
            err,
            "the minute field \"61\": Number out of bounds (a minute is 0-59, with * , - and /)"
        );
        // What the message says a field takes, it does take.
        for expression in [
            "0 0 L * *",
            "0 0 15W * *",
            "0 0 * JAN-DEC SUN-SAT",
            "0 0 * * 5#2",
            "0 0 * * 5L",
            "0 0 * * 7",
        ] {
            assert!(parse_expression(expression).is_ok(), "{expression}");
        }
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

    /// Berlin wall-clock times (with their offsets) of every fire over the night `day` (from
    /// noon UTC the day before to 18:00 UTC), found forwards, and the same found backwards.
    fn night(expression: &str, day: &str) -> (Vec<String>, Vec<String>) {
        let berlin = schedule(expression, Some("Europe/Berlin"), CatchUp::All);
        let to = ts(&format!("{day}T18:00:00Z"));
        let from = to.checked_sub(SignedDuration::from_hours(30)).unwrap();
        let wall = |t: Timestamp| {
            t.to_zoned(TimeZone::get("Europe/Berlin").unwrap())
                .strftime("%d %H:%M%:z")
                .to_string()
        };
        let mut forwards = Vec::new();
        let mut t = from;
        while let Some(next) = berlin.next_after(t).filter(|next| *next <= to) {
            forwards.push(wall(next));
            t = next;
        }
        let mut backwards = Vec::new();
        let mut t = to;
        while let Some(latest) = berlin.latest_at_or_before(t).filter(|l| *l > from) {
            backwards.push(wall(latest));
            t = latest.checked_sub(SignedDuration::from_nanos(1)).unwrap();
        }
        backwards.reverse();
        (forwards, backwards)
    }

    const FALL_BACK: &str = "2026-10-25";
    const SPRING_FORWARD: &str = "2026-03-29";

    #[test]
    fn named_times_the_clocks_skip_fire_when_they_spring_forward_and_rates_do_not() {
        for expression in ["30 2 * * *", "0,30 2 * * *"] {
            let (forwards, backwards) = night(expression, SPRING_FORWARD);
            assert_eq!(forwards, ["29 03:00+02:00"], "{expression}");
            assert_eq!(backwards, forwards, "{expression}");
        }
        let (forwards, backwards) = night("15 1-3 * * *", SPRING_FORWARD);
        assert_eq!(
            forwards,
            ["29 01:15+01:00", "29 03:00+02:00", "29 03:15+02:00"]
        );
        assert_eq!(backwards, forwards);
        let (forwards, backwards) = night("*/30 2 * * *", SPRING_FORWARD);
        assert!(forwards.is_empty(), "{forwards:?}");
        assert!(backwards.is_empty(), "{backwards:?}");
    }

    #[test]
    fn named_times_fire_once_when_the_clocks_fall_back_and_rates_keep_real_time() {
        // Two named times a night fire once each, as one does.
        let (forwards, backwards) = night("0,30 2 * * *", FALL_BACK);
        assert_eq!(forwards, ["25 02:00+02:00", "25 02:30+02:00"]);
        assert_eq!(backwards, forwards);
        let (forwards, _) = night("30 2 * * *", FALL_BACK);
        assert_eq!(forwards, ["25 02:30+02:00"]);
        // A range of hours is named times too.
        let (forwards, backwards) = night("15 1-3 * * *", FALL_BACK);
        assert_eq!(
            forwards,
            ["25 01:15+02:00", "25 02:15+02:00", "25 03:15+01:00"]
        );
        assert_eq!(backwards, forwards);
        // Every 30 minutes is a rate: the repeated hour runs it twice, 30 minutes apart.
        let (forwards, backwards) = night("*/30 2 * * *", FALL_BACK);
        assert_eq!(
            forwards,
            [
                "25 02:00+02:00",
                "25 02:30+02:00",
                "25 02:00+01:00",
                "25 02:30+01:00"
            ]
        );
        assert_eq!(backwards, forwards);
    }
}
