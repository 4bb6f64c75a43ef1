//! Time as a value, read from an injectable clock.
//!
//! Every layer that needs the time takes it from a [`Clock`], so the same code runs against the
//! monotonic clock of the machine or against a [`Clock::virtual_at`] clock that a test or the
//! simulator advances by hand: a minute of TCP then takes milliseconds, and a seed replays
//! exactly.

use std::cell::Cell;
use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::rc::Rc;
use std::time::Duration;

/// A point in time, in nanoseconds since an arbitrary origin (the clock's start).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin of every clock.
    pub const ZERO: Instant = Instant(0);
    /// Later than any time a clock reaches; "never" as a deadline.
    pub const FAR_FUTURE: Instant = Instant(u64::MAX);

    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    pub const fn from_millis(millis: u64) -> Instant {
        Instant(millis * 1_000_000)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    pub const fn as_micros(self) -> u64 {
        self.0 / 1_000
    }

    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        let nanos = u64::try_from(d.as_nanos()).ok()?;
        self.0.checked_add(nanos).map(Instant)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturates at [`Instant::FAR_FUTURE`].
    fn add(self, d: Duration) -> Instant {
        self.checked_add(d).unwrap_or(Instant::FAR_FUTURE)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturates at zero.
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}s",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: read on every turn of a spinning event loop, so it is kept
/// to the vDSO call and one multiply-add (no `Duration` arithmetic).
fn monotonic_nanos() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux, so
    // the call cannot fail.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    // tv_sec and tv_nsec of CLOCK_MONOTONIC are never negative.
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// Where time comes from. Cheap to clone; clones of a virtual clock share its time.
#[derive(Clone)]
pub enum Clock {
    /// The machine's monotonic clock (vDSO `clock_gettime`, ~30 ns), in nanoseconds since
    /// `origin` (a reading of the same clock).
    Real { origin: u64 },
    /// A clock that only moves when told to.
    Virtual(Rc<Cell<Instant>>),
}

impl Clock {
    /// The monotonic clock of the machine, starting at [`Instant::ZERO`] now.
    pub fn real() -> Clock {
        Clock::Real {
            origin: monotonic_nanos(),
        }
    }

    /// A virtual clock reading `start`.
    pub fn virtual_at(start: Instant) -> Clock {
        Clock::Virtual(Rc::new(Cell::new(start)))
    }

    pub fn now(&self) -> Instant {
        match self {
            Clock::Real { origin } => Instant(monotonic_nanos().saturating_sub(*origin)),
            Clock::Virtual(t) => t.get(),
        }
    }

    pub fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual(_))
    }

    /// Moves a virtual clock forward by `d`.
    ///
    /// # Panics
    /// On a real clock: time cannot be pushed there, and asking to is a bug.
    pub fn advance(&self, d: Duration) {
        match self {
            Clock::Virtual(t) => t.set(t.get() + d),
            Clock::Real { .. } => panic!("Clock::advance called on the real clock"),
        }
    }

    /// Sets a virtual clock to `at`, which must not be in its past.
    ///
    /// # Panics
    /// On a real clock, or if `at` is earlier than the clock's time (time never goes back).
    pub fn advance_to(&self, at: Instant) {
        match self {
            Clock::Virtual(t) => {
                assert!(at >= t.get(), "virtual time must not go backwards");
                t.set(at);
            }
            Clock::Real { .. } => panic!("Clock::advance_to called on the real clock"),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clock::Real { .. } => write!(f, "Clock::Real({:?})", self.now()),
            Clock::Virtual(t) => write!(f, "Clock::Virtual({:?})", t.get()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_only_when_told_and_clones_share_time() {
        let clock = Clock::virtual_at(Instant::from_millis(5));
        let other = clock.clone();
        assert_eq!(clock.now(), Instant::from_millis(5));
        other.advance(Duration::from_millis(10));
        assert_eq!(clock.now(), Instant::from_millis(15));
        clock.advance_to(Instant::from_millis(20));
        assert_eq!(other.now(), Instant::from_millis(20));
    }

    #[test]
    #[should_panic(expected = "backwards")]
    fn virtual_clock_never_goes_back() {
        let clock = Clock::virtual_at(Instant::from_millis(5));
        clock.advance_to(Instant::from_millis(4));
    }

    #[test]
    fn real_clock_is_monotonic() {
        let clock = Clock::real();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }

    #[test]
    fn instant_arithmetic_saturates() {
        let t = Instant::from_nanos(10);
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(t - Instant::ZERO, Duration::from_nanos(10));
        assert_eq!(
            Instant::FAR_FUTURE + Duration::from_secs(1),
            Instant::FAR_FUTURE
        );
    }
}
