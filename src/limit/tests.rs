use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::clients::{slots_for, table_bytes, ClientTable};
use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// `n` attempts by `client` at `now`: how many were granted, and the last refusal.
fn attempts(limiter: &LoginLimiter, client: &str, n: usize, now: Instant) -> (usize, Option<LoginRefused>) {
    let mut granted = 0;
    let mut refused = None;
    for _ in 0..n {
        match limiter.try_acquire_at(ip(client), now) {
            Ok(()) => granted += 1,
            Err(refusal) => refused = Some(refusal),
        }
    }
    (granted, refused)
}

/// A global cap too large to matter, and `per_minute`/`burst` for each client.
fn per_client(per_minute: u32, burst: u32) -> LoginLimiter {
    LoginLimiter::with_rates(
        Rate::per_second(1000, 10_000),
        Some(Rate::per_minute(per_minute, burst)),
    )
}

// ---- one bucket --------------------------------------------------------------------

#[test]
fn the_burst_is_allowed_then_the_rate_applies() {
    let limiter = RateLimiter::new(Rate::per_second(10, 5));
    let start = Instant::now();
    let granted = |now| (0..20).filter(|_| limiter.take(now) == Take::Granted).count();
    assert_eq!(granted(start), 5);
    assert_eq!(granted(start + Duration::from_millis(500)), 5);
}

#[test]
fn a_run_of_refusals_has_one_first_and_ends_only_when_the_bucket_is_full_again() {
    let rate = Rate::per_second(1, 2);
    let start = Instant::now();
    let at = |seconds| start + Duration::from_secs(seconds);
    let mut bucket = Bucket::full(rate, start);
    let mut takes = |now, n| (0..n).map(|_| bucket.take(rate, now)).collect::<Vec<_>>();
    let refused = |first| Take::Refused {
        first,
        retry_after: Duration::from_secs(1),
    };
    assert_eq!(
        takes(at(0), 4),
        [Take::Granted, Take::Granted, refused(true), refused(false)]
    );
    // A token earned during the flood does not start a new run.
    assert_eq!(takes(at(1), 2), [Take::Granted, refused(false)]);
    // Full again: the flood had ended, so the next refusal is news.
    assert_eq!(takes(at(3), 3), [Take::Granted, Take::Granted, refused(true)]);
}

#[test]
fn a_token_given_back_is_taken_again_but_never_beyond_the_burst() {
    let rate = Rate::per_minute(1, 2);
    let start = Instant::now();
    let mut bucket = Bucket::full(rate, start);
    bucket.give_back(rate, start);
    assert_eq!(bucket.level(rate, start), 2.0);
    assert_eq!(bucket.take(rate, start), Take::Granted);
    bucket.give_back(rate, start);
    assert_eq!(bucket.level(rate, start), 2.0);
}

#[test]
fn the_clock_driven_entry_point_spends_the_same_buckets() {
    // One token per second globally: back-to-back calls cannot earn a third.
    let limiter = LoginLimiter::with_rates(Rate::per_second(1, 2), None);
    assert_eq!(
        (0..3)
            .map(|_| limiter.try_acquire(ip("192.0.2.1")).is_ok())
            .collect::<Vec<_>>(),
        [true, true, false]
    );
    // And one a minute per client: the second client's bucket is its own.
    let limiter = per_client(1, 1);
    assert!(limiter.try_acquire(ip("192.0.2.1")).is_ok());
    assert!(limiter.try_acquire(ip("192.0.2.1")).is_err());
    assert!(limiter.try_acquire(ip("192.0.2.2")).is_ok());
}

// ---- a bucket per client -----------------------------------------------------------

#[test]
fn each_client_spends_a_bucket_of_its_own() {
    let limiter = per_client(6, 3);
    let now = Instant::now();
    let flooder = ClientKey::of(ip("203.0.113.7"));
    assert_eq!(
        attempts(&limiter, "203.0.113.7", 100, now),
        (
            3,
            Some(LoginRefused::Client {
                client: flooder,
                first: false,
                retry_after: Duration::from_secs(10)
            })
        )
    );
    assert_eq!(
        limiter.try_acquire_at(ip("203.0.113.7"), now),
        Err(LoginRefused::Client {
            client: flooder,
            first: false,
            retry_after: Duration::from_secs(10)
        }),
        "a refusal after the first is not marked first"
    );
    assert_eq!(
        attempts(&limiter, "203.0.113.8", 3, now),
        (3, None),
        "the next address is another client"
    );
    assert_eq!(attempts(&limiter, "2001:db8::1", 3, now), (3, None));
}

