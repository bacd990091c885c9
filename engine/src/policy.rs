//! A function's cache policy: the settings the cache libraries cacheow
//! learns from have (ttl, stale answers, coalescing, cache_if, a cost guard,
//! a circuit breaker), read from the function's config. One parser serves
//! the config file, the API and `#[cacheow(...)]`, so each setting means the
//! same wherever it is written.

use std::time::Duration;

use cacheow_storage::CallKey;
use serde_json::{Map, Value};

/// The config key of the freshness lifetime of replays.
pub const TTL: &str = "ttl";
/// The config key of the window past `ttl` in which a stale outcome is
/// served at once while it is refreshed in the background.
pub const STALE_WHILE_REVALIDATE: &str = "stale_while_revalidate";
/// The config key of the window past `ttl` in which a stale outcome answers
/// a call whose upstream failed.
pub const STALE_IF_ERROR: &str = "stale_if_error";
/// The config key of which upstream answers count as failures.
pub const ERROR_STATUSES: &str = "error_statuses";
/// The config key that turns coalescing of identical misses off.
pub const COALESCE: &str = "coalesce";
/// The config key of which outcomes cache mode may replay.
pub const CACHE_IF: &str = "cache_if";
/// The config key of the cost guard.
pub const MAX_UPSTREAM_CALLS: &str = "max_upstream_calls";
/// The config key of the circuit breaker.
pub const CIRCUIT_BREAKER: &str = "circuit_breaker";
/// The config key of the function's tags, which invalidation can name.
pub const TAGS: &str = "tags";
/// The config key where invalidation marks outcomes stale: `{"before":
/// millis, "keys": {call key: millis}}`; outcomes last recorded before
/// the mark are stale, whatever their ttl.
pub const INVALIDATED: &str = "invalidated";

/// Every policy setting, for errors that list them.
pub const SETTINGS: [&str; 9] = [
    TTL,
    STALE_WHILE_REVALIDATE,
    STALE_IF_ERROR,
    ERROR_STATUSES,
    COALESCE,
    CACHE_IF,
    MAX_UPSTREAM_CALLS,
    CIRCUIT_BREAKER,
    TAGS,
];

/// The longest duration a setting takes: ten years, past any development
/// cache's life, and far from overflowing `Instant` arithmetic.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The most calls a budget may allow per window: it remembers each call's
/// time, so its memory is bounded by this.
pub const MAX_BUDGET_CALLS: u64 = 1_000_000;

/// One function's cache policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Replays are fresh while younger than this; `None`: always fresh.
    pub ttl: Option<Duration>,
    /// Past `ttl`, a stale outcome is served at once and refreshed in the
    /// background for this long.
    pub stale_while_revalidate: Option<Duration>,
    /// Past `ttl`, a stale outcome answers a failed upstream call for this
    /// long (`Duration::MAX`: forever).
    pub stale_if_error: Option<Duration>,
    /// Which upstream results count as failures.
    pub error_statuses: StatusSet,
    /// Concurrent identical misses in cache mode make one upstream call.
    pub coalesce: bool,
    /// Which outcomes cache mode may replay.
    pub cache_if: CacheIf,
    /// The cost guard.
    pub max_upstream_calls: Option<Budget>,
    /// The circuit breaker.
    pub circuit_breaker: Option<BreakerSettings>,
    /// Tags, for invalidation.
    pub tags: Vec<String>,
    /// Outcomes last recorded before this (unix millis) are stale.
    pub stale_before: u64,
    /// Per call key, the same.
    pub stale_keys: std::collections::HashMap<CallKey, u64>,
}

impl Policy {
    /// The policy of a function with no settings, whose kind replays
    /// `cache_if` by default.
    pub fn defaults(cache_if: CacheIf) -> Self {
        Policy {
            ttl: None,
            stale_while_revalidate: None,
            stale_if_error: None,
            error_statuses: StatusSet::default_errors(),
            coalesce: true,
            cache_if,
            max_upstream_calls: None,
            circuit_breaker: None,
            tags: Vec::new(),
            stale_before: 0,
            stale_keys: std::collections::HashMap::new(),
        }
    }

