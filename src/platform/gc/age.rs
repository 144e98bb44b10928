//! `--min-age`: how old an object must be before gc may plan it, so that what was just
//! uploaded (an upgrade being prepared, a push still running) is never taken.

use jiff::{SignedDuration, Timestamp};
use kube::api::DynamicObject;

/// Parses `30m`, `24h`, `7d`, `90s`, `1d12h` or `0`.
pub fn parse(text: &str) -> Result<SignedDuration, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: give a number with a unit s, m, h or d (e.g. 30m, 24h, 7d), or 0"
        )
    };
    let text = text.trim();
    if text == "0" {
        return Ok(SignedDuration::ZERO);
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if text.is_empty() || !digits.is_empty() {
        return Err(bad());
    }
    Ok(SignedDuration::from_secs(total))
}

/// A duration the way the flag takes it, largest unit only: `3d`, `5h`, `12m`, `40s`.
pub fn show(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        s if s >= 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// How old the object is by its `metadata.creationTimestamp`, if it has one.
pub fn of(o: &DynamicObject, now: Timestamp) -> Option<SignedDuration> {
    let created = o.metadata.creation_timestamp.as_ref()?.0;
    Some(now.duration_since(created))
}

/// Ok with the age (for the WHY column) when `o` is at least `min` old; else why not. A zero
/// `min` switches the rule off. No creationTimestamp means the age is unknown: not old.
pub fn old_enough(
    o: &DynamicObject,
    now: Timestamp,
    min: SignedDuration,
) -> Result<Option<SignedDuration>, String> {
    let age = of(o, now);
    if min.is_zero() {
        return Ok(age);
    }
    match age {
        Some(a) if a >= min => Ok(Some(a)),
        Some(a) => Err(format!(
            "uploaded {} ago, younger than --min-age {}",
            show(a),
            show(min)
        )),
        None => Err("no creationTimestamp: its age is unknown".into()),
    }
}