#[test]
fn the_first_refusal_of_a_client_is_marked_so_it_is_logged_once() {
    let limiter = per_client(6, 1);
    let now = Instant::now();
    let client = ClientKey::of(ip("203.0.113.7"));
    assert!(limiter.try_acquire_at(ip("203.0.113.7"), now).is_ok());
    assert_eq!(
        limiter.try_acquire_at(ip("203.0.113.7"), now),
        Err(LoginRefused::Client {
            client,
            first: true,
            retry_after: Duration::from_secs(10)
        })
    );
}

#[test]
fn a_refused_client_is_let_in_again_at_its_rate() {
    // 6 a minute: one every 10 s.
    let limiter = per_client(6, 2);
    let start = Instant::now();
    assert_eq!(attempts(&limiter, "203.0.113.7", 5, start).0, 2);
    assert_eq!(
        attempts(&limiter, "203.0.113.7", 5, start + Duration::from_secs(9)).0,
        0
    );
    assert_eq!(
        attempts(&limiter, "203.0.113.7", 5, start + Duration::from_secs(10)).0,
        1
    );
    assert_eq!(
        attempts(&limiter, "203.0.113.7", 5, start + Duration::from_secs(60)).0,
        2
    );
}

/// The retry-after of the next attempt by `client` at `now`, which must be refused.
fn retry_after(limiter: &LoginLimiter, client: &str, now: Instant) -> Duration {
    match limiter.try_acquire_at(ip(client), now) {
        Err(refusal) => refusal.retry_after(),
        Ok(()) => panic!("{client} was let in at {now:?}"),
    }
}

#[test]
fn a_refused_client_is_told_the_whole_seconds_until_its_bucket_holds_a_token() {
    // 6 a minute: one every 10 s.
    let limiter = per_client(6, 2);
    let start = Instant::now();
    let at = |millis| start + Duration::from_millis(millis);
    assert_eq!(attempts(&limiter, "203.0.113.7", 2, start).0, 2);
    assert_eq!(retry_after(&limiter, "203.0.113.7", start), Duration::from_secs(10));
    // Part of a token earned: what is left, rounded up.
    assert_eq!(retry_after(&limiter, "203.0.113.7", at(2_500)), Duration::from_secs(8));
    assert_eq!(retry_after(&limiter, "203.0.113.7", at(9_000)), Duration::from_secs(1));
    // A hair short of the token: still a whole second, never `Retry-After: 0`.
    assert_eq!(retry_after(&limiter, "203.0.113.7", at(9_999)), Duration::from_secs(1));
    assert!(limiter.try_acquire_at(ip("203.0.113.7"), at(10_000)).is_ok());
    assert_eq!(
        retry_after(&limiter, "203.0.113.7", at(10_000)),
        Duration::from_secs(10)
    );
    // At the slowest rate, a minute.
    let slowest = per_client(1, 1);
    assert!(slowest.try_acquire_at(ip("192.0.2.1"), start).is_ok());
    assert_eq!(retry_after(&slowest, "192.0.2.1", start), Duration::from_secs(60));
}

