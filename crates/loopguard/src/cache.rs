//! Destination → path cache shared by every socket of a factory.
//!
//! Reads are the per-datagram (per GSO batch) hot path, writes are rare (a miss, a reset, a
//! vanished source). The cache is therefore built so that a hit writes no shared memory, takes
//! no lock and makes no system call:
//!
//! - One open-addressing table (linear probing, at most half full) of 64-byte slots, one cache
//!   line each. Readers find the table through an [`AtomicPtr`] and read a slot under its own
//!   sequence counter (a seqlock): read the counter, the fields, the counter again; a change
//!   means a writer was there, so read again. Readers never write, so two threads reading the
//!   same entry do not bounce a cache line between them (a reader-writer lock, as in
//!   `DashMap`, does).
//! - Writers are serialised by a mutex and change slots in place: an insert is O(1), not a
//!   copy of the map. Deletion shifts the following entries back (no tombstones), so the table
//!   never needs rebuilding at the same size.
//! - When the table would pass half full it doubles: the new table is filled, then published.
//!   The old one is not freed, because a reader may still be probing it; it is kept until the
//!   cache is dropped. Sizes double, so all retired tables together are smaller than the
//!   current one. The table never shrinks (a reset empties it in place).
//!
//! A generation counter makes invalidation race-free: every entry remembers the generation it
//! was resolved in, a lookup reads the generation before the table and treats entries of any
//! other generation as misses, a reset bumps the generation before it empties the table, and a
//! resolution that started before a reset is returned to its caller but never stored.
//!
//! A reader that keeps finding a slot mid-write (its writer was preempted between two
//! stores) gives up after a bounded spin and reports a miss: the caller then resolves, as on
//! any miss, instead of waiting for the writer.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{fence, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Path, ResolveError};

/// How long "no route" is remembered, so a host without IPv6 does not redo the full lookup
/// for every datagram, yet notices within this time when a route appears.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// Slots of a new table; a power of two.
const MIN_CAPACITY: usize = 16;

/// How often a reader re-reads a slot that a writer is changing before it reports a miss.
const READ_SPINS: u32 = 128;

// Slot states, in the low two bits of `Slot::meta`.
const EMPTY: u64 = 0;
const FOUND: u64 = 1;
const NO_ROUTE: u64 = 2;
const STATE_MASK: u64 = 0b11;
/// The key is an IPv6 address (else IPv4, in `key[0]`).
const KEY_V6: u64 = 1 << 2;
/// The cached source is an IPv6 address.
const SOURCE_V6: u64 = 1 << 3;
/// The cached path names an interface (its index in the upper 32 bits).
const HAS_INTERFACE: u64 = 1 << 4;

/// What a slot holds, as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fields {
    meta: u64,
    generation: u64,
    key: [u64; 2],
    /// The source address; for `NO_ROUTE`, `value[0]` is the deadline in nanoseconds since
    /// the cache's epoch.
    value: [u64; 2],
}

impl Fields {
    const EMPTY: Fields = Fields {
        meta: EMPTY,
        generation: 0,
        key: [0; 2],
        value: [0; 2],
    };

    #[inline]
    fn state(&self) -> u64 {
        self.meta & STATE_MASK
    }

    #[inline]
    fn holds(&self, key: &Key) -> bool {
        self.state() != EMPTY && self.key == key.words && (self.meta & KEY_V6 != 0) == key.v6
    }

    fn key(&self) -> Key {
        Key {
            words: self.key,
            v6: self.meta & KEY_V6 != 0,
        }
    }
}

