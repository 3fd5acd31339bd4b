//! Time stamps and file names: the `YYYY-MM-DD-HH-MM-SS` UTC second that
//! names every backup, the `-D` date argument, and which names in a
//! repository are backup data files.

use std::fmt;

use chrono::{Datelike, NaiveDate, Timelike, Utc};

use crate::error::{Error, Result};

/// Environment variable that, when set to `YYYY-MM-DD-HH-MM-SS`, replaces
/// the clock for naming backups and as the default recovery date. It exists
/// for tests (ZODB's repozo has the same hook as `options.test_now`).
pub const NOW_ENV: &str = "REPOZO_TEST_NOW";

/// How far (seconds) the newest stamp in a repository may lie after the
/// clock: one hour. Within it a new backup is named one second after the
/// newest (stamps strictly increase); beyond it a clock is wrong, now or
/// when those backups were made: `-B` refuses to run (naming the backup
/// after the future stamp would make every later stamp wrong and `-D`
/// with a real date return an older state) and `-V --max-age` fails.
pub const FUTURE_TOLERANCE: i64 = 3600;

/// `Some(seconds)` when `newest` lies after `now` by more than
/// [`FUTURE_TOLERANCE`].
pub fn too_far_ahead(newest: Stamp, now: Stamp) -> Option<i64> {
    let ahead = newest.seconds_since(now);
    (ahead > FUTURE_TOLERANCE).then_some(ahead)
}

/// One UTC second, compared field by field (which is also the order of the
/// names, since every field has a fixed width).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub year: u32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Stamp {
    /// The current UTC second (or [`NOW_ENV`] when set and valid).
    pub fn now() -> Result<Stamp> {
        if let Ok(v) = std::env::var(NOW_ENV) {
            return Stamp::parse_date(&v);
        }
        let t = Utc::now();
        Ok(Stamp {
            year: t.year() as u32,
            month: t.month(),
            day: t.day(),
            hour: t.hour(),
            minute: t.minute(),
            second: t.second(),
        })
    }

    /// Parse a `-D` argument: `yyyy-mm-dd[-hh[-mm[-ss]]]`, missing parts
    /// zero. Each field must have its full width and be a valid calendar
    /// value.
    pub fn parse_date(s: &str) -> Result<Stamp> {
        let bad = || Error::BadDate(s.to_string());
        let parts: Vec<&str> = s.split('-').collect();
        if !(3..=6).contains(&parts.len()) {
            return Err(bad());
        }
        let mut v = [0u32; 6];
        for (i, p) in parts.iter().enumerate() {
            let width = if i == 0 { 4 } else { 2 };
            if p.len() != width || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            v[i] = p.parse().map_err(|_| bad())?;
        }
        let st = Stamp {
            year: v[0],
            month: v[1],
            day: v[2],
            hour: v[3],
            minute: v[4],
            second: v[5],
        };
        if NaiveDate::from_ymd_opt(st.year as i32, st.month, st.day).is_none()
            || st.hour > 23
            || st.minute > 59
            || st.second > 59
        {
            return Err(bad());
        }
        Ok(st)
    }

    /// Parse the 19-character stamp at the start of a backup file name.
    /// Only the shape is checked (digits and dashes), as repozo does.
    fn parse_name_stamp(s: &str) -> Option<Stamp> {
        let b = s.as_bytes();
        if b.len() != 19 {
            return None;
        }
        for (i, &c) in b.iter().enumerate() {
            let dash = matches!(i, 4 | 7 | 10 | 13 | 16);
            if dash != (c == b'-') || (!dash && !c.is_ascii_digit()) {
                return None;
            }
        }
        let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
        let st = Stamp {
            year: num(0..4)?,
            month: num(5..7)?,
            day: num(8..10)?,
            hour: num(11..13)?,
            minute: num(14..16)?,
            second: num(17..19)?,
        };
        // A name whose date cannot exist was not written by a repozo: it
        // is not a backup (and could not be followed by a valid name).
        st.is_valid().then_some(st)
    }

    /// Seconds since the Unix epoch (0 for a date that cannot exist).
    pub fn unix_seconds(self) -> i64 {
        self.seconds_since(Stamp {
            year: 1970,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
        })
    }

    /// Seconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn seconds_since(self, earlier: Stamp) -> i64 {
        let t = |s: Stamp| {
            NaiveDate::from_ymd_opt(s.year as i32, s.month, s.day)
                .and_then(|d| d.and_hms_opt(s.hour, s.minute, s.second))
                .map(|dt| dt.and_utc().timestamp())
        };
        match (t(self), t(earlier)) {
            (Some(a), Some(b)) => a - b,
            _ => 0,
        }
    }

    /// Whether this is a real UTC second (seconds 0..=59).
    pub fn is_valid(&self) -> bool {
        NaiveDate::from_ymd_opt(self.year as i32, self.month, self.day).is_some()
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
    }

    /// The next second, for keeping stamps strictly increasing.
    pub fn next_second(self) -> Stamp {
        let date = NaiveDate::from_ymd_opt(self.year as i32, self.month, self.day)
            .and_then(|d| d.and_hms_opt(self.hour, self.minute, self.second));
        match date {
            Some(dt) => {
                let n = dt + chrono::Duration::seconds(1);
                Stamp {
                    year: n.year() as u32,
                    month: n.month(),
                    day: n.day(),
                    hour: n.hour(),
                    minute: n.minute(),
                    second: n.second(),
                }
            }
            // A name with an impossible date (only its shape was checked):
            // bump the raw second field, which still sorts after it.
            None => Stamp {
                second: self.second + 1,
                ..self
            },
        }
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}-{:02}-{:02}-{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Full backup or increment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `.fs` / `.fsz`; sorts first so that a full backup precedes an
    /// increment with the same stamp.
    Full,
    /// `.deltafs` / `.deltafsz`
    Incremental,
}