#[test]
fn a_client_that_waits_as_told_finds_a_token_and_one_that_waits_a_second_less_does_not() {
    let start = Instant::now();
    for per_minute in (1..=200).chain([599, 997, 3600, 100_000]) {
        for burst in [1, 2, 7] {
            let rate = Rate::per_minute(per_minute, burst);
            // Empty the bucket, then refuse at odd moments while it refills.
            let mut bucket = Bucket::full(rate, start);
            while bucket.take(rate, start) == Take::Granted {}
            for millis in [0, 1, 333, 999, 1_001, 4_321] {
                let now = start + Duration::from_millis(millis);
                let mut probe = bucket;
                let Take::Refused { retry_after, .. } = probe.take(rate, now) else {
                    continue;
                };
                let case = format!("{per_minute}/min, burst {burst}, {millis} ms in: {retry_after:?}");
                assert!(retry_after >= Duration::from_secs(1), "{case}");
                assert_eq!(retry_after.subsec_nanos(), 0, "{case}");
                let mut waited = probe;
                assert_eq!(waited.take(rate, now + retry_after), Take::Granted, "{case}");
                if retry_after > Duration::from_secs(1) {
                    let early = now + retry_after - Duration::from_secs(1);
                    assert!(
                        matches!(probe.take(rate, early), Take::Refused { .. }),
                        "{case}: a second less would do"
                    );
                }
            }
        }
    }
}

#[test]
fn the_global_cap_tells_the_seconds_until_it_holds_a_token() {
    let limiter = LoginLimiter::with_rates(Rate::per_second(2, 1), None);
    let now = Instant::now();
    assert!(limiter.try_acquire_at(ip("192.0.2.1"), now).is_ok());
    assert_eq!(retry_after(&limiter, "192.0.2.2", now), Duration::from_secs(1));
    assert!(limiter
        .try_acquire_at(ip("192.0.2.2"), now + Duration::from_millis(500))
        .is_ok());
}

#[test]
fn an_ipv6_client_is_its_64() {
    let key = |text| ClientKey::of(ip(text));
    assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
    assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:2:2::1"));
    assert_eq!(
        key("::ffff:192.0.2.1"),
        key("192.0.2.1"),
        "an IPv4-mapped address is the IPv4 address"
    );
    assert_ne!(key("192.0.2.1"), key("192.0.2.2"), "IPv4 clients are single addresses");
    assert_eq!(key("2001:db8:1:2:3:4:5:6").to_string(), "2001:db8:1:2::/64");
    assert_eq!(key("::ffff:192.0.2.1").to_string(), "192.0.2.1");

    let limiter = per_client(6, 2);
    let now = Instant::now();
    assert_eq!(attempts(&limiter, "2001:db8:1:2::1", 2, now).0, 2);
    // Another address in the same /64: the same host, the same empty bucket.
    assert_eq!(
        limiter.try_acquire_at(ip("2001:db8:1:2:a:b:c:d"), now),
        Err(LoginRefused::Client {
            client: key("2001:db8:1:2::"),
            first: true,
            retry_after: Duration::from_secs(10)
        })
    );
    assert_eq!(
        attempts(&limiter, "2001:db8:1:3::1", 2, now).0,
        2,
        "the next /64 is another client"
    );
}

// ---- the global cap ----------------------------------------------------------------

#[test]
fn the_global_cap_still_applies_to_all_clients_together() {
    // Each client may take 3, all together 5 (then 1 a second).
    let limiter = LoginLimiter::with_rates(Rate::per_second(1, 5), Some(Rate::per_minute(60, 3)));
    let now = Instant::now();
    assert_eq!(attempts(&limiter, "192.0.2.1", 3, now), (3, None));
    assert_eq!(attempts(&limiter, "192.0.2.2", 2, now), (2, None));
    assert_eq!(
        limiter.try_acquire_at(ip("192.0.2.2"), now),
        Err(LoginRefused::Global {
            first: true,
            retry_after: Duration::from_secs(1)
        })
    );
    assert_eq!(
        limiter.try_acquire_at(ip("192.0.2.3"), now),
        Err(LoginRefused::Global {
            first: false,
            retry_after: Duration::from_secs(1)
        })
    );
    assert!(limiter
        .try_acquire_at(ip("192.0.2.3"), now + Duration::from_secs(1))
        .is_ok());
}

#[test]
fn a_client_refused_by_the_global_cap_keeps_its_own_share() {
    // Each client may take 2 a minute; all together 2, then 1 a second.
    let limiter = LoginLimiter::with_rates(Rate::per_second(1, 2), Some(Rate::per_minute(2, 2)));
    let start = Instant::now();
    assert_eq!(attempts(&limiter, "192.0.2.1", 2, start).0, 2);
    // Someone else's flood took the global budget: these attempts cost this client nothing.
    assert_eq!(attempts(&limiter, "192.0.2.2", 10, start).0, 0);
    assert_eq!(
        attempts(&limiter, "192.0.2.2", 2, start + Duration::from_secs(2)),
        (2, None),
        "the global refusals spent the client's own bucket"
    );
}

