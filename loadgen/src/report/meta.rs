//! Where and when a report was made: date, commit, command line, machine.
//! A number without these cannot be compared with another one later.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::run::health;

/// The run's provenance, in every report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Meta {
    /// When the run started, UTC, RFC 3339 (`2026-12-06T03:15:00Z`).
    pub date_utc: String,
    /// `git rev-parse HEAD` of the source tree the binary was built from
    /// (read when the run starts), with `-dirty` when it has uncommitted
    /// changes; `unknown` outside a git checkout.
    pub git_commit: String,
    /// The load generator's version.
    pub loadgen_version: String,
    /// The command line, arguments quoted where needed.
    pub command_line: String,
    /// Host name.
    pub host: String,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// `/proc/loadavg` when the run started (1, 5, 15 minutes).
    pub loadavg_start: [f64; 3],
    /// The same when it ended.
    pub loadavg_end: [f64; 3],
}

impl Meta {
    /// Everything known when the run starts (`loadavg_end` is filled by
    /// [`Meta::finish`]).
    pub fn at_start() -> Self {
        Meta {
            date_utc: rfc3339(SystemTime::now()),
            git_commit: git_commit(),
            loadgen_version: env!("CARGO_PKG_VERSION").to_string(),
            command_line: command_line(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            cpu_model: cpu_model(),
            cores: health::cores(),
            loadavg_start: health::loadavg(),
            loadavg_end: [0.0; 3],
        }
    }

    /// The run ended.
    pub fn finish(&mut self) {
        self.loadavg_end = health::loadavg();
    }
}

/// The command line as a shell would take it back.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn git_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(head) if !head.is_empty() => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{head}-dirty") } else { head }
        }
        _ => "unknown".into(),
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `t` as `YYYYMMDD-HHMMSS` (UTC), for directory names.
pub fn compact(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// UTC calendar fields of `t` (proleptic Gregorian; the days-to-civil
/// algorithm of H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.
        assert_eq!(rfc3339(at(951_827_696)), "2000-02-29T12:34:56Z");
        assert_eq!(rfc3339(at(1_798_761_599)), "2026-12-31T23:59:59Z");
        assert_eq!(compact(at(1_798_761_599)), "20261231-235959");
    }

    #[test]
    fn metadata_is_filled() {
        let m = Meta::at_start();
        assert!(m.date_utc.ends_with('Z'));
        assert!(m.cores >= 1);
        assert!(!m.command_line.is_empty());
    }
}