/// A backup data file name, decoded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DataName {
    pub stamp: Stamp,
    pub kind: Kind,
    pub gzip: bool,
}

impl DataName {
    /// Decode a repository entry name; `None` for anything that is not a
    /// backup data file (repozo's `\d{4}(-\d\d){5}\.(delta)?fsz?`).
    pub fn parse(name: &str) -> Option<DataName> {
        let (stem, ext) = name.split_once('.')?;
        let stamp = Stamp::parse_name_stamp(stem)?;
        let (kind, gzip) = match ext {
            "fs" => (Kind::Full, false),
            "fsz" => (Kind::Full, true),
            "deltafs" => (Kind::Incremental, false),
            "deltafsz" => (Kind::Incremental, true),
            _ => return None,
        };
        Some(DataName { stamp, kind, gzip })
    }

    /// The file name: stamp plus extension.
    pub fn file_name(&self) -> String {
        let ext = match (self.kind, self.gzip) {
            (Kind::Full, false) => "fs",
            (Kind::Full, true) => "fsz",
            (Kind::Incremental, false) => "deltafs",
            (Kind::Incremental, true) => "deltafsz",
        };
        format!("{}.{ext}", self.stamp)
    }

    /// The `.dat` file that a full backup with this name heads.
    pub fn dat_name(&self) -> String {
        format!("{}.dat", self.stamp)
    }

    /// The `.index` file written beside this data file.
    pub fn index_name(&self) -> String {
        format!("{}.index", self.stamp)
    }
}

