//! Time as a value: [`Instant`].

use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A monotonic point in time: nanoseconds since the caller's epoch. The one clock type shared
/// by every sans-IO state machine of this project.
///
/// The protocol crates never read a clock. The caller passes the current time in, counted
/// from an epoch of its choosing (boot, the start of a simulation, the first packet of a
/// capture). Only differences between instants matter, so a simulation can run at any speed
/// and a replay reproduces a run exactly.
///
/// Arithmetic saturates at the ends of the range instead of panicking, so a hostile or
/// careless input (a timestamp near `u64::MAX`) cannot crash a state machine.
///
/// ```
/// use core::time::Duration;
/// use netpoll_frame::Instant;
///
/// let start = Instant::from_millis(1_000);
/// let deadline = start + Duration::from_millis(200);
/// assert_eq!(deadline.as_nanos(), 1_200_000_000);
/// assert_eq!(deadline - start, Duration::from_millis(200));
/// assert_eq!(start.saturating_duration_since(deadline), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Self = Self(0);
    /// The latest representable instant (about 584 years after the epoch).
    pub const MAX: Self = Self(u64::MAX);

    /// The instant `nanos` nanoseconds after the epoch.
    #[inline]
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// The instant `micros` microseconds after the epoch (saturating).
    #[inline]
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros.saturating_mul(1_000))
    }

    /// The instant `millis` milliseconds after the epoch (saturating).
    #[inline]
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the epoch.
    #[inline]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time elapsed from `earlier` to `self`, or zero when `earlier` is later.
    #[inline]
    pub const fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + duration`, or `None` past [`Instant::MAX`].
    #[inline]
    pub fn checked_add(self, duration: Duration) -> Option<Self> {
        let nanos = u64::try_from(duration.as_nanos()).ok()?;
        self.0.checked_add(nanos).map(Self)
    }

    /// `self - duration`, or `None` before the epoch.
    #[inline]
    pub fn checked_sub(self, duration: Duration) -> Option<Self> {
        let nanos = u64::try_from(duration.as_nanos()).ok()?;
        self.0.checked_sub(nanos).map(Self)
    }
}

impl Add<Duration> for Instant {
    type Output = Self;

    /// Saturates at [`Instant::MAX`].
    #[inline]
    fn add(self, duration: Duration) -> Self {
        self.checked_add(duration).unwrap_or(Self::MAX)
    }
}

impl AddAssign<Duration> for Instant {
    #[inline]
    fn add_assign(&mut self, duration: Duration) {
        *self = *self + duration;
    }
}

impl Sub for Instant {
    type Output = Duration;

    /// The time from `earlier` to `self`, zero when `earlier` is later (saturating).
    #[inline]
    fn sub(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_instead_of_panicking() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::from_millis(u64::MAX), Instant::MAX);
        assert_eq!(Instant::ZERO.checked_sub(Duration::from_nanos(1)), None);
        assert_eq!(Instant::ZERO - Instant::from_nanos(5), Duration::ZERO);
        assert_eq!(Instant::from_micros(3).as_nanos(), 3_000);
        let mut t = Instant::from_nanos(10);
        t += Duration::from_nanos(5);
        assert_eq!(t, Instant::from_nanos(15));
    }
}