    /// The policy `config` sets over `defaults`, and the settings it had to
    /// leave out because they were invalid (a hand-edited file), each with
    /// its reason.
    pub fn from_config(config: &Map<String, Value>, defaults: Policy) -> (Policy, Vec<String>) {
        let mut policy = defaults;
        let mut invalid = Vec::new();
        for key in SETTINGS {
            let Some(value) = config.get(key).filter(|v| !v.is_null()) else {
                continue;
            };
            if let Err(reason) = policy.set(key, value) {
                invalid.push(reason);
            }
        }
        if let Some(marks) = config.get(INVALIDATED) {
            let marks = Invalidated::from_config(marks);
            policy.stale_before = marks.before;
            policy.stale_keys = marks.keys;
        }
        (policy, invalid)
    }

    /// Checks one setting: `None` when `key` is not a policy setting, else
    /// why `value` is refused, or that it is fine. `null` removes a setting
    /// and is always fine.
    pub fn check(key: &str, value: &Value) -> Option<Result<(), String>> {
        if !SETTINGS.contains(&key) {
            return None;
        }
        if value.is_null() {
            return Some(Ok(()));
        }
        Some(Policy::defaults(CacheIf::Any).set(key, value).map(|_| ()))
    }

    fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        match key {
            TTL => self.ttl = Some(duration_setting(key, value)?),
            STALE_WHILE_REVALIDATE => {
                self.stale_while_revalidate = Some(duration_setting(key, value)?)
            }
            STALE_IF_ERROR => {
                self.stale_if_error = Some(if value == "forever" {
                    Duration::MAX
                } else {
                    duration_setting(key, value).map_err(|e| format!("{e}, or \"forever\""))?
                })
            }
            ERROR_STATUSES => {
                self.error_statuses =
                    StatusSet::parse(value).map_err(|e| format!("`{key}`: {e}"))?
            }
            COALESCE => {
                self.coalesce = value
                    .as_bool()
                    .ok_or_else(|| format!("`{key}` must be true or false, got {value}"))?
            }
            CACHE_IF => self.cache_if = CacheIf::parse(value)?,
            MAX_UPSTREAM_CALLS => self.max_upstream_calls = Some(Budget::parse(value)?),
            CIRCUIT_BREAKER => self.circuit_breaker = Some(BreakerSettings::parse(value)?),
            TAGS => self.tags = parse_tags(value)?,
            _ => unreachable!("only policy settings are set"),
        }
        Ok(())
    }

    /// True when invalidation marked an outcome of `key` last recorded at
    /// `last_seen` (unix millis) stale.
    pub fn invalidated(&self, key: Option<&CallKey>, last_seen: u64) -> bool {
        let key_mark = key.and_then(|k| self.stale_keys.get(k)).copied();
        last_seen < self.stale_before.max(key_mark.unwrap_or(0))
    }

    /// How fresh an outcome last seen `age` ago is under this policy.
    pub fn freshness(&self, age: Duration) -> Freshness {
        let Some(ttl) = self.ttl else {
            return Freshness::Fresh;
        };
        if age <= ttl {
            return Freshness::Fresh;
        }
        let past = age - ttl;
        if self.stale_while_revalidate.is_some_and(|w| past <= w) {
            return Freshness::Revalidate;
        }
        Freshness::Stale
    }

    /// True when an outcome last seen `age` ago may answer a call whose
    /// upstream failed.
    pub fn serves_stale_on_error(&self, age: Duration) -> bool {
        let Some(window) = self.stale_if_error else {
            return false;
        };
        age.saturating_sub(self.ttl.unwrap_or(Duration::ZERO)) <= window
    }
}

/// How fresh a stored outcome is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Younger than `ttl` (or no ttl): replayed.
    Fresh,
    /// Past `ttl` but within `stale_while_revalidate`: served, and refreshed
    /// in the background.
    Revalidate,
    /// Too old to serve, except when the upstream fails.
    Stale,
}

fn parse_tags(value: &Value) -> Result<Vec<String>, String> {
    let usage = "`tags` must be a list of names, like [\"llm\", \"billing\"]";
    let items = value
        .as_array()
        .ok_or_else(|| format!("{usage}, got {value}"))?;
    items
        .iter()
        .map(|item| match item.as_str().map(str::trim) {
            Some(tag) if !tag.is_empty() => Ok(tag.to_owned()),
            _ => Err(format!("{usage}; {item} is not a name")),
        })
        .collect()
}

