//! How replies take their recorded time: the per-function settings that
//! turn it on and scale it, and the clamped waits (a leaf, used by the
//! config file, the API and the replay path alike).

use std::time::Duration;

use cacheow_engine::MAX_WAIT_MS;

/// The config key of the replay speed of streams (and of recorded
/// durations): 1 as recorded, 0 at once.
pub(crate) const SPEED: &str = "replay_speed";

/// The config key that makes replayed responses take their recorded time.
pub(crate) const DURATION: &str = "replay_duration";

/// A `replay_speed` scales recorded gaps: 0 (at once) up to 100 (a hundred
/// times slower); beyond that a replay would outlast any client.
pub(crate) fn valid_speed(speed: f64) -> bool {
    (0.0..=100.0).contains(&speed)
}

/// A recorded time in milliseconds as a wait, clamped to `[0, MAX_WAIT_MS]`
/// so a hand-edited file can never make a replay overflow.
pub(crate) fn recorded_wait(ms: f64) -> Duration {
    if ms > 0.0 {
        Duration::from_secs_f64(ms.min(MAX_WAIT_MS) / 1000.0)
    } else {
        Duration::ZERO
    }
}

/// A recorded wait scaled by a replay speed, clamped like `recorded_wait`.
pub(crate) fn scaled_wait(wait: Duration, speed: f64) -> Duration {
    recorded_wait(wait.as_secs_f64() * 1000.0 * speed)
}
