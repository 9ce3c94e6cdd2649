//! Sign-in activity per hour, from the audit log: what the admin console's
//! chart shows, so that an operator sees a brute-force attempt at a glance.

use std::time::Duration;

use crate::store::Store;

use super::ServiceError;

/// One hour.
pub const BUCKET_SECONDS: i64 = 3600;
/// The longest window asked for: a week.
pub const MAX_HOURS: i64 = 24 * 7;

/// What the chart counts, and which audit events count as each.
const SERIES: [(&str, Series); 4] = [
    ("login_succeeded", Series::LoginsSucceeded),
    ("login_failed", Series::LoginsFailed),
    // Both are recorded once per client per minute (the metrics count
    // every refusal): enough to see that limits are being hit, and by whom.
    ("login_rate_limited", Series::RateLimited),
    ("request_budget_exceeded", Series::RateLimited),
];

#[derive(Debug, Clone, Copy)]
enum Series {
    LoginsSucceeded,
    LoginsFailed,
    RateLimited,
}

/// The counts of one hour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourCounts {
    /// Start of the hour, Unix seconds (a whole hour, UTC).
    pub start: i64,
    /// `login_succeeded` events.
    pub logins_succeeded: i64,
    /// `login_failed` events (wrong password, unknown email, disabled account).
    pub logins_failed: i64,
    /// `login_rate_limited` and `request_budget_exceeded` events.
    pub rate_limited: i64,
}

/// The last `hours` hours, oldest first: whole hours, the last one the
/// hour in progress (up to `now`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// The number of hours.
    pub hours: i64,
    /// One entry per hour, oldest first, empty hours included.
    pub buckets: Vec<HourCounts>,
}

/// Checks the window asked for: 1 to [`MAX_HOURS`] hours.
pub fn parse_hours(hours: Option<i64>) -> Result<i64, ServiceError> {
    match hours.unwrap_or(24) {
        h @ 1..=MAX_HOURS => Ok(h),
        _ => Err(ServiceError::Invalid {
            field: "hours",
            detail: format!("hours must be a whole number from 1 to {MAX_HOURS}."),
        }),
    }
}

/// The longest the count may take. A week of a busy service's audit rows
/// is one index range, well under a second; past this the database is in
/// trouble, and the console is answered 503 rather than holding a
/// connection until the request timeout (30 s by default).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts the sign-in activity of the last `hours` hours before `now`,
/// within [`QUERY_TIMEOUT`].
pub async fn activity(store: &Store, now: i64, hours: i64) -> Result<Activity, ServiceError> {
    activity_within(store, now, hours, QUERY_TIMEOUT).await
}

/// [`activity`] with another bound on the count: past `timeout` it fails
/// with [`StoreError::Unavailable`](crate::store::StoreError::Unavailable).
pub async fn activity_within(
    store: &Store,
    now: i64,
    hours: i64,
    timeout: Duration,
) -> Result<Activity, ServiceError> {
    let hours = parse_hours(Some(hours))?;
    let current_hour = now.div_euclid(BUCKET_SECONDS) * BUCKET_SECONDS;
    let from = current_hour - (hours - 1) * BUCKET_SECONDS;
    // Through the end of the current hour: an event a second in the future
    // (clock steps between instances) still shows.
    let to = current_hour + BUCKET_SECONDS;
    let mut buckets: Vec<HourCounts> = (0..hours)
        .map(|i| HourCounts {
            start: from + i * BUCKET_SECONDS,
            ..HourCounts::default()
        })
        .collect();
    for count in store
        .audit_counts(from, to, BUCKET_SECONDS, timeout)
        .await?
    {
        let Some((_, series)) = SERIES.iter().find(|(kind, _)| *kind == count.kind) else {
            continue;
        };
        let Some(bucket) = usize::try_from(count.bucket)
            .ok()
            .and_then(|i| buckets.get_mut(i))
        else {
            continue;
        };
        match series {
            Series::LoginsSucceeded => bucket.logins_succeeded += count.count,
            Series::LoginsFailed => bucket.logins_failed += count.count,
            Series::RateLimited => bucket.rate_limited += count.count,
        }
    }
    Ok(Activity { hours, buckets })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_window_is_one_hour_to_a_week_and_a_day_by_default() {
        assert_eq!(parse_hours(None).ok(), Some(24));
        assert_eq!(parse_hours(Some(1)).ok(), Some(1));
        assert_eq!(parse_hours(Some(MAX_HOURS)).ok(), Some(MAX_HOURS));
        for refused in [0, -1, MAX_HOURS + 1, i64::MIN, i64::MAX] {
            assert!(
                matches!(
                    parse_hours(Some(refused)),
                    Err(ServiceError::Invalid { field: "hours", .. })
                ),
                "{refused}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_number_is_accepted_exactly_within_the_window(hours in any::<i64>()) {
            prop_assert_eq!(parse_hours(Some(hours)).is_ok(), (1..=MAX_HOURS).contains(&hours));
        }
    }
}
