//! The one time grammar of every command: the run date a nightly job
//! scores, `{date}` templates in its paths and job id, points in time
//! (`--deadline` in `submit`, `scaler`, `scaler simulate` and watch rules)
//! and times of day, always read in the command's `--tz`.
//!
//! A nightly CronJob runs `hourglass submit --input s3://feat/{date}/
//! --job-id ctr-{date} --deadline 06:00 --tz Europe/Berlin`. Every attempt
//! of that night's run expands to the same paths and job id, so a retried
//! CronJob resumes the job instead of starting a second one.

use crate::{Error, Result};
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

fn err(what: impl std::fmt::Display, spec: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{what} {spec:?}"), why)
}

/// The time zone a schedule is read in: an IANA name (`Europe/Berlin`) or `UTC`.
pub fn time_zone(name: &str) -> Result<TimeZone> {
    TimeZone::get(name).map_err(|e| err("--tz", name, format!("not a time zone ({e})")))
}

/// The date a run scores: `today`, `yesterday`, `today-N` or a `YYYY-MM-DD`,
/// with today read in `tz` at `now`.
pub fn run_date(spec: &str, now: Timestamp, tz: &TimeZone) -> Result<Date> {
    let today = now.to_zoned(tz.clone()).date();
    let bad = |why: &str| err("--date", spec, format!("{why}; use today, yesterday, today-N or YYYY-MM-DD"));
    let back = match spec {
        "today" => 0,
        "yesterday" => 1,
        s => match s.strip_prefix("today-") {
            Some(n) => n.parse::<i32>().map_err(|_| bad("not a number of days"))?,
            None => return s.parse::<Date>().map_err(|_| bad("not a date")),
        },
    };
    today.checked_sub(back.days()).map_err(|_| bad("out of range"))
}

/// Expands `{date}` (`2026-11-22`) and `{date:FORMAT}` (strftime, e.g.
/// `{date:%Y/%m/%d}` or `dt={date:%Y%m%d}`) in `template`. Any other
/// `{...}` is an error naming `what`, so a typo cannot reach S3 as a literal.
pub fn expand(what: &str, template: &str, date: Date) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            return Err(err(what, template, "'{' without a closing '}'"));
        };
        let name = &rest[open + 1..open + close];
        match name.split_once(':') {
            None if name == "date" => out.push_str(&date.to_string()),
            Some(("date", format)) if !format.is_empty() => {
                let formatted = jiff::fmt::strtime::format(format, date)
                    .map_err(|e| err(what, template, format!("format {format:?}: {e}")))?;
                out.push_str(&formatted);
            }
            _ => {
                return Err(err(
                    what,
                    template,
                    format!("unknown placeholder {{{name}}}; use {{date}} or {{date:%Y%m%d}}"),
                ));
            }
        }
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(err(what, template, "'}' without an opening '{'"));
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `s` holds a placeholder [`expand`] would replace.
pub fn is_template(s: &str) -> bool {
    s.contains('{')
}

/// The grammar of a point in time, the same for every flag that takes one:
/// - a duration from `now`: `+1h`, `+90m`, or without the `+` (`1h30m`);
/// - a time of day, `HH:MM` or `HH:MM:SS`: the next such wall-clock time in
///   `tz` strictly after `now` (see [`next_time_of_day`]);
/// - an RFC 3339 time with an offset (`2026-11-24T06:00:00+01:00`, `…Z`);
///   without one (`2026-11-24T06:00`, `2026-11-24 06:00`) it is read in `tz`.
pub const INSTANT_FORMS: &str = "+DURATION (+1h), HH:MM (the next one in --tz) or an RFC 3339 time";