/// Invalidation marks, as kept in a function's config under
/// [`INVALIDATED`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Invalidated {
    /// Outcomes last recorded before this (unix millis) are stale.
    pub before: u64,
    /// Per call key, the same.
    pub keys: std::collections::HashMap<CallKey, u64>,
}

impl Invalidated {
    /// The marks in `value`; anything unreadable (a hand edit) is left out.
    pub fn from_config(value: &Value) -> Self {
        let before = value.get("before").and_then(Value::as_u64).unwrap_or(0);
        let keys = value
            .get("keys")
            .and_then(Value::as_object)
            .map(|keys| {
                keys.iter()
                    .filter_map(|(key, at)| Some((key.parse().ok()?, at.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        Invalidated { before, keys }
    }

    /// The marks as a config value.
    pub fn to_config(&self) -> Value {
        let mut keys: Vec<_> = self.keys.iter().collect();
        keys.sort();
        let keys: Map<String, Value> = keys
            .into_iter()
            .map(|(key, at)| (key.to_string(), Value::from(*at)))
            .collect();
        serde_json::json!({ "before": self.before, "keys": keys })
    }
}

/// Parses `"30s"`, `"10m"`, `"7d"`, `"250ms"`, `"1h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!("`{text}` has no unit; write it like \"30s\", \"10m\", \"7d\" or \"250ms\"")
    })?;
    let (number, unit) = text.split_at(split);
    let amount: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` must start with a whole number, like \"30s\""))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit `{unit}`; use ms, s, m, h or d"
            ));
        }
    };
    let duration = Duration::from_millis(amount.saturating_mul(unit_ms));
    if duration > MAX_DURATION {
        return Err(format!("`{text}` is longer than ten years"));
    }
    Ok(duration)
}

fn duration_setting(key: &str, value: &Value) -> Result<Duration, String> {
    let text = value.as_str().ok_or_else(|| {
        format!("`{key}` must be a duration like \"30s\", \"10m\" or \"7d\", got {value}")
    })?;
    parse_duration(text).map_err(|e| format!("`{key}`: {e}"))
}

/// A set of result codes: classes (`"5xx"`) and single codes (`429`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<StatusRule>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusRule {
    /// `"5xx"`: every code from 500 to 599.
    Class(u16),
    Code(u16),
}

impl StatusSet {
    /// 5xx and 429: what an upstream answers when it is down or throttling.
    pub fn default_errors() -> Self {
        StatusSet(vec![StatusRule::Class(5), StatusRule::Code(429)])
    }

    /// Parses `["5xx", 429]`.
    pub fn parse(value: &Value) -> Result<Self, String> {
        let items = value
            .as_array()
            .ok_or_else(|| format!("must be a list like [\"5xx\", 429], got {value}"))?;
        items
            .iter()
            .map(StatusRule::parse)
            .collect::<Result<_, _>>()
            .map(StatusSet)
    }

    /// True when `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|rule| match *rule {
            StatusRule::Class(class) => status / 100 == class,
            StatusRule::Code(code) => status == code,
        })
    }
}

impl StatusRule {
    fn parse(item: &Value) -> Result<StatusRule, String> {
        if let Some(code) = item.as_u64() {
            return match u16::try_from(code) {
                Ok(code @ 100..=999) => Ok(StatusRule::Code(code)),
                _ => Err(format!("{code} is not a status code (100 to 999)")),
            };
        }
        let class = item
            .as_str()
            .and_then(|text| text.strip_suffix("xx"))
            .and_then(|digit| digit.parse::<u16>().ok())
            .filter(|digit| (1..=9).contains(digit));
        class.map(StatusRule::Class).ok_or_else(|| {
            format!("{item} is neither a status code like 404 nor a class like \"2xx\"")
        })
    }
}

/// Which stored outcomes cache mode may replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheIf {
    /// Every outcome, failures included.
    Any,
    /// Results that are not failures: HTTP responses and streams that ended
    /// cleanly, a Rust function's `Ok` (`"responses"`, `"ok"`).
    Results,
    /// Results with a 2xx or 3xx status (`"success"`).
    Success,
    /// Results whose status is in the set.
    Statuses(StatusSet),
}