/// A duration for people: `3d 2h`, `26h 5m`, `40s`.
pub fn human(secs: i64) -> String {
    if secs < 0 {
        return format!("-{}", human(-secs));
    }
    let (d, h, m, s) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(s: &str) -> Stamp {
        Stamp::parse_date(s).unwrap()
    }

    #[test]
    fn dates_with_missing_parts_are_zero() {
        assert_eq!(st("2026-11-20"), st("2026-11-20-00-00-00"));
        assert_eq!(st("2026-11-20-05"), st("2026-11-20-05-00-00"));
        assert!(st("2026-11-20-05-01") < st("2026-11-20-05-01-01"));
        assert_eq!(st("2026-11-20-05-06-07").to_string(), "2026-11-20-05-06-07");
    }

    #[test]
    fn malformed_dates_are_rejected() {
        for bad in [
            "",
            "2026",
            "2026-11",
            "2026-1-20",
            "2026-11-20-",
            "2026-13-01",
            "2026-02-30",
            "2026-11-20-24",
            "2026-11-20-23-60",
            "2026-11-20-23-59-60",
            "2026-11-20-00-00-00-00",
            "20261120",
            "2026-11-2x",
            "+026-11-20",
            "2026-11-20 ",
            "２０２６-11-20",
        ] {
            assert!(Stamp::parse_date(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn data_names() {
        let n = DataName::parse("2026-11-20-05-06-07.deltafsz").unwrap();
        assert_eq!(n.kind, Kind::Incremental);
        assert!(n.gzip);
        assert_eq!(n.file_name(), "2026-11-20-05-06-07.deltafsz");
        assert_eq!(n.dat_name(), "2026-11-20-05-06-07.dat");
        for bad in [
            "2026-11-20-05-06-07.dat",
            "2026-11-20-05-06-07.index",
            "2026-11-20-05-06-07.fs.tmp",
            "2026-11-20-05-06.fs",
            "x026-11-20-05-06-07.fs",
            "2026-11-20-05-06-07fs",
            "2026-11-20-05-06-99.fs",
            "2026-02-30-05-06-07.deltafs",
            "tmp.tmp",
        ] {
            assert_eq!(DataName::parse(bad), None, "{bad}");
        }
        // full sorts before an increment of the same second
        let f = DataName::parse("2026-11-20-05-06-07.fs").unwrap();
        assert!(f < n);
    }

    #[test]
    fn future_tolerance() {
        let now = st("2026-11-20-12-00-00");
        assert_eq!(too_far_ahead(now, now), None);
        assert_eq!(too_far_ahead(st("2026-11-20-13-00-00"), now), None);
        assert_eq!(too_far_ahead(st("2026-11-20-13-00-01"), now), Some(3601));
        assert_eq!(too_far_ahead(st("2025-11-20-13-00-01"), now), None);
        assert_eq!(
            too_far_ahead(st("2027-11-20-12-00-00"), now),
            Some(365 * 86400)
        );
    }

    #[test]
    fn next_second_rolls_over() {
        assert_eq!(st("2026-12-31-23-59-59").next_second(), st("2027-01-01"));
        assert_eq!(st("2024-02-28-23-59-59").next_second(), st("2024-02-29"));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::fuzz_cases()))]

        #[test]
        fn any_date(s in "\\PC{0,30}") {
            if let Ok(st) = Stamp::parse_date(&s) {
                // what parses prints back as the full form of the input
                prop_assert!(st.to_string().starts_with(&s));
            }
        }

        #[test]
        fn date_like(s in "[0-9-]{8,22}") {
            let _ = Stamp::parse_date(&s);
        }

        #[test]
        fn valid_dates_round_trip(y in 1000u32..9999, mo in 1u32..=12, d in 1u32..=28,
                                  h in 0u32..24, mi in 0u32..60, se in 0u32..60) {
            let s = format!("{y:04}-{mo:02}-{d:02}-{h:02}-{mi:02}-{se:02}");
            let st = Stamp::parse_date(&s).unwrap();
            prop_assert_eq!(st.to_string(), s.clone());
            prop_assert_eq!(DataName::parse(&format!("{s}.deltafsz")).map(|n| n.stamp), Some(st));
            prop_assert!(st.next_second() > st);
        }

        #[test]
        fn any_file_name(s in "\\PC{0,40}") {
            let _ = DataName::parse(&s);
        }
    }
}