/// One entry, a cache line of its own. Every field is an atomic so that the seqlock's racing
/// reads are defined behaviour; on x86-64 and AArch64 they compile to plain loads and stores.
#[repr(align(64))]
struct Slot {
    /// Even when stable; odd while the writer changes the slot.
    seq: AtomicU64,
    meta: AtomicU64,
    generation: AtomicU64,
    key: [AtomicU64; 2],
    value: [AtomicU64; 2],
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            meta: AtomicU64::new(EMPTY),
            generation: AtomicU64::new(0),
            key: [AtomicU64::new(0), AtomicU64::new(0)],
            value: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// A consistent copy of the slot, or `None` if a writer kept changing it.
    #[inline]
    fn read(&self) -> Option<Fields> {
        for _ in 0..READ_SPINS {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let fields = Fields {
                    meta: self.meta.load(Ordering::Relaxed),
                    generation: self.generation.load(Ordering::Relaxed),
                    key: [
                        self.key[0].load(Ordering::Relaxed),
                        self.key[1].load(Ordering::Relaxed),
                    ],
                    value: [
                        self.value[0].load(Ordering::Relaxed),
                        self.value[1].load(Ordering::Relaxed),
                    ],
                };
                // Orders the field reads before the second counter read: if any of them saw
                // a writer's store, this read sees at least the writer's odd counter.
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    return Some(fields);
                }
            }
            std::hint::spin_loop();
        }
        None
    }

    /// What the slot holds, for the writer (who alone changes slots, under the write lock).
    fn peek(&self) -> Fields {
        Fields {
            meta: self.meta.load(Ordering::Relaxed),
            generation: self.generation.load(Ordering::Relaxed),
            key: [
                self.key[0].load(Ordering::Relaxed),
                self.key[1].load(Ordering::Relaxed),
            ],
            value: [
                self.value[0].load(Ordering::Relaxed),
                self.value[1].load(Ordering::Relaxed),
            ],
        }
    }

    /// Changes the slot. Only under the write lock: the seqlock admits one writer.
    fn write(&self, f: &Fields) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        // The odd counter is visible before any field changes.
        fence(Ordering::Release);
        self.meta.store(f.meta, Ordering::Relaxed);
        self.generation.store(f.generation, Ordering::Relaxed);
        self.key[0].store(f.key[0], Ordering::Relaxed);
        self.key[1].store(f.key[1], Ordering::Relaxed);
        self.value[0].store(f.value[0], Ordering::Relaxed);
        self.value[1].store(f.value[1], Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }
}

/// A destination as the table stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    words: [u64; 2],
    v6: bool,
}

impl Key {
    /// The address's bytes in native order (cheapest to load; the table only compares and
    /// hashes them).
    #[inline]
    fn new(ip: IpAddr) -> Key {
        match ip {
            IpAddr::V4(v4) => Key {
                words: [u64::from(u32::from_ne_bytes(v4.octets())), 0],
                v6: false,
            },
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let (hi, lo) = o.split_at(8);
                Key {
                    words: [
                        u64::from_ne_bytes(hi.try_into().expect("8 bytes")),
                        u64::from_ne_bytes(lo.try_into().expect("8 bytes")),
                    ],
                    v6: true,
                }
            }
        }
    }
}

#[inline]
fn encode_ip(ip: IpAddr) -> ([u64; 2], bool) {
    let k = Key::new(ip);
    (k.words, k.v6)
}

#[inline]
fn decode_ip(words: [u64; 2], v6: bool) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        o[..8].copy_from_slice(&words[0].to_ne_bytes());
        o[8..].copy_from_slice(&words[1].to_ne_bytes());
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::from((words[0] as u32).to_ne_bytes()))
    }
}

/// A power-of-two array of slots.
struct Table {
    slots: Box<[Slot]>,
    mask: usize,
}

impl Table {
    fn with_capacity(capacity: usize) -> Table {
        debug_assert!(capacity.is_power_of_two());
        Table {
            slots: (0..capacity).map(|_| Slot::empty()).collect(),
            mask: capacity - 1,
        }
    }

    fn capacity(&self) -> usize {
        self.slots.len()
    }
}

/// What the writer keeps besides the published table.
struct Writer {
    /// Tables replaced by larger ones; readers may still be probing them.
    // Boxed: readers hold pointers to the `Table` itself, which must not move when the
    // vector grows.
    #[allow(clippy::vec_box)]
    retired: Vec<Box<Table>>,
}

/// The cache. Cheap to read from many threads at once.
pub(crate) struct PathCache {
    /// The current table; never null, owned by the cache (see `Drop`).
    table: AtomicPtr<Table>,
    generation: AtomicU64,
    /// Entries in the current table (written under the write lock).
    len: AtomicUsize,
    /// Origin of the `NO_ROUTE` deadlines.
    epoch: Instant,
    /// Per-cache hash keys, so destinations chosen by others cannot be aimed at one chain.
    seed: [u64; 2],
    /// Serialises writers: the seqlock admits one writer per slot and the table one resizer.
    write: Mutex<Writer>,
}

