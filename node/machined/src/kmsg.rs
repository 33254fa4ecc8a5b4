//! The kernel log from /dev/kmsg, formatted one record per line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FACILITIES: [&str; 12] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp",
];
const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// One /dev/kmsg record: `prio,seq,usec,flags;text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub facility: u32,
    pub level: u32,
    pub sequence: u64,
    pub since_boot: Duration,
    pub message: String,
}

impl Record {
    pub fn parse(raw: &str) -> Option<Record> {
        let (header, body) = raw.split_once(';')?;
        let mut fields = header.split(',');
        let prio: u32 = fields.next()?.parse().ok()?;
        let sequence = fields.next()?.parse().ok()?;
        let usec: u64 = fields.next()?.parse().ok()?;
        let message = body.lines().next().unwrap_or("").to_owned();
        Some(Record {
            facility: prio >> 3,
            level: prio & 7,
            sequence,
            since_boot: Duration::from_micros(usec),
            message,
        })
    }

    /// `facility: level: [time]: message`, with the wall-clock time of the record.
    pub fn format(&self, boot_time: SystemTime) -> String {
        let facility = FACILITIES
            .get(self.facility as usize)
            .copied()
            .unwrap_or("local");
        let level = LEVELS.get(self.level as usize).copied().unwrap_or("debug");
        format!(
            "{facility}: {level:>7}: [{}]: {}\n",
            rfc3339(boot_time + self.since_boot),
            self.message
        )
    }
}

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Wall-clock time of boot, from /proc/uptime.
pub fn boot_time() -> SystemTime {
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| crate::sysinfo::uptime(&s))
        .unwrap_or(0.0);
    SystemTime::now() - Duration::from_secs_f64(uptime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_record() {
        let r = Record::parse(
            "6,339,5140900,-;NET: Registered PF_INET6 protocol family\n SUBSYSTEM=net\n",
        )
        .unwrap();
        assert_eq!(r.facility, 0);
        assert_eq!(r.level, 6);
        assert_eq!(r.sequence, 339);
        assert_eq!(r.since_boot, Duration::from_micros(5_140_900));
        assert_eq!(r.message, "NET: Registered PF_INET6 protocol family");
        assert!(Record::parse("garbage").is_none());
    }

    #[test]
    fn formats_like_a_log_line() {
        let r = Record::parse("3,1,1500000,-;oops").unwrap();
        let line = r.format(UNIX_EPOCH + Duration::from_secs(1_764_000_000));
        assert_eq!(line, "kern:     err: [2025-11-24T16:00:01.500Z]: oops\n");
    }

    #[test]
    fn rfc3339_handles_leap_years() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
