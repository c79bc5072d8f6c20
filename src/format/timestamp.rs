//! VHD time stamps: seconds since 2000-01-01 00:00:00 UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the Unix epoch to the VHD epoch (2000-01-01T00:00:00Z).
pub const VHD_EPOCH_UNIX: u64 = 946_684_800;

/// A time stamp as stored in a footer or dynamic header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u32);

impl Timestamp {
    /// The time stamp of `time`, saturating at the ends of the range.
    pub fn from_system_time(time: SystemTime) -> Self {
        let unix = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let secs = unix.saturating_sub(VHD_EPOCH_UNIX);
        Timestamp(u32::try_from(secs).unwrap_or(u32::MAX))
    }

    /// Now.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// The time this stamp stands for.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(VHD_EPOCH_UNIX + u64::from(self.0))
    }

    /// RFC 3339 text in UTC, e.g. `2024-05-01T12:00:00Z`.
    pub fn to_rfc3339(self) -> String {
        humantime::format_rfc3339_seconds(self.to_system_time()).to_string()
    }
}