impl fmt::Debug for PathCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathCache")
            .field("len", &self.len())
            .field("capacity", &self.table().capacity())
            .field("generation", &self.generation())
            .finish()
    }
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A cached path.
    Hit(Path),
    /// A cached "no route" that has not expired.
    NoRoute,
    /// Nothing usable: resolve, then [`PathCache::store`] with this generation.
    Miss { generation: u64 },
}

impl PathCache {
    pub(crate) fn new() -> Self {
        let random = std::collections::hash_map::RandomState::new();
        let mut seed = [0u64; 2];
        for (i, s) in seed.iter_mut().enumerate() {
            let mut h = random.build_hasher();
            h.write_usize(i);
            // An odd multiplier keeps every bit of the other factor.
            *s = h.finish() | 1;
        }
        PathCache {
            table: AtomicPtr::new(Box::into_raw(Box::new(Table::with_capacity(MIN_CAPACITY)))),
            generation: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            epoch: Instant::now(),
            seed,
            write: Mutex::new(Writer {
                retired: Vec::new(),
            }),
        }
    }

    #[inline]
    fn table(&self) -> &Table {
        // SAFETY: the pointer always comes from `Box::into_raw` and is never null. A table is
        // freed only when the cache is dropped (replaced tables are kept in `retired`), so it
        // outlives `&self`.
        unsafe { &*self.table.load(Ordering::Acquire) }
    }

    /// Home slot of `key` in a table of `mask + 1` slots.
    #[inline]
    fn home(&self, key: &Key, mask: usize) -> usize {
        // A folded 64×64→128-bit multiply: every input bit reaches the low output bits.
        let a = key.words[0] ^ self.seed[0] ^ u64::from(key.v6);
        let b = key.words[1] ^ self.seed[1];
        let product = u128::from(a).wrapping_mul(u128::from(b));
        ((product as u64) ^ ((product >> 64) as u64)) as usize & mask
    }

    fn now_nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The current generation; it changes on every [`reset`](Self::reset).
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn lookup(&self, destination: IpAddr) -> Lookup {
        // Read the generation before the table: a reset in between makes us miss, never
        // return an entry of the old network as if it were new.
        let generation = self.generation();
        let miss = Lookup::Miss { generation };
        let table = self.table();
        let key = Key::new(destination);
        let mut i = self.home(&key, table.mask);
        // The table is never full, so an empty slot ends every probe; the bound only guards
        // against a table read while a writer races through it.
        for _ in 0..table.capacity() {
            let Some(slot) = table.slots[i].read() else {
                return miss;
            };
            match slot.state() {
                EMPTY => return miss,
                _ if slot.holds(&key) => {
                    if slot.generation != generation {
                        return miss;
                    }
                    return match slot.state() {
                        FOUND => Lookup::Hit(Path {
                            source: decode_ip(slot.value, slot.meta & SOURCE_V6 != 0),
                            interface: (slot.meta & HAS_INTERFACE != 0)
                                .then_some((slot.meta >> 32) as u32),
                        }),
                        _ if self.now_nanos() < slot.value[0] => Lookup::NoRoute,
                        _ => miss,
                    };
                }
                _ => i = (i + 1) & table.mask,
            }
        }
        miss
    }

    /// Stores a resolution made in `generation`, unless a reset happened since. I/O failures
    /// of the lookup itself are not cached: the next datagram tries again.
    pub(crate) fn store(
        &self,
        destination: IpAddr,
        generation: u64,
        result: &Result<Path, ResolveError>,
    ) {
        let (key_words, key_v6) = encode_ip(destination);
        let mut fields = Fields {
            meta: if key_v6 { KEY_V6 } else { 0 },
            generation,
            key: key_words,
            value: [0; 2],
        };
        match result {
            Ok(path) => {
                let (source, v6) = encode_ip(path.source);
                fields.meta |= FOUND;
                if v6 {
                    fields.meta |= SOURCE_V6;
                }
                if let Some(index) = path.interface {
                    fields.meta |= HAS_INTERFACE | (u64::from(index) << 32);
                }
                fields.value = source;
            }
            Err(ResolveError::NoRoute) => {
                fields.meta |= NO_ROUTE;
                fields.value[0] = self.now_nanos() + NEGATIVE_TTL.as_nanos() as u64;
            }
            Err(ResolveError::Io(_)) => return,
        }
        let mut writer = self
            .write
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if self.generation() != generation {
            return;
        }
        self.insert_locked(&mut writer, fields);
    }