#[test]
fn a_client_refused_its_share_spends_nothing_of_the_global_budget() {
    let limiter = LoginLimiter::with_rates(Rate::per_second(1, 5), Some(Rate::per_minute(1, 2)));
    let now = Instant::now();
    assert_eq!(attempts(&limiter, "203.0.113.7", 1000, now).0, 2);
    assert_eq!(attempts(&limiter, "192.0.2.1", 2, now).0, 2);
    assert_eq!(attempts(&limiter, "192.0.2.2", 2, now).0, 1, "5 in all");
}

#[test]
fn with_the_per_client_limit_off_one_client_can_take_the_global_budget() {
    let limiter = LoginLimiter::with_rates(Rate::per_second(1, 5), None);
    let now = Instant::now();
    assert_eq!(attempts(&limiter, "203.0.113.7", 100, now).0, 5);
    assert_eq!(
        limiter.try_acquire_at(ip("192.0.2.1"), now),
        Err(LoginRefused::Global {
            first: false,
            retry_after: Duration::from_secs(1)
        })
    );
}

// ---- the table's bound -------------------------------------------------------------

#[test]
fn the_table_is_sized_for_every_client_the_global_budget_lets_through() {
    // Defaults: 20/s (burst 100) globally, 60/min (burst 30) per client: a client's bucket
    // refills in 30 s, so at most 100 + 20 × 30 = 700 clients hold state; four slots each.
    assert_eq!(slots_for(Rate::per_second(20, 100), Rate::per_minute(60, 30)), 4096);
    assert_eq!(
        slots_for(Rate::per_second(1, 1), Rate::per_minute(60, 1)),
        1024,
        "the least"
    );
    assert_eq!(
        slots_for(Rate::per_second(u32::MAX, u32::MAX), Rate::per_minute(1, u32::MAX)),
        65_536,
        "the most"
    );
    let bytes = table_bytes(4096);
    assert!(
        (64 * 1024..=512 * 1024).contains(&bytes),
        "{bytes} bytes for 4096 slots"
    );
}

#[test]
fn idle_clients_hold_no_state_and_a_flood_of_addresses_fills_no_more_than_the_table() {
    let rate = Rate::per_minute(60, 3);
    let table = ClientTable::new(rate, 1024);
    assert_eq!(table.slots(), 1024);
    let start = Instant::now();
    for n in 0..50_000u32 {
        let key = ClientKey::of(IpAddr::from(n.to_be_bytes()));
        assert_eq!(table.take(key, start), Take::Granted, "client {n}");
    }
    assert_eq!(table.holding(start), 1024, "more state than slots");
    // One second later every bucket has its token back: nothing is held any more, and
    // newcomers take those slots without pushing out a bucket still refilling.
    let later = start + Duration::from_secs(1);
    assert_eq!(table.holding(later), 0);
    for n in 50_000..50_100u32 {
        assert_eq!(
            table.take(ClientKey::of(IpAddr::from(n.to_be_bytes())), later),
            Take::Granted
        );
    }
    assert_eq!(table.holding(later), 100);
}

#[test]
fn a_flooder_keeps_its_empty_bucket_through_a_flood_of_other_addresses() {
    let rate = Rate::per_minute(1, 3);
    let table = ClientTable::new(rate, 1024);
    let now = Instant::now();
    let flooder = ClientKey::of(ip("203.0.113.7"));
    let granted = (0..10).filter(|_| table.take(flooder, now) == Take::Granted).count();
    assert_eq!(granted, 3);
    // Far more addresses than slots, each with a bucket still refilling: every set
    // overflows, and the fullest buckets are the ones reused.
    for n in 0..50_000u32 {
        table.take(ClientKey::of(IpAddr::from((0x0a00_0000 + n).to_be_bytes())), now);
    }
    assert_eq!(
        table.take(flooder, now),
        Take::Refused {
            first: false,
            retry_after: Duration::from_secs(60)
        }
    );
}
