//! Setting and slewing the system clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::SysError;

pub trait Clock {
    fn now(&self) -> SystemTime;
    /// Jumps the clock to `to`.
    fn step(&self, to: SystemTime) -> Result<(), SysError>;
    /// Speeds up or slows down the clock until it has moved by `offset_ns` (adjtime).
    fn slew(&self, offset_ns: i64) -> Result<(), SysError>;
}

impl Clock for crate::fs::Linux {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn step(&self, to: SystemTime) -> Result<(), SysError> {
        let since = to.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(since.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(since.subsec_nanos()),
        };
        // SAFETY: `ts` is a valid timespec that outlives the call.
        if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
            return Err(SysError::last(
                "clock_settime",
                format!("{}s", since.as_secs()),
            ));
        }
        Ok(())
    }

    fn slew(&self, offset_ns: i64) -> Result<(), SysError> {
        let delta = libc::timeval {
            tv_sec: libc::time_t::try_from(offset_ns.div_euclid(1_000_000_000)).unwrap_or(0),
            tv_usec: libc::suseconds_t::try_from(offset_ns.rem_euclid(1_000_000_000) / 1000)
                .unwrap_or(0),
        };
        // SAFETY: `delta` is a valid timeval; the old-delta pointer may be null.
        if unsafe { libc::adjtime(&delta, std::ptr::null_mut()) } != 0 {
            return Err(SysError::last("adjtime", format!("{offset_ns}ns")));
        }
        Ok(())
    }
}