    /// Inserts or replaces `fields` (its key). Only under the write lock.
    fn insert_locked(&self, writer: &mut Writer, fields: Fields) {
        let key = fields.key();
        let table = self.table();
        let mut i = self.home(&key, table.mask);
        loop {
            let slot = table.slots[i].peek();
            if slot.holds(&key) {
                table.slots[i].write(&fields);
                return;
            }
            if slot.state() == EMPTY {
                break;
            }
            i = (i + 1) & table.mask;
        }
        let len = self.len.load(Ordering::Relaxed) + 1;
        if len * 2 > table.capacity() {
            self.grow(writer, len);
            // The key was absent; the new table has room, insert there.
            return self.insert_locked(writer, fields);
        }
        table.slots[i].write(&fields);
        self.len.store(len, Ordering::Relaxed);
    }

    /// Replaces the table by one large enough for `len` entries at most half full. Only under
    /// the write lock.
    fn grow(&self, writer: &mut Writer, len: usize) {
        let old = self.table();
        let capacity = (len * 2).next_power_of_two().max(MIN_CAPACITY);
        let new = Table::with_capacity(capacity);
        for slot in old.slots.iter() {
            let fields = slot.peek();
            if fields.state() == EMPTY {
                continue;
            }
            let mut i = self.home(&fields.key(), new.mask);
            while new.slots[i].peek().state() != EMPTY {
                i = (i + 1) & new.mask;
            }
            new.slots[i].write(&fields);
        }
        let old = self
            .table
            .swap(Box::into_raw(Box::new(new)), Ordering::AcqRel);
        // SAFETY: `old` came from `Box::into_raw` and was the published table; it is kept
        // (not freed) until the cache is dropped, since readers may still hold it.
        writer.retired.push(unsafe { Box::from_raw(old) });
    }

    /// Forgets one destination, for example after the kernel said its source is gone.
    pub(crate) fn forget(&self, destination: IpAddr) {
        let key = Key::new(destination);
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let table = self.table();
        let mask = table.mask;
        let mut hole = self.home(&key, mask);
        loop {
            let slot = table.slots[hole].peek();
            if slot.state() == EMPTY {
                return;
            }
            if slot.holds(&key) {
                break;
            }
            hole = (hole + 1) & mask;
        }
        // Backward-shift deletion (Knuth's Algorithm R): move later entries of the chain into
        // the hole so no probe ever stops early at it. A reader racing a move may miss the
        // moved entry once; a miss only costs a resolution.
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let next = table.slots[j].peek();
            if next.state() == EMPTY {
                break;
            }
            let home = self.home(&next.key(), mask);
            // Entries whose home lies cyclically in (hole, j] stay where they are.
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                table.slots[hole].write(&next);
                hole = j;
            }
        }
        table.slots[hole].write(&Fields::EMPTY);
        self.len.fetch_sub(1, Ordering::Relaxed);
    }

    /// Forgets everything: the network changed.
    pub(crate) fn reset(&self) {
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // First the generation: from here on no reader accepts an old entry, even one not yet
        // cleared below.
        self.generation.fetch_add(1, Ordering::AcqRel);
        for slot in self.table().slots.iter() {
            if slot.peek().state() != EMPTY {
                slot.write(&Fields::EMPTY);
            }
        }
        self.len.store(0, Ordering::Relaxed);
    }

    /// How many destinations are cached.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Bytes the cache holds: the current table and the retired ones.
    #[cfg(test)]
    fn footprint(&self) -> usize {
        let writer = self.write.lock().unwrap();
        let slots: usize =
            self.table().capacity() + writer.retired.iter().map(|t| t.capacity()).sum::<usize>();
        slots * std::mem::size_of::<Slot>()
    }
}

