//! The per-client buckets: a fixed table of slots, allocated once at start-up, so that a
//! flood from any number of addresses costs no memory beyond it.
//!
//! Why a fixed table rather than a map (or a moka cache) with a capacity bound:
//! - a bucket that has refilled to its burst carries no information (a fresh one would
//!   answer the same), so an idle client's slot is free again without any expiry
//!   timer, sweep or background task: idle buckets cannot pile up;
//! - when every slot a newcomer may use holds a bucket still refilling, the fullest one
//!   is reused. The clients being held back hardest, flooders among them, are the last
//!   to lose their state, and the one that does loses only a head start; a bounded map
//!   would evict by age or frequency instead, and moka's admission policy may decline to
//!   store a newcomer at all, handing it a fresh bucket at every request;
//! - every operation is a hash and a look at [`WAYS`] slots under a lock of their own:
//!   no allocation, no lock shared by the whole table, nothing whose cost grows with
//!   what the table holds.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::{Bucket, Rate, Take};

/// Whose bucket a login start spends: an IPv4 address, or an IPv6 address's /64. A host
/// is routinely given a whole /64 and picks addresses in it at will (RFC 4941 temporary
/// addresses; anyone with a /64 can use all 2⁶⁴), so a bucket per IPv6 address would be
/// a fresh bucket per request for whoever wants one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(Ipv4Addr),
    /// The upper 64 bits of the address.
    V6Net(u64),
}

impl ClientKey {
    /// The key of `ip` (IPv4-mapped IPv6 addresses count as the IPv4 address they map).
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            // The shift leaves 64 bits, so the cast drops nothing.
            IpAddr::V6(v6) => ClientKey::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(v4) => write!(f, "{v4}"),
            ClientKey::V6Net(net) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*net) << 64)),
        }
    }
}

/// Slots per set: a client's bucket may sit in any slot of the one set its key hashes to.
/// Eight keep a set from overflowing at the table's load (see [`slots_for`]) while a
/// lookup stays a short scan of one or two cache lines' worth of slots.
const WAYS: usize = 8;
/// Bounds of the table's size: the smallest costs nothing worth saving, the largest
/// about 3 MiB, for settings whose bound below would ask for more.
const MIN_SLOTS: usize = 1024;
const MAX_SLOTS: usize = 65_536;

/// How many slots the table needs for these rates. A client's bucket holds state only
/// while it refills after a login that went through both buckets (a token the global
/// bucket refused is handed back), and it is full again within the per-client refill
/// time. So at most `global burst + global rate × client refill time` clients hold
/// state at once: 700 with the defaults. Four slots for each, rounded up to a power of
/// two (4096 with the defaults), leave sets room enough that a set overflows, and a
/// bucket still refilling is reused, about never.
pub(super) fn slots_for(global: Rate, client: Rate) -> usize {
    let live = global.burst + global.per_second * client.refill_seconds();
    // A float cast saturates, and the `min` keeps `next_power_of_two` from overflowing.
    let wanted = ((live * 4.0) as usize).min(MAX_SLOTS);
    wanted.next_power_of_two().clamp(MIN_SLOTS, MAX_SLOTS)
}

/// The memory a table of `slots` slots takes, in bytes.
pub(super) fn table_bytes(slots: usize) -> usize {
    slots / WAYS * std::mem::size_of::<Set>()
}

struct Entry {
    key: ClientKey,
    bucket: Bucket,
}

type Set = Mutex<[Option<Entry>; WAYS]>;

pub(super) struct ClientTable {
    rate: Rate,
    /// A power of two of them, so the set of a hash is a mask away.
    sets: Box<[Set]>,
    /// Keyed at random per process, so no one can pick addresses that land in one set.
    hasher: RandomState,
}

impl ClientTable {
    /// A table of `slots` slots (a power of two, at least [`WAYS`]).
    pub(super) fn new(rate: Rate, slots: usize) -> Self {
        let sets = (slots / WAYS).max(1).next_power_of_two();
        ClientTable {
            rate,
            sets: (0..sets).map(|_| Mutex::new(Default::default())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn set(&self, key: ClientKey) -> MutexGuard<'_, [Option<Entry>; WAYS]> {
        // The mask keeps the index below the length, a power of two; the cast of a hash
        // to usize only drops bits the mask would drop too.
        let index = self.hasher.hash_one(key) as usize & (self.sets.len() - 1);
        // A poisoned lock only means another thread panicked mid-update; the slots are
        // still plain values, so keep using them.
        self.sets[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a token from `key`'s bucket, giving it a full one if it has none.
    pub(super) fn take(&self, key: ClientKey, now: Instant) -> Take {
        let mut set = self.set(key);
        let slot = match set.iter().position(|slot| holds(slot, key)) {
            Some(index) => &mut set[index],
            None => {
                let index = reusable(&set, self.rate, now);
                let slot = &mut set[index];
                *slot = None;
                slot
            }
        };
        let entry = slot.get_or_insert_with(|| Entry {
            key,
            bucket: Bucket::full(self.rate, now),
        });
        entry.bucket.take(self.rate, now)
    }

    /// Returns the token [`ClientTable::take`] gave `key`, if its bucket is still held.
    pub(super) fn give_back(&self, key: ClientKey, now: Instant) {
        let mut set = self.set(key);
        if let Some(entry) = set.iter_mut().flatten().find(|entry| entry.key == key) {
            entry.bucket.give_back(self.rate, now);
        }
    }

    /// How many clients hold a bucket that is not full at `now`, that is, hold state.
    #[cfg(test)]
    pub(super) fn holding(&self, now: Instant) -> usize {
        self.sets
            .iter()
            .map(|set| {
                let set = set.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                set.iter()
                    .flatten()
                    .filter(|entry| entry.bucket.level(self.rate, now) < self.rate.burst)
                    .count()
            })
            .sum()
    }

    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.sets.len() * WAYS
    }
}

fn holds(slot: &Option<Entry>, key: ClientKey) -> bool {
    slot.as_ref().is_some_and(|entry| entry.key == key)
}

/// The slot a newcomer takes: an empty one, else the one whose bucket is fullest (a
/// full one carries nothing; a fuller one, the least).
fn reusable(set: &[Option<Entry>; WAYS], rate: Rate, now: Instant) -> usize {
    let fullness = |slot: &Option<Entry>| match slot {
        None => f64::INFINITY,
        Some(entry) => entry.bucket.level(rate, now),
    };
    (0..WAYS)
        .max_by(|&a, &b| fullness(&set[a]).total_cmp(&fullness(&set[b])))
        .unwrap_or(0)
}
