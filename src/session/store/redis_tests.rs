//! TTL arithmetic of the Redis store (idle timeout, cut short by the absolute deadline),
//! and its connection managers per thread.

use std::time::{Duration, SystemTime};

use super::*;

const IDLE: Duration = Duration::from_secs(3600);

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

#[test]
fn a_fresh_session_lives_one_idle_timeout() {
    assert_eq!(write_ttl(at(0), at(12 * 3600), IDLE), Some(IDLE));
}

#[test]
fn near_its_deadline_a_session_lives_only_until_the_deadline() {
    assert_eq!(write_ttl(at(0), at(600), IDLE), Some(Duration::from_secs(600)));
    assert_eq!(write_ttl(at(0), at(3600), IDLE), Some(IDLE));
}

#[test]
fn a_session_past_its_deadline_is_not_written() {
    assert_eq!(write_ttl(at(10), at(10), IDLE), None);
    assert_eq!(write_ttl(at(11), at(10), IDLE), None);
}

#[test]
fn a_lookup_slides_the_ttl_only_as_far_as_the_deadline() {
    assert_eq!(slide_passes_deadline(at(0), at(12 * 3600), IDLE), None);
    assert_eq!(slide_passes_deadline(at(0), at(3600), IDLE), None);
    assert_eq!(slide_passes_deadline(at(1), at(3600), IDLE), Some(at(3600)));
    assert_eq!(
        slide_passes_deadline(at(12 * 3600 - 5), at(12 * 3600), IDLE),
        Some(at(12 * 3600))
    );
}

#[test]
fn ttl_milliseconds_round_up_and_are_never_zero() {
    assert_eq!(millis(Duration::from_secs(2)), 2000);
    assert_eq!(millis(Duration::from_micros(1500)), 2);
    assert_eq!(millis(Duration::from_nanos(1)), 1);
    assert_eq!(millis(Duration::ZERO), 1);
    assert_eq!(unix_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(1234)), 1234);
}

#[tokio::test]
async fn each_thread_gets_a_connection_manager_of_its_own_made_once() {
    // Lazy managers: nothing connects to this address.
    let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
    let managers = Managers::new(client, ConnectionManagerConfig::new()).unwrap();
    assert_eq!(managers.count(), 1, "the constructing thread's");
    managers.here().unwrap();
    managers.here().unwrap();
    assert_eq!(managers.count(), 1);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                managers.here().unwrap();
                managers.here().unwrap();
            });
        });
    });
    assert_eq!(managers.count(), 2);
}