impl Drop for PathCache {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::into_raw`; `&mut self` means no reader is left.
        drop(unsafe { Box::from_raw(*self.table.get_mut()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::atomic::AtomicBool;

    fn path(s: &str) -> Path {
        Path {
            source: s.parse().unwrap(),
            interface: Some(2),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn slots_are_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn miss_then_hit() {
        let cache = PathCache::new();
        let Lookup::Miss { generation } = cache.lookup(ip("192.0.2.1")) else {
            panic!("empty cache hit")
        };
        cache.store(ip("192.0.2.1"), generation, &Ok(path("198.51.100.2")));
        assert_eq!(
            cache.lookup(ip("192.0.2.1")),
            Lookup::Hit(path("198.51.100.2"))
        );
        assert!(matches!(cache.lookup(ip("192.0.2.2")), Lookup::Miss { .. }));
    }

    #[test]
    fn paths_round_trip_every_family_and_interface() {
        let cache = PathCache::new();
        let g = cache.generation();
        let cases = [
            (
                "192.0.2.1",
                Path {
                    source: ip("198.51.100.2"),
                    interface: None,
                },
            ),
            (
                "2001:db8::1",
                Path {
                    source: ip("2001:db8:1::2"),
                    interface: Some(u32::MAX),
                },
            ),
            // An IPv4-mapped IPv6 destination is not the IPv4 one.
            (
                "::ffff:192.0.2.1",
                Path {
                    source: ip("192.0.2.9"),
                    interface: Some(0),
                },
            ),
        ];
        for (dst, p) in cases {
            cache.store(ip(dst), g, &Ok(p));
        }
        for (dst, p) in cases {
            assert_eq!(cache.lookup(ip(dst)), Lookup::Hit(p), "{dst}");
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn a_resolution_that_raced_a_reset_is_not_stored() {
        let cache = PathCache::new();
        let Lookup::Miss { generation } = cache.lookup(ip("192.0.2.1")) else {
            panic!()
        };
        cache.reset();
        cache.store(ip("192.0.2.1"), generation, &Ok(path("198.51.100.2")));
        assert!(matches!(cache.lookup(ip("192.0.2.1")), Lookup::Miss { .. }));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn reset_and_forget_drop_entries() {
        let cache = PathCache::new();
        let g = cache.generation();
        cache.store(ip("192.0.2.1"), g, &Ok(path("198.51.100.2")));
        cache.store(ip("192.0.2.3"), g, &Ok(path("198.51.100.2")));
        cache.forget(ip("192.0.2.1"));
        assert!(matches!(cache.lookup(ip("192.0.2.1")), Lookup::Miss { .. }));
        assert!(matches!(cache.lookup(ip("192.0.2.3")), Lookup::Hit(_)));
        cache.reset();
        assert_ne!(cache.generation(), g);
        assert!(matches!(cache.lookup(ip("192.0.2.3")), Lookup::Miss { .. }));
    }

    #[test]
    fn no_route_is_remembered_briefly_and_lookup_failures_not_at_all() {
        let cache = PathCache::new();
        let g = cache.generation();
        cache.store(ip("2001:db8::1"), g, &Err(ResolveError::NoRoute));
        assert_eq!(cache.lookup(ip("2001:db8::1")), Lookup::NoRoute);
        cache.store(
            ip("2001:db8::2"),
            g,
            &Err(ResolveError::Io(io::Error::other("netlink"))),
        );
        assert!(matches!(
            cache.lookup(ip("2001:db8::2")),
            Lookup::Miss { .. }
        ));
        // An expired negative entry is a miss again.
        let (key, v6) = encode_ip(ip("2001:db8::3"));
        let mut writer = cache.write.lock().unwrap();
        cache.insert_locked(
            &mut writer,
            Fields {
                meta: NO_ROUTE | if v6 { KEY_V6 } else { 0 },
                generation: g,
                key,
                // A deadline already passed.
                value: [0, 0],
            },
        );
        drop(writer);
        assert!(matches!(
            cache.lookup(ip("2001:db8::3")),
            Lookup::Miss { .. }
        ));
    }

    /// Many destinations, many of them sharing probe chains in a small table: every insert is
    /// found, every forget removes exactly its entry, and the survivors stay reachable after
    /// the backward shifts, through growth.
    #[test]
    fn inserts_and_forgets_keep_every_other_entry_reachable() {
        let cache = PathCache::new();
        let g = cache.generation();
        let dst = |i: u32| -> IpAddr {
            if i.is_multiple_of(3) {
                IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i))
            } else {
                IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)))
            }
        };
        let src = |i: u32| Path {
            source: IpAddr::V4(Ipv4Addr::from(i)),
            interface: Some(i),
        };
        let n = 3000;
        for i in 0..n {
            cache.store(dst(i), g, &Ok(src(i)));
        }
        assert_eq!(cache.len(), n as usize);
        for i in (0..n).filter(|i| i % 4 == 1) {
            cache.forget(dst(i));
        }
        // Forgetting an absent destination changes nothing.
        cache.forget(dst(n + 1));
        for i in 0..n {
            let got = cache.lookup(dst(i));
            if i % 4 == 1 {
                assert!(matches!(got, Lookup::Miss { .. }), "{i} not forgotten");
            } else {
                assert_eq!(got, Lookup::Hit(src(i)), "{i} lost");
            }
        }
        let kept = (0..n).filter(|i| i % 4 != 1).count();
        assert_eq!(cache.len(), kept);
        // Replacing keeps one entry per destination.
        cache.store(dst(0), g, &Ok(src(7)));
        assert_eq!(cache.lookup(dst(0)), Lookup::Hit(src(7)));
        assert_eq!(cache.len(), kept);
    }

    #[test]
    fn retired_tables_stay_smaller_than_the_current_one() {
        let cache = PathCache::new();
        let g = cache.generation();
        for i in 0..100_000u32 {
            cache.store(IpAddr::V4(Ipv4Addr::from(i)), g, &Ok(path("198.51.100.2")));
        }
        let current = cache.table().capacity() * std::mem::size_of::<Slot>();
        assert!(cache.footprint() < 2 * current);
        assert!(cache.table().capacity() >= 2 * cache.len());
        // A reset empties the table in place: no new allocation, nothing found afterwards.
        cache.reset();
        assert_eq!(
            cache.table().capacity() * std::mem::size_of::<Slot>(),
            current
        );
        assert!(matches!(
            cache.lookup(IpAddr::V4(Ipv4Addr::from(5))),
            Lookup::Miss { .. }
        ));
    }

    /// Readers racing resets, inserts and growth: a hit is never an entry stored before the
    /// generation the reader saw before its lookup (a stale network), and never torn.
    #[test]
    fn concurrent_readers_never_see_a_stale_generation_or_a_torn_entry() {
        let cache = PathCache::new();
        let stop = AtomicBool::new(false);
        let dsts: Vec<IpAddr> = (0..64u32)
            .map(|i| IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i))))
            .collect();
        // The path encodes its generation twice (source and interface): a torn read would
        // show two different numbers.
        let path_of = |g: u64| Path {
            source: IpAddr::V6(Ipv6Addr::from(u128::from(g) | 0x2001_0db8_u128 << 96)),
            interface: Some(g as u32),
        };
        let hits = AtomicU64::new(0);
        std::thread::scope(|s| {
            for r in 0..2 {
                let (cache, stop, dsts, hits) = (&cache, &stop, &dsts, &hits);
                s.spawn(move || {
                    let mut i = r;
                    let mut k = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let before = cache.generation();
                        // Reader 1 repeats each destination four times (a burst).
                        k += 1;
                        if r == 0 || k.is_multiple_of(4) {
                            i = (i + 7) % dsts.len();
                        }
                        if let Lookup::Hit(p) = cache.lookup(dsts[i]) {
                            let g = p.interface.unwrap();
                            let IpAddr::V6(v6) = p.source else {
                                panic!("torn family")
                            };
                            assert_eq!(u128::from(v6) as u32, g, "torn entry");
                            assert!(u64::from(g) >= before, "stale: {g} < {before}");
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            // Enough rounds, and enough hits to mean something even on a loaded machine.
            let started = Instant::now();
            let mut round = 0;
            while round < 2000
                || (hits.load(Ordering::Relaxed) < 10_000
                    && started.elapsed() < Duration::from_secs(20))
            {
                cache.reset();
                let g = cache.generation();
                let n = if round % 10 == 0 { dsts.len() } else { 8 };
                for d in &dsts[..n] {
                    cache.store(*d, g, &Ok(path_of(g)));
                }
                if round % 3 == 0 {
                    cache.forget(dsts[round % 8]);
                }
                round += 1;
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert!(hits.load(Ordering::Relaxed) > 0, "the readers never hit");
    }
}
