//! Clock faults for local processes, with libfaketime.
//!
//! A [`crate::Cluster`] started with clock control runs every node with
//! Debian's libfaketime preloaded (`LD_PRELOAD`). It replaces the C
//! library's `clock_gettime` and the sleeping calls (`epoll_wait`,
//! `nanosleep`, ...), so every clock the node reads — `CLOCK_MONOTONIC`,
//! behind std's and tokio's `Instant`, as well as the wall clock — and
//! every timer it waits on follow a faked clock (`tests/tests/processes/clocks.rs`
//! shows it on a running node). Each node's fake clock is set by a
//! control file of its own (`FAKETIME_TIMESTAMP_FILE`), which the library
//! reads again on every call (`FAKETIME_NO_CACHE=1`): a change takes
//! effect at once, without restarting the node.
//!
//! The file holds `+OFFSET xRATE`, and the node then reads
//! `start + (real − start) × RATE + OFFSET` on every clock, `start` being
//! the moment the library was loaded. [`NodeClock`] keeps the rate and
//! offset it wrote:
//! - [`NodeClock::set_rate`] makes the clock run faster or slower *from
//!   now on*, without a jump, by carrying what the clock gained or lost so
//!   far into the offset. `start` is taken when the process was spawned;
//!   the library loads a little later, and a change of rate by `Δ` shifts
//!   the clock by that delay × `Δ` (a few milliseconds);
//! - [`NodeClock::jump`] steps the clock forward or back by changing the
//!   offset alone.
//!
//! A node started again (after a kill) starts from `+0 x1`.
//!
//! # What the clock faults model
//! A rate models a clock that runs fast or slow, which the lease of `lease`
//! reads must tolerate within `--max-clock-rate-ratio`. A forward jump
//! models time passing at once (a leader lease ends early, timers fire):
//! harmless to safety. A *backward* jump of the monotonic clock is a fault
//! real kernels never make (`CLOCK_MONOTONIC` never goes back; an NTP step
//! moves the wall clock only), and nothing a node can do makes its leases
//! safe against it: the nemesis makes backward jumps only on followers, where
//! they prolong their promise not to vote.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{Error, Result};

/// The variable that allows the clock tests to be skipped on a host
/// without libfaketime (set it to `1`); without it they fail there.
pub const ALLOW_SKIP: &str = "BAZAR_SKIP_CLOCKS";

/// The variable naming the libfaketime library to preload, when it is not
/// where Debian puts it.
pub const LIBRARY_VAR: &str = "BAZAR_LIBFAKETIME";

/// Where Debian (and a `make install`) put the thread-safe library.
const LIBRARY_PATHS: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
];

/// The libfaketime library to preload, or why there is none.
pub fn library() -> std::result::Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(LIBRARY_VAR) {
        let path = PathBuf::from(path);
        return if path.exists() { Ok(path) } else { Err(format!("{LIBRARY_VAR}={} does not exist", path.display())) };
    }
    LIBRARY_PATHS.iter().map(PathBuf::from).find(|p| p.exists()).ok_or_else(|| {
        "clock faults need libfaketime (apt-get install faketime; or set BAZAR_LIBFAKETIME to libfaketimeMT.so.1)"
            .to_string()
    })
}

/// Whether this host can fake the nodes' clocks; the error says what is missing.
pub fn available() -> std::result::Result<(), String> {
    library().map(|_| ())
}

/// For a test that needs clock faults: `true` when libfaketime is here;
/// otherwise `false` after saying why, if skipping was asked for with
/// [`ALLOW_SKIP`], and a panic (a failed test) if it was not.
pub fn required() -> bool {
    match available() {
        Ok(()) => true,
        Err(why) if std::env::var(ALLOW_SKIP).is_ok_and(|v| v == "1") => {
            eprintln!("SKIPPED (asked for with {ALLOW_SKIP}=1): {why}");
            false
        }
        Err(why) => panic!("cannot run a clock test: {why}; or set {ALLOW_SKIP}=1 to skip"),
    }
}

/// The faked clock of one node (across its restarts).
#[derive(Debug)]
pub struct NodeClock {
    file: PathBuf,
    /// When the current process started (on this process's real clock).
    started: Instant,
    /// Seconds added to the scaled clock.
    offset: f64,
    /// How fast the clock runs.
    rate: f64,
}

impl NodeClock {
    /// A clock controlled through `file`, running true.
    pub fn new(file: &Path) -> Result<NodeClock> {
        let clock = NodeClock { file: file.to_path_buf(), started: Instant::now(), offset: 0.0, rate: 1.0 };
        clock.write()?;
        Ok(clock)
    }

    /// The environment a node process needs to run on this clock.
    pub fn env(&self, library: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", library.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".into()),
        ]
    }

    /// Before a node process starts: its clock runs true from the start.
    pub fn before_start(&mut self) -> Result<()> {
        self.offset = 0.0;
        self.rate = 1.0;
        self.write()?;
        self.started = Instant::now();
        Ok(())
    }

    /// Once the process is spawned: the library's start, as near as this
    /// process can tell.
    pub fn started(&mut self) {
        self.started = Instant::now();
    }

    /// How fast the clock runs now.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Makes the clock run `rate` times as fast as true time from now on,
    /// continuing from where it is.
    pub fn set_rate(&mut self, rate: f64) -> Result<()> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Error::Unsupported(format!("clock rate {rate}")));
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        // elapsed × old + offset = elapsed × new + offset'
        self.offset += elapsed * (self.rate - rate);
        self.rate = rate;
        self.write()
    }

    /// Steps the clock by `seconds` (back when negative).
    pub fn jump(&mut self, seconds: f64) -> Result<()> {
        self.offset += seconds;
        self.write()
    }

    /// The control file's line.
    pub fn spec(&self) -> String {
        format!("{:+.6} x{:.6}", self.offset, self.rate)
    }

    /// Writes the control file in one step (a new file renamed over the
    /// old), so that the library never reads half of it.
    fn write(&self) -> Result<()> {
        let tmp = self.file.with_extension("tmp");
        let io = |e: std::io::Error| Error::Io(format!("writing {}: {e}", self.file.display()));
        std::fs::write(&tmp, format!("{}\n", self.spec())).map_err(io)?;
        std::fs::rename(&tmp, &self.file).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_rate_carries_the_time_gained_into_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node-1.faketime");
        let mut clock = NodeClock::new(&file).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "+0.000000 x1.000000\n");
        clock.started = Instant::now() - std::time::Duration::from_secs(10);
        clock.set_rate(2.0).unwrap();
        // 10 s at x1 then x2: 10 × 2 + offset = 10, so the offset is about −10.
        assert!((clock.offset + 10.0).abs() < 0.5, "{}", clock.spec());
        clock.jump(3.0).unwrap();
        assert!((clock.offset + 7.0).abs() < 0.5, "{}", clock.spec());
        clock.set_rate(1.0).unwrap();
        // Back to x1 at 10 s: gained 10 s over the −10 s, plus the jump.
        assert!((clock.offset - 3.0).abs() < 0.5, "{}", clock.spec());
        assert!(std::fs::read_to_string(&file).unwrap().ends_with(" x1.000000\n"));
        assert!(clock.set_rate(0.0).is_err());
        clock.before_start().unwrap();
        assert_eq!(clock.spec(), "+0.000000 x1.000000");
    }
}