impl CacheIf {
    /// Parses `"responses"`, `"ok"`, `"success"`, `"any"` or a list such as
    /// `["2xx", 404]`.
    pub fn parse(value: &Value) -> Result<Self, String> {
        match value {
            Value::String(name) => match name.as_str() {
                "any" => Ok(CacheIf::Any),
                "responses" | "ok" => Ok(CacheIf::Results),
                "success" => Ok(CacheIf::Success),
                other => Err(format!(
                    "`cache_if` must be \"responses\", \"ok\", \"success\", \"any\" or a list like [\"2xx\", 404], got \"{other}\""
                )),
            },
            Value::Array(_) => StatusSet::parse(value)
                .map(CacheIf::Statuses)
                .map_err(|e| format!("`cache_if`: {e}")),
            other => Err(format!(
                "`cache_if` must be \"responses\", \"ok\", \"success\", \"any\" or a list like [\"2xx\", 404], got {other}"
            )),
        }
    }

    /// True when `accepts` looks at the status (so a caller need not read
    /// it otherwise).
    pub fn reads_status(&self) -> bool {
        matches!(self, CacheIf::Success | CacheIf::Statuses(_))
    }

    /// True when an outcome that `failed` (a transport failure or a broken
    /// stream) with result code `status` may be replayed.
    pub fn accepts(&self, failed: bool, status: Option<u16>) -> bool {
        match self {
            CacheIf::Any => true,
            _ if failed => false,
            CacheIf::Results => true,
            CacheIf::Success => status.is_none_or(|s| (200..400).contains(&s)),
            CacheIf::Statuses(set) => status.is_some_and(|s| set.contains(s)),
        }
    }
}

/// At most `calls` upstream calls in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Calls allowed per window.
    pub calls: u64,
    /// The window.
    pub per: Duration,
}

impl Budget {
    /// Parses `"100/1h"`.
    pub fn parse(value: &Value) -> Result<Self, String> {
        let usage = "`max_upstream_calls` must look like \"100/1h\" (calls per window)";
        let text = value
            .as_str()
            .ok_or_else(|| format!("{usage}, got {value}"))?;
        let (calls, per) = text
            .split_once('/')
            .ok_or_else(|| format!("{usage}, got \"{text}\""))?;
        let calls: u64 = calls
            .trim()
            .parse()
            .map_err(|_| format!("{usage}: `{calls}` is not a whole number"))?;
        if calls > MAX_BUDGET_CALLS {
            return Err(format!(
                "`max_upstream_calls` allows at most {MAX_BUDGET_CALLS} calls per window, got {calls}"
            ));
        }
        let per = parse_duration(per).map_err(|e| format!("`max_upstream_calls`: {e}"))?;
        if per.is_zero() {
            return Err("`max_upstream_calls` needs a window longer than 0".into());
        }
        Ok(Budget { calls, per })
    }
}

/// When the circuit breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures within `window` that open it.
    pub failures: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// How long it stays open.
    pub open_for: Duration,
}