/// Reads `spec` in the grammar of [`INSTANT_FORMS`]; `what` names the flag
/// in errors.
pub fn parse_instant(what: &str, spec: &str, now: Timestamp, tz: &TimeZone) -> Result<Timestamp> {
    let spec = spec.trim();
    let bad = |why: String| err(what, spec, format!("{why}; expected {INSTANT_FORMS}"));
    if is_time_of_day(spec) {
        return next_time_of_day(what, spec, now, tz);
    }
    let relative = spec.strip_prefix('+').unwrap_or(spec);
    if relative.starts_with(|c: char| c.is_ascii_digit()) && !spec.contains(['-', ':']) {
        let d = humantime::parse_duration(relative).map_err(|e| bad(e.to_string()))?;
        let d = jiff::SignedDuration::try_from(d).map_err(|e| bad(e.to_string()))?;
        return now.checked_add(d).map_err(|e| bad(e.to_string()));
    }
    if let Ok(t) = spec.parse::<Timestamp>() {
        return Ok(t);
    }
    match spec.parse::<jiff::civil::DateTime>() {
        Ok(local) => local.to_zoned(tz.clone()).map(|z| z.timestamp()).map_err(|e| bad(e.to_string())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// `HH:MM` (or `HH:MM:SS`) as the next such wall-clock time in `tz` strictly
/// after `now`: at 01:00 `06:00` is five hours ahead, at 07:00 it is
/// tomorrow's. A time skipped by a DST change moves forward (02:30 on the
/// spring-forward night is 03:30).
pub fn next_time_of_day(what: &str, spec: &str, now: Timestamp, tz: &TimeZone) -> Result<Timestamp> {
    let time = parse_time_of_day(what, spec)?;
    let now_local: Zoned = now.to_zoned(tz.clone());
    let mut date = now_local.date();
    for _ in 0..3 {
        let at = date.to_datetime(time).to_zoned(tz.clone()).map_err(|e| err(what, spec, e))?.timestamp();
        if at > now {
            return Ok(at);
        }
        date = date.tomorrow().map_err(|e| err(what, spec, e))?;
    }
    unreachable!("a time of day recurs within two days")
}

/// The latest start of a daily window at `at` (wall-clock in `tz`) at or
/// before `now`: today's, or yesterday's before today's has come. Across a
/// DST change the window keeps its wall-clock time.
pub fn last_time_of_day(at: Time, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    let today = now.to_zoned(tz.clone()).date();
    [Some(today), today.yesterday().ok()]
        .into_iter()
        .flatten()
        .filter_map(|d| d.to_datetime(at).to_zoned(tz.clone()).ok().map(|z| z.timestamp()))
        .find(|t| *t <= now)
}

/// `HH:MM` or `HH:MM:SS`, 00:00 to 23:59:59.
pub fn parse_time_of_day(what: &str, spec: &str) -> Result<Time> {
    if !is_time_of_day(spec) {
        return Err(err(what, spec, "expected a time of day HH:MM, e.g. 01:45"));
    }
    spec.parse().map_err(|e| err(what, spec, e))
}

/// Whether `spec` has the shape of a time of day (`06:00`, `23:59:30`).
pub fn is_time_of_day(spec: &str) -> bool {
    let b = spec.as_bytes();
    matches!(b.len(), 5 | 8) && b[2] == b':' && b.iter().all(|c| c.is_ascii_digit() || *c == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn run_dates_read_today_in_the_zone() {
        let utc = TimeZone::UTC;
        let berlin = time_zone("Europe/Berlin").unwrap();
        // 23:30 UTC is already tomorrow in Berlin.
        let now = ts("2026-11-22T23:30:00Z");
        assert_eq!(run_date("today", now, &utc).unwrap().to_string(), "2026-11-22");
        assert_eq!(run_date("today", now, &berlin).unwrap().to_string(), "2026-11-23");
        assert_eq!(run_date("yesterday", now, &utc).unwrap().to_string(), "2026-11-21");
        assert_eq!(run_date("today-7", now, &utc).unwrap().to_string(), "2026-11-15");
        assert_eq!(run_date("2025-01-31", now, &utc).unwrap().to_string(), "2025-01-31");
        let err = run_date("2025-02-30", now, &utc).unwrap_err().to_string();
        assert!(err.contains("--date \"2025-02-30\""), "{err}");
        assert!(run_date("today-x", now, &utc).is_err());
        assert!(time_zone("Mars/Olympus").unwrap_err().to_string().contains("Mars/Olympus"));
    }

    #[test]
    fn expands_date_placeholders_and_rejects_others() {
        let d: Date = "2026-11-02".parse().unwrap();
        assert_eq!(expand("--input", "s3://feat/{date}/", d).unwrap(), "s3://feat/2026-11-02/");
        assert_eq!(expand("--input", "s3://feat/dt={date:%Y%m%d}/x", d).unwrap(), "s3://feat/dt=20261102/x");
        assert_eq!(expand("--job-id", "ctr-{date}", d).unwrap(), "ctr-2026-11-02");
        assert_eq!(expand("--input", "s3://plain/", d).unwrap(), "s3://plain/");
        for bad in ["s3://feat/{dat}/", "s3://feat/{date", "s3://feat/date}", "{date:}"] {
            let err = expand("--input", bad, d).unwrap_err().to_string();
            assert!(err.starts_with("--input"), "{bad}: {err}");
        }
    }

    #[test]
    fn deadline_is_the_next_wall_clock_time() {
        let utc = TimeZone::UTC;
        let next = |spec: &str, now: &str, tz: &TimeZone| next_time_of_day("t", spec, ts(now), tz).unwrap().to_string();
        assert_eq!(next("06:00", "2026-11-22T01:00:00Z", &utc), "2026-11-22T06:00:00Z");
        assert_eq!(next("06:00", "2026-11-22T07:00:00Z", &utc), "2026-11-23T06:00:00Z");
        assert_eq!(next("06:00", "2026-11-22T06:00:00Z", &utc), "2026-11-23T06:00:00Z");
        let berlin = time_zone("Europe/Berlin").unwrap();
        // Winter: UTC+1.
        assert_eq!(next("06:00", "2026-11-22T01:00:00Z", &berlin), "2026-11-22T05:00:00Z");
        // Summer: UTC+2.
        assert_eq!(next("06:00", "2026-07-01T01:00:00Z", &berlin), "2026-07-01T04:00:00Z");
        // 02:30 does not exist on 2026-03-29 in Berlin: it becomes 03:30 CEST.
        assert_eq!(next("02:30", "2026-03-29T00:00:00Z", &berlin), "2026-03-29T01:30:00Z");
        assert!(next_time_of_day("t", "6am", ts("2026-11-22T01:00:00Z"), &utc).is_err());
        assert!(is_time_of_day("06:00") && is_time_of_day("23:59:30"));
        assert!(!is_time_of_day("+1h") && !is_time_of_day("2026-11-22T06:00:00Z"));
    }

    #[test]
    fn one_grammar_for_every_point_in_time() {
        let berlin = time_zone("Europe/Berlin").unwrap();
        let now = ts("2026-11-22T01:00:00Z");
        let at = |s: &str| parse_instant("--deadline", s, now, &berlin).map(|t| t.to_string());
        assert_eq!(at("+1h").unwrap(), "2026-11-22T02:00:00Z");
        assert_eq!(at("1h30m").unwrap(), "2026-11-22T02:30:00Z");
        assert_eq!(at("06:00").unwrap(), "2026-11-22T05:00:00Z");
        assert_eq!(at("2026-11-24T06:00:00Z").unwrap(), "2026-11-24T06:00:00Z");
        assert_eq!(at("2026-11-24T06:00:00+01:00").unwrap(), "2026-11-24T05:00:00Z");
        // No offset: read in --tz.
        assert_eq!(at("2026-11-24T06:00").unwrap(), "2026-11-24T05:00:00Z");
        assert_eq!(at("2026-11-24 06:00:00").unwrap(), "2026-11-24T05:00:00Z");
        for bad in ["tomorrow", "6am", "+", "25:00", "+1 fortnight"] {
            let e = at(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--deadline {bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn daily_windows_keep_their_wall_clock_time_across_dst() {
        let berlin = time_zone("Europe/Berlin").unwrap();
        let at: Time = "01:30".parse().unwrap();
        // Winter (UTC+1): 01:30 Berlin is 00:30 UTC.
        assert_eq!(
            last_time_of_day(at, ts("2026-11-22T00:45:00Z"), &berlin).unwrap().to_string(),
            "2026-11-22T00:30:00Z"
        );
        // Summer (UTC+2): 01:30 Berlin is 23:30 UTC the day before.
        assert_eq!(
            last_time_of_day(at, ts("2026-07-01T00:00:00Z"), &berlin).unwrap().to_string(),
            "2026-06-30T23:30:00Z"
        );
        // Before today's window: yesterday's.
        assert_eq!(
            last_time_of_day(at, ts("2026-11-22T00:00:00Z"), &berlin).unwrap().to_string(),
            "2026-11-21T00:30:00Z"
        );
        assert!(parse_time_of_day("--prewarm-at", "24:00").is_err());
        assert!(parse_time_of_day("--prewarm-at", "0145").is_err());
    }
}