impl BreakerSettings {
    /// Parses `{"failures": 5, "window": "30s", "open_for": "60s"}`.
    pub fn parse(value: &Value) -> Result<Self, String> {
        let usage = "`circuit_breaker` must look like {\"failures\": 5, \"window\": \"30s\", \"open_for\": \"60s\"}";
        let object = value
            .as_object()
            .ok_or_else(|| format!("{usage}, got {value}"))?;
        if let Some(unknown) = object
            .keys()
            .find(|k| !["failures", "window", "open_for"].contains(&k.as_str()))
        {
            return Err(format!("{usage}; `{unknown}` is not one of its fields"));
        }
        let failures = object
            .get("failures")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("{usage}; `failures` must be a whole number ≥ 1"))?;
        let duration = |field: &str| {
            let text = object
                .get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{usage}; `{field}` is missing"))?;
            parse_duration(text).map_err(|e| format!("`circuit_breaker.{field}`: {e}"))
        };
        Ok(BreakerSettings {
            failures,
            window: duration("window")?,
            open_for: duration("open_for")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn durations_take_the_units_people_write() {
        for (text, ms) in [
            ("250ms", 250),
            ("30s", 30_000),
            ("10m", 600_000),
            ("1h", 3_600_000),
            ("7d", 604_800_000),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for (text, says) in [
            ("30", "no unit"),
            ("3w", "unknown unit `w`"),
            ("s", "whole number"),
            ("9999999d", "ten years"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn freshness_follows_ttl_and_the_revalidate_window() {
        let (policy, invalid) = Policy::from_config(
            json!({"ttl": "10s", "stale_while_revalidate": "5s", "stale_if_error": "1m"})
                .as_object()
                .unwrap(),
            Policy::defaults(CacheIf::Results),
        );
        assert!(invalid.is_empty(), "{invalid:?}");
        let s = Duration::from_secs;
        assert_eq!(policy.freshness(s(10)), Freshness::Fresh);
        assert_eq!(policy.freshness(s(15)), Freshness::Revalidate);
        assert_eq!(policy.freshness(s(16)), Freshness::Stale);
        assert!(policy.serves_stale_on_error(s(70)));
        assert!(!policy.serves_stale_on_error(s(71)));
        assert_eq!(
            Policy::defaults(CacheIf::Any).freshness(s(1 << 40)),
            Freshness::Fresh
        );
    }

    #[test]
    fn cache_if_names_and_lists() {
        let parse = |v: Value| CacheIf::parse(&v).unwrap();
        assert!(!parse(json!("responses")).accepts(true, None));
        assert!(parse(json!("responses")).accepts(false, Some(500)));
        assert!(!parse(json!("success")).accepts(false, Some(500)));
        assert!(parse(json!("success")).accepts(false, Some(304)));
        assert!(parse(json!("any")).accepts(true, None));
        let listed = parse(json!(["2xx", 404]));
        assert!(listed.accepts(false, Some(201)) && listed.accepts(false, Some(404)));
        assert!(!listed.accepts(false, Some(403)));
        let err = CacheIf::parse(&json!(["2xx", "teapot"])).unwrap_err();
        assert!(err.contains("\"teapot\""), "{err}");
    }

    #[test]
    fn budgets_and_breakers_say_what_is_wrong() {
        assert_eq!(
            Budget::parse(&json!("3/1h")),
            Ok(Budget {
                calls: 3,
                per: Duration::from_secs(3600)
            })
        );
        assert!(
            Budget::parse(&json!("3 per hour"))
                .unwrap_err()
                .contains("\"100/1h\"")
        );
        assert!(
            Budget::parse(&json!("3/0s"))
                .unwrap_err()
                .contains("longer than 0")
        );
        let breaker = json!({"failures": 2, "window": "30s", "open_for": "1m"});
        assert_eq!(BreakerSettings::parse(&breaker).unwrap().failures, 2);
        let err = BreakerSettings::parse(&json!({"failures": 2, "window": "30s"})).unwrap_err();
        assert!(err.contains("`open_for` is missing"), "{err}");
    }

    #[test]
    fn invalidation_marks_round_trip_and_make_older_outcomes_stale() {
        let key = CallKey::from_bytes([1; 32]);
        let mut marks = Invalidated {
            before: 100,
            ..Invalidated::default()
        };
        marks.keys.insert(key, 500);
        let config = json!({ "invalidated": marks.to_config() });
        let (policy, invalid) =
            Policy::from_config(config.as_object().unwrap(), Policy::defaults(CacheIf::Any));
        assert!(invalid.is_empty());
        assert!(policy.invalidated(None, 99) && !policy.invalidated(None, 100));
        assert!(
            policy.invalidated(Some(&key), 499),
            "the key's own mark is later"
        );
        assert!(!policy.invalidated(Some(&CallKey::from_bytes([2; 32])), 499));
        assert_eq!(Invalidated::from_config(&marks.to_config()), marks);
        assert!(
            Policy::check("tags", &json!(["llm", " "]))
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn an_invalid_setting_is_left_out_and_reported() {
        let (policy, invalid) = Policy::from_config(
            json!({"ttl": "soon", "coalesce": false})
                .as_object()
                .unwrap(),
            Policy::defaults(CacheIf::Results),
        );
        assert_eq!(policy.ttl, None);
        assert!(!policy.coalesce);
        assert_eq!(invalid.len(), 1);
        assert!(invalid[0].contains("`ttl`"), "{invalid:?}");
        assert_eq!(Policy::check("replay_speed", &json!(1)), None);
        assert!(Policy::check("ttl", &json!(30)).unwrap().is_err());
        assert_eq!(Policy::check("ttl", &Value::Null), Some(Ok(())));
    }
}
