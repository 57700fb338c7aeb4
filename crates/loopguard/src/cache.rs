//! Destination → path cache shared by every socket of a factory.
//!
//! Reads are the per-datagram (per GSO batch) hot path, writes are rare (a miss, a reset, a
//! vanished source). A hit therefore writes no shared memory, takes no lock and makes no
//! system call, and the cache is bounded:
//!
//! - One open-addressing table (linear probing, at most 4/5 full) of 32-byte slots, two per
//!   cache line. A slot holds the destination, a generation and, for a found path, the index
//!   of the path in a small table of distinct paths (a host has a handful of sources and
//!   interfaces, not one per destination): 32 bytes instead of the 64 a path of its own would
//!   need. Each slot and each path is read under its own sequence counter (a seqlock of
//!   atomics): read the counter, the fields, the counter again; a change means a writer was
//!   there, so read again. Readers never write.
//! - The table is a list of segments that are never moved or freed while the cache lives:
//!   16 slots, then 16, 32, 64… Growth adds a segment (doubling the table) and rehashes in
//!   place, so the cache holds one table's memory, never a retired copy that a reader might
//!   still be probing. Readers check a moves counter (odd while entries move, bumped by growth,
//!   deletion and eviction): a miss that raced a move is looked up again under the write lock,
//!   so a move never turns a cached destination into a resolution. A hit needs no such check:
//!   a slot read whole always pairs a destination with its own path.
//! - Writers are serialised by a mutex and change slots in place: an insert is O(1).
//!   Deletion shifts the following entries back (no tombstones).
//! - At most `capacity` destinations are kept. A store into a full cache evicts one entry at a
//!   clock hand (an expired "no route" entry among the next few if there is one, else the
//!   first): readers write nothing, so there are no recency bits to keep, and entries lie in
//!   hash order, so the hand's victims are spread like random ones. Every store also sweeps
//!   two slots at a second hand and deletes expired "no route" entries it finds, so they do
//!   not stay behind: each is gone after at most half as many stores as the table has slots.
//!
//! A generation counter makes invalidation race-free: every entry remembers the generation it
//! was resolved in, a lookup reads the generation before the table and treats entries of any
//! other generation as misses, a reset bumps the generation before it empties the table, and a
//! resolution that started before a reset is returned to its caller but never stored.
//!
//! A reader that keeps finding a slot mid-write (its writer was preempted between two
//! stores) gives up after a bounded spin and reports a miss: the caller then resolves, as on
//! any miss, instead of waiting for the writer.
//!
//! Why by hand: the crates that bound a concurrent map take a lock or pin an epoch per read
//! (`quick_cache`'s shard `RwLock`, `papaya`'s and `scc`'s epoch guards, `moka`'s locks and
//! recency writes); all of them write shared or thread-local memory on every hit, and none
//! stores a destination in under 60 bytes. Measured once on the development machine (100,000
//! IPv6 destinations, RSS growth; hits at 16 destinations, one thread, against `DashMap` in
//! the same run): `quick_cache` 65.5 bytes and 0.56× `DashMap`'s hit, `papaya` 88 bytes and
//! 1.0×, `scc::HashIndex` 63 bytes and 1.1×, a sharded `RwLock<HashMap>` 62 bytes and 1.8×.
//! `loopguard bench` measures this cache against `DashMap` in the same run.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{Path, ResolveError};

/// How long "no route" is remembered, so a host without IPv6 does not redo the full lookup
/// for every datagram, yet notices within this time when a route appears.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// Destinations a factory's cache keeps unless told otherwise: at most 4 MiB of slots.
pub(crate) const DEFAULT_CAPACITY: usize = 65_536;

/// The largest capacity a cache accepts (larger requests are clamped): 2^28 destinations.
pub(crate) const MAX_CAPACITY: usize = 1 << 28;

/// log2 of the slots of the first segment (and of a new table).
const MIN_SHIFT: u32 = 4;
const MIN_SLOTS: usize = 1 << MIN_SHIFT;
/// Segments 0..MAX_SEGMENTS address `MIN_SLOTS << (MAX_SEGMENTS - 1)` slots: room for
/// `MAX_CAPACITY` entries at 4/5 load.
const MAX_SEGMENTS: usize = 27;
const _: () = assert!(MIN_SLOTS << (MAX_SEGMENTS - 1) >= 2 * MAX_CAPACITY);

/// Distinct paths (source, interface) cached at once. A path whose table is full of paths
/// still in use is not cached: the next datagram resolves again, nothing else changes.
const MAX_PATHS: usize = 256;

/// How often a reader re-reads a slot that a writer is changing before it reports a miss.
const READ_SPINS: u32 = 128;

/// Occupied slots the eviction hand looks at for an expired "no route" entry.
const EVICT_SCAN: usize = 8;
/// Slots each store sweeps for expired "no route" entries.
const SWEEP_PER_STORE: usize = 2;

// Slot states, in the low two bits of `Fields::meta`.
const EMPTY: u64 = 0;
const FOUND: u64 = 1;
const NO_ROUTE: u64 = 2;
/// Like `NO_ROUTE` (same deadline), for "the tunnel is gone": callers get a different error.
const TUNNEL_GONE: u64 = 3;
const STATE_MASK: u64 = 0b11;
/// The key is an IPv6 address (else IPv4, in `key[0]`).
const KEY_V6: u64 = 1 << 2;
/// `FOUND`: the path's index in the path table, in bits 16..32, and the path's id in bits
/// 32..64. `NO_ROUTE` and `TUNNEL_GONE`: the deadline in milliseconds since the cache's epoch, bits 3..64.
const PATH_INDEX_SHIFT: u32 = 16;
const PATH_ID_SHIFT: u32 = 32;
const DEADLINE_SHIFT: u32 = 3;

// `PathFields::meta`.
const SOURCE_V6: u64 = 1;
const HAS_INTERFACE: u64 = 1 << 1;

/// What a slot holds, as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fields {
    meta: u64,
    /// The low 32 bits of the generation the entry was resolved in.
    generation: u32,
    key: [u64; 2],
}

impl Fields {
    const EMPTY: Fields = Fields {
        meta: EMPTY,
        generation: 0,
        key: [0; 2],
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

    #[inline]
    fn path_index(&self) -> usize {
        ((self.meta >> PATH_INDEX_SHIFT) & 0xffff) as usize
    }

    #[inline]
    fn path_id(&self) -> u32 {
        (self.meta >> PATH_ID_SHIFT) as u32
    }

    #[inline]
    fn deadline_ms(&self) -> u64 {
        self.meta >> DEADLINE_SHIFT
    }
}

/// One entry; two share a cache line, none straddles two. Every field is an atomic so that
/// the seqlock's racing reads are defined behaviour; on x86-64 and AArch64 they compile to
/// plain loads and stores.
#[repr(align(32))]
struct Slot {
    key: [AtomicU64; 2],
    meta: AtomicU64,
    /// Even when stable; odd while the writer changes the slot.
    seq: AtomicU32,
    generation: AtomicU32,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            key: [AtomicU64::new(0), AtomicU64::new(0)],
            meta: AtomicU64::new(EMPTY),
            seq: AtomicU32::new(0),
            generation: AtomicU32::new(0),
        }
    }

    /// A consistent copy of the slot, or `None` if a writer kept changing it.
    #[inline]
    fn read(&self) -> Option<Fields> {
        for _ in 0..READ_SPINS {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let fields = self.peek();
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

    /// The fields, unchecked: for the writer (who alone changes slots, under the write lock),
    /// and inside [`read`](Self::read).
    #[inline]
    fn peek(&self) -> Fields {
        Fields {
            meta: self.meta.load(Ordering::Relaxed),
            generation: self.generation.load(Ordering::Relaxed),
            key: [
                self.key[0].load(Ordering::Relaxed),
                self.key[1].load(Ordering::Relaxed),
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
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }
}

/// A distinct path, as the path table stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PathFields {
    /// Changes whenever the path slot is given to another path, so an entry that names an
    /// older occupant is a miss, never another path.
    id: u32,
    meta: u64,
    source: [u64; 2],
}

impl PathFields {
    fn new(path: &Path, id: u32) -> PathFields {
        let (source, v6) = encode_ip(path.source);
        let mut meta = if v6 { SOURCE_V6 } else { 0 };
        if let Some(index) = path.interface {
            meta |= HAS_INTERFACE | (u64::from(index) << 32);
        }
        PathFields { id, meta, source }
    }

    #[inline]
    fn path(&self) -> Path {
        Path {
            source: decode_ip(self.source, self.meta & SOURCE_V6 != 0),
            interface: (self.meta & HAS_INTERFACE != 0).then_some((self.meta >> 32) as u32),
        }
    }
}

/// One slot of the path table, under its own seqlock like [`Slot`].
#[repr(align(32))]
struct PathSlot {
    seq: AtomicU32,
    id: AtomicU32,
    meta: AtomicU64,
    source: [AtomicU64; 2],
}

impl PathSlot {
    fn empty() -> PathSlot {
        PathSlot {
            seq: AtomicU32::new(0),
            // No entry names id 0 (ids start at 1), so an empty path slot matches nothing.
            id: AtomicU32::new(0),
            meta: AtomicU64::new(0),
            source: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    #[inline]
    fn read(&self) -> Option<PathFields> {
        for _ in 0..READ_SPINS {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let fields = PathFields {
                    id: self.id.load(Ordering::Relaxed),
                    meta: self.meta.load(Ordering::Relaxed),
                    source: [
                        self.source[0].load(Ordering::Relaxed),
                        self.source[1].load(Ordering::Relaxed),
                    ],
                };
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    return Some(fields);
                }
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Only under the write lock.
    fn write(&self, f: &PathFields) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.id.store(f.id, Ordering::Relaxed);
        self.meta.store(f.meta, Ordering::Relaxed);
        self.source[0].store(f.source[0], Ordering::Relaxed);
        self.source[1].store(f.source[1], Ordering::Relaxed);
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

/// Slots in segment `k`: 16, 16, 32, 64…
const fn segment_len(k: usize) -> usize {
    if k == 0 {
        MIN_SLOTS
    } else {
        MIN_SLOTS << (k - 1)
    }
}

/// The segment and offset of slot `i`: slots `[16·2^(k-1), 16·2^k)` live in segment `k`.
#[inline]
fn locate(i: usize) -> (usize, usize) {
    let k = (usize::BITS - (i >> MIN_SHIFT).leading_zeros()) as usize;
    let offset = if k == 0 { i } else { i - segment_len(k) };
    (k, offset)
}

/// A path slot as the writer knows it.
#[derive(Clone, Copy, Debug)]
struct Interned {
    path: Path,
    id: u32,
    /// Entries in the table that name this path.
    refs: u32,
}

/// What the writer keeps besides what readers see.
struct Writer {
    /// What each path slot holds (`None`: never used).
    paths: Vec<Option<Interned>>,
    /// The id the next path slot assignment gets; never 0.
    next_path_id: u32,
    /// Where eviction looks next.
    evict_hand: usize,
    /// Where the sweep for expired "no route" entries looks next.
    sweep_hand: usize,
}

/// The cache. Cheap to read from many threads at once.
pub(crate) struct PathCache {
    /// The segments; segment `k` is allocated before the table first grows past it and
    /// freed only when the cache is dropped.
    segments: [AtomicPtr<Slot>; MAX_SEGMENTS],
    /// Slots in the table (a power of two); every segment it spans is allocated.
    slots: AtomicUsize,
    /// Odd while the writer moves entries between slots (growth, backward shift).
    moves: AtomicU64,
    paths: Box<[PathSlot]>,
    generation: AtomicU64,
    /// Entries in the table (written under the write lock).
    len: AtomicUsize,
    /// Most entries kept.
    capacity: usize,
    /// Slots the table may grow to: `capacity` entries fill at most 4/5 of them.
    max_slots: usize,
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
            .field("capacity", &self.capacity)
            .field("slots", &self.slots.load(Ordering::Relaxed))
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
    /// A cached "the tunnel is gone" that has not expired.
    TunnelGone,
    /// Nothing usable: resolve, then [`PathCache::store`] with this generation.
    Miss { generation: u64 },
}

/// What one probe of the table found.
enum Probe {
    Found(Fields),
    Absent,
    /// A slot stayed mid-write for the whole spin.
    Busy,
}

/// Whether a load factor of `len / slots` is still allowed (at most 4/5).
#[inline]
fn fits(len: usize, slots: usize) -> bool {
    len * 5 <= slots * 4
}

impl PathCache {
    /// A cache of at most [`DEFAULT_CAPACITY`] destinations.
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A cache that keeps at most `capacity` destinations (at least 1, at most
    /// [`MAX_CAPACITY`]).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let random = std::collections::hash_map::RandomState::new();
        let mut seed = [0u64; 2];
        for (i, s) in seed.iter_mut().enumerate() {
            let mut h = random.build_hasher();
            h.write_usize(i);
            // An odd multiplier keeps every bit of the other factor.
            *s = h.finish() | 1;
        }
        let mut max_slots = MIN_SLOTS;
        while !fits(capacity, max_slots) {
            max_slots *= 2;
        }
        let segments: [AtomicPtr<Slot>; MAX_SEGMENTS] =
            std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut()));
        segments[0].store(allocate_segment(0), Ordering::Relaxed);
        PathCache {
            segments,
            slots: AtomicUsize::new(MIN_SLOTS),
            moves: AtomicU64::new(0),
            paths: (0..MAX_PATHS).map(|_| PathSlot::empty()).collect(),
            generation: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            capacity,
            max_slots,
            epoch: Instant::now(),
            seed,
            write: Mutex::new(Writer {
                paths: vec![None; MAX_PATHS],
                next_path_id: 1,
                evict_hand: 0,
                sweep_hand: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.write
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Slot `i`, which must lie below a `slots` value loaded (Acquire) by this thread.
    #[inline]
    fn slot(&self, i: usize) -> &Slot {
        let (k, offset) = locate(i);
        // Relaxed suffices: the segment pointer was stored before the `slots` value that
        // covers `i` was published with Release, and the caller loaded that with Acquire.
        let segment = self.segments[k].load(Ordering::Relaxed);
        debug_assert!(!segment.is_null() && offset < segment_len(k));
        // SAFETY: `i` is below a published slot count, so segment `k` is allocated, holds
        // `segment_len(k)` initialised slots and `offset` is inside it. Segments are freed
        // only in `Drop`, with `&mut self`, so the slot outlives `&self`. Only shared
        // references to slots are ever made, and slots are atomics.
        unsafe { &*segment.add(offset) }
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

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
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
        let key = Key::new(destination);
        let moves = self.moves.load(Ordering::Acquire);
        if moves & 1 == 0 {
            match self.probe(&key) {
                Probe::Found(fields) => return self.decode(&fields, generation),
                Probe::Busy => return Lookup::Miss { generation },
                Probe::Absent => {
                    // A miss is only believed if no entry moved meanwhile (growth or a
                    // backward shift can carry an entry past the probe).
                    fence(Ordering::Acquire);
                    if self.moves.load(Ordering::Relaxed) == moves {
                        return Lookup::Miss { generation };
                    }
                }
            }
        }
        // Entries were moving: ask again once the writer is done.
        let _writer = self.lock();
        match self.probe_locked(&key) {
            Some(fields) => self.decode(&fields, generation),
            None => Lookup::Miss { generation },
        }
    }

    /// Looks `key` up without the lock.
    #[inline]
    fn probe(&self, key: &Key) -> Probe {
        let slots = self.slots.load(Ordering::Acquire);
        let mask = slots - 1;
        let mut i = self.home(key, mask);
        // The table is never full, so an empty slot ends every probe; the bound only guards
        // against a table read while a writer races through it.
        for _ in 0..slots {
            let Some(fields) = self.slot(i).read() else {
                return Probe::Busy;
            };
            if fields.state() == EMPTY {
                return Probe::Absent;
            }
            if fields.holds(key) {
                return Probe::Found(fields);
            }
            i = (i + 1) & mask;
        }
        Probe::Absent
    }

    /// Where `key` is, under the write lock.
    fn find_locked(&self, key: &Key) -> Result<usize, usize> {
        let mask = self.slots.load(Ordering::Relaxed) - 1;
        let mut i = self.home(key, mask);
        loop {
            let fields = self.slot(i).peek();
            if fields.state() == EMPTY {
                return Err(i);
            }
            if fields.holds(key) {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn probe_locked(&self, key: &Key) -> Option<Fields> {
        self.find_locked(key).ok().map(|i| self.slot(i).peek())
    }

    /// What an entry found for a lookup in `generation` means.
    #[inline]
    fn decode(&self, fields: &Fields, generation: u64) -> Lookup {
        let miss = Lookup::Miss { generation };
        if fields.generation != generation as u32 {
            return miss;
        }
        match fields.state() {
            FOUND => match self.paths[fields.path_index()].read() {
                // The path slot may have been given to another path since the entry was
                // read (the entry is then gone too): only the path it named counts.
                Some(path) if path.id == fields.path_id() => Lookup::Hit(path.path()),
                _ => miss,
            },
            NO_ROUTE if self.now_ms() < fields.deadline_ms() => Lookup::NoRoute,
            TUNNEL_GONE if self.now_ms() < fields.deadline_ms() => Lookup::TunnelGone,
            _ => miss,
        }
    }

    /// Stores a resolution made in `generation`, unless a reset happened since. I/O failures
    /// of the lookup itself are not cached: the next datagram tries again.
    pub(crate) fn store(
        &self,
        destination: IpAddr,
        generation: u64,
        result: &Result<Path, ResolveError>,
    ) {
        let (key, v6) = encode_ip(destination);
        let mut fields = Fields {
            meta: if v6 { KEY_V6 } else { 0 },
            generation: generation as u32,
            key,
        };
        if let Err(ResolveError::Io(_)) = result {
            return;
        }
        let mut writer = self.lock();
        if self.generation() != generation {
            return;
        }
        match result {
            Ok(path) => {
                let Some((index, id)) = self.intern(&mut writer, path) else {
                    return;
                };
                fields.meta |=
                    FOUND | (index as u64) << PATH_INDEX_SHIFT | u64::from(id) << PATH_ID_SHIFT;
            }
            Err(e) => {
                let state = match e {
                    ResolveError::TunnelGone { .. } => TUNNEL_GONE,
                    _ => NO_ROUTE,
                };
                let deadline = self.now_ms() + NEGATIVE_TTL.as_millis() as u64;
                fields.meta |= state | deadline << DEADLINE_SHIFT;
            }
        }
        self.insert_locked(&mut writer, fields);
        self.sweep(&mut writer);
    }

    /// The path slot holding `path`, given one more reference; `None` if every slot holds a
    /// path still in use.
    fn intern(&self, writer: &mut Writer, path: &Path) -> Option<(usize, u32)> {
        let mut free = None;
        for (i, held) in writer.paths.iter_mut().enumerate() {
            match held {
                Some(held) if held.path == *path => {
                    held.refs += 1;
                    return Some((i, held.id));
                }
                Some(Interned { refs: 0, .. }) | None if free.is_none() => free = Some(i),
                _ => {}
            }
        }
        let i = free?;
        let id = writer.next_path_id;
        writer.next_path_id = writer.next_path_id.wrapping_add(1).max(1);
        self.paths[i].write(&PathFields::new(path, id));
        writer.paths[i] = Some(Interned {
            path: *path,
            id,
            refs: 1,
        });
        Some((i, id))
    }

    /// An entry leaves the table (replaced, forgotten, evicted, reset): its path loses a
    /// reference.
    fn release(writer: &mut Writer, fields: &Fields) {
        if fields.state() == FOUND {
            if let Some(held) = writer.paths[fields.path_index()].as_mut() {
                held.refs = held.refs.saturating_sub(1);
            }
        }
    }

    /// Inserts or replaces `fields` (its key). Only under the write lock.
    fn insert_locked(&self, writer: &mut Writer, fields: Fields) {
        let key = fields.key();
        let slot = match self.find_locked(&key) {
            Ok(i) => {
                Self::release(writer, &self.slot(i).peek());
                i
            }
            Err(_) => {
                if self.len() >= self.capacity {
                    self.evict_one(writer);
                }
                let len = self.len() + 1;
                let slots = self.slots.load(Ordering::Relaxed);
                if !fits(len, slots) && slots < self.max_slots {
                    self.grow();
                }
                self.len.store(len, Ordering::Relaxed);
                self.find_locked(&key).expect_err("the key is absent")
            }
        };
        self.slot(slot).write(&fields);
    }

    /// Doubles the table: one new segment, every entry rehashed in place. Only under the
    /// write lock.
    fn grow(&self) {
        let old = self.slots.load(Ordering::Relaxed);
        let (k, _) = locate(old);
        debug_assert!(self.segments[k].load(Ordering::Relaxed).is_null());
        self.segments[k].store(allocate_segment(k), Ordering::Relaxed);
        let entries: Vec<Fields> = (0..old)
            .map(|i| self.slot(i).peek())
            .filter(|f| f.state() != EMPTY)
            .collect();
        self.begin_moves();
        for i in 0..old {
            self.slot(i).write(&Fields::EMPTY);
        }
        // Release: the new segment is allocated and initialised before any reader can probe
        // it.
        self.slots.store(old * 2, Ordering::Release);
        let mask = old * 2 - 1;
        for fields in entries {
            let mut i = self.home(&fields.key(), mask);
            while self.slot(i).peek().state() != EMPTY {
                i = (i + 1) & mask;
            }
            self.slot(i).write(&fields);
        }
        self.end_moves();
    }

    fn begin_moves(&self) {
        let moves = self.moves.load(Ordering::Relaxed);
        self.moves.store(moves.wrapping_add(1), Ordering::Relaxed);
        // The odd count is visible before any entry moves (the seqlock's writer fence).
        fence(Ordering::Release);
    }

    fn end_moves(&self) {
        let moves = self.moves.load(Ordering::Relaxed);
        self.moves.store(moves.wrapping_add(1), Ordering::Release);
    }

    /// Deletes the entry in slot `hole`, shifting the rest of its chain back. Only under the
    /// write lock.
    fn remove_at(&self, writer: &mut Writer, mut hole: usize) {
        Self::release(writer, &self.slot(hole).peek());
        let mask = self.slots.load(Ordering::Relaxed) - 1;
        // Backward-shift deletion (Knuth's Algorithm R): move later entries of the chain into
        // the hole so no probe ever stops early at it. Readers that miss meanwhile see the
        // moves count change and look again under the lock.
        self.begin_moves();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let next = self.slot(j).peek();
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
                self.slot(hole).write(&next);
                hole = j;
            }
        }
        self.slot(hole).write(&Fields::EMPTY);
        self.end_moves();
        self.len.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether `fields` is a "no route" entry whose time is up.
    fn expired(&self, fields: &Fields, now_ms: u64) -> bool {
        matches!(fields.state(), NO_ROUTE | TUNNEL_GONE) && fields.deadline_ms() <= now_ms
    }

    /// Makes room for one entry: an expired "no route" entry near the hand if there is one,
    /// else the first entry at the hand. Only under the write lock, with the cache not empty.
    fn evict_one(&self, writer: &mut Writer) {
        let slots = self.slots.load(Ordering::Relaxed);
        let now = self.now_ms();
        let mut first = None;
        let mut seen = 0;
        let mut i = writer.evict_hand & (slots - 1);
        for _ in 0..slots {
            let fields = self.slot(i).peek();
            if fields.state() != EMPTY {
                if self.expired(&fields, now) {
                    first = Some(i);
                    break;
                }
                first.get_or_insert(i);
                seen += 1;
                if seen == EVICT_SCAN {
                    break;
                }
            }
            i = (i + 1) & (slots - 1);
        }
        let victim = first.expect("a full cache has an entry");
        writer.evict_hand = victim + 1;
        self.remove_at(writer, victim);
    }

    /// Deletes expired "no route" entries among the next few slots. Only under the write
    /// lock.
    fn sweep(&self, writer: &mut Writer) {
        let slots = self.slots.load(Ordering::Relaxed);
        let now = self.now_ms();
        for _ in 0..SWEEP_PER_STORE {
            let i = writer.sweep_hand & (slots - 1);
            // The shift brings the next entry of the chain into slot `i`: look at it too, so
            // the hand passes no expired entry.
            while self.expired(&self.slot(i).peek(), now) {
                self.remove_at(writer, i);
            }
            writer.sweep_hand = i + 1;
        }
    }

    /// Forgets one destination, for example after the kernel said its source is gone.
    pub(crate) fn forget(&self, destination: IpAddr) {
        let key = Key::new(destination);
        let mut writer = self.lock();
        if let Ok(i) = self.find_locked(&key) {
            self.remove_at(&mut writer, i);
        }
    }

    /// Forgets everything: the network changed.
    pub(crate) fn reset(&self) {
        let mut writer = self.lock();
        // First the generation: from here on no reader accepts an old entry, even one not yet
        // cleared below.
        self.generation.fetch_add(1, Ordering::AcqRel);
        for i in 0..self.slots.load(Ordering::Relaxed) {
            let slot = self.slot(i);
            if slot.peek().state() != EMPTY {
                slot.write(&Fields::EMPTY);
            }
        }
        for held in writer.paths.iter_mut().flatten() {
            held.refs = 0;
        }
        self.len.store(0, Ordering::Relaxed);
    }

    /// How many destinations are cached.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Bytes the cache holds: its segments and its path table.
    #[cfg(test)]
    fn footprint(&self) -> usize {
        let _writer = self.lock();
        let segments: usize = (0..MAX_SEGMENTS)
            .filter(|&k| !self.segments[k].load(Ordering::Relaxed).is_null())
            .map(segment_len)
            .sum();
        segments * std::mem::size_of::<Slot>() + MAX_PATHS * std::mem::size_of::<PathSlot>()
    }
}

/// A new segment `k` of empty slots, as a raw pointer to its first slot (freed in `Drop`).
fn allocate_segment(k: usize) -> *mut Slot {
    let slots: Box<[Slot]> = (0..segment_len(k)).map(|_| Slot::empty()).collect();
    Box::into_raw(slots).cast::<Slot>()
}

impl Drop for PathCache {
    fn drop(&mut self) {
        for (k, segment) in self.segments.iter_mut().enumerate() {
            let p = *segment.get_mut();
            if !p.is_null() {
                // SAFETY: `p` came from `Box::into_raw` of a boxed slice of `segment_len(k)`
                // slots in `allocate_segment`; `&mut self` means no reader is left.
                drop(unsafe {
                    Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, segment_len(k)))
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::atomic::AtomicBool;

    /// Iterations of the larger tests: Miri runs them too, thousands of times slower.
    const fn scaled(native: usize, miri: usize) -> usize {
        if cfg!(miri) {
            miri
        } else {
            native
        }
    }

    fn path(s: &str) -> Path {
        Path {
            source: s.parse().unwrap(),
            interface: Some(2),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v6(i: u32) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)))
    }

    /// A "no route" entry with the deadline `deadline_ms`, stored directly.
    fn store_no_route_until(cache: &PathCache, dst: IpAddr, deadline_ms: u64) {
        let (key, v6) = encode_ip(dst);
        let mut writer = cache.lock();
        cache.insert_locked(
            &mut writer,
            Fields {
                meta: NO_ROUTE | if v6 { KEY_V6 } else { 0 } | deadline_ms << DEADLINE_SHIFT,
                generation: cache.generation() as u32,
                key,
            },
        );
    }

    /// A "no route" entry whose deadline has passed, stored directly.
    fn store_expired(cache: &PathCache, dst: IpAddr) {
        store_no_route_until(cache, dst, 0);
    }

    #[test]
    fn slots_are_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        assert_eq!(std::mem::align_of::<Slot>(), 32);
        assert_eq!(std::mem::size_of::<PathSlot>(), 32);
    }

    #[test]
    fn segments_cover_the_table_without_gaps() {
        let mut next = 0;
        for k in 0..12 {
            for offset in 0..segment_len(k) {
                assert_eq!(locate(next), (k, offset), "slot {next}");
                next += 1;
            }
        }
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
        store_expired(&cache, ip("2001:db8::3"));
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
                v6(i)
            }
        };
        // 200 distinct paths: more than one path slot, fewer than the table's limit.
        let src = |i: u32| Path {
            source: IpAddr::V4(Ipv4Addr::from(i % 200)),
            interface: Some(i % 200),
        };
        let n = scaled(3000, 40) as u32;
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

    /// 100,000 destinations in a cache that may hold them all: the slots and the path table
    /// take at most 64 bytes per destination, and a reset keeps the memory (no reallocation).
    #[test]
    #[cfg_attr(
        miri,
        ignore = "100,000 inserts; the bound is arithmetic, not concurrency"
    )]
    fn a_hundred_thousand_destinations_take_at_most_64_bytes_each() {
        let cache = PathCache::with_capacity(1 << 17);
        let g = cache.generation();
        let n = 100_000u32;
        for i in 0..n {
            cache.store(v6(i), g, &Ok(path("2001:db8:1::2")));
        }
        assert_eq!(cache.len(), n as usize);
        let per_destination = cache.footprint() as f64 / f64::from(n);
        assert!(per_destination <= 64.0, "{per_destination} bytes each");
        let footprint = cache.footprint();
        cache.reset();
        assert_eq!(cache.footprint(), footprint);
        assert!(matches!(cache.lookup(v6(5)), Lookup::Miss { .. }));
    }

    /// A full cache evicts one entry per new destination: the count and the memory stop
    /// growing, the newest destination is always kept, and every entry still found is right.
    #[test]
    fn the_cache_is_bounded_and_keeps_what_it_stores_last() {
        let capacity = scaled(100, 20);
        let cache = PathCache::with_capacity(capacity);
        let g = cache.generation();
        let src = |i: u32| Path {
            source: IpAddr::V4(Ipv4Addr::from(i % 10)),
            interface: Some(i % 10),
        };
        let mut footprint_at_capacity = None;
        for i in 0..scaled(5000, 60) as u32 {
            cache.store(v6(i), g, &Ok(src(i)));
            assert!(cache.len() <= capacity);
            assert_eq!(cache.lookup(v6(i)), Lookup::Hit(src(i)), "{i} just stored");
            if cache.len() == capacity {
                let footprint = *footprint_at_capacity.get_or_insert(cache.footprint());
                assert_eq!(cache.footprint(), footprint, "grew past its capacity");
            }
        }
        assert_eq!(cache.len(), capacity);
        let mut found = 0;
        for i in 0..scaled(5000, 60) as u32 {
            match cache.lookup(v6(i)) {
                Lookup::Hit(p) => {
                    assert_eq!(p, src(i));
                    found += 1;
                }
                Lookup::Miss { .. } => {}
                Lookup::NoRoute | Lookup::TunnelGone => panic!("no route never stored"),
            }
        }
        assert_eq!(found, capacity);
    }

    /// Expired "no route" entries of destinations never asked for again are swept by later
    /// stores, even while the cache is far from full.
    #[test]
    fn expired_no_route_entries_are_swept_by_later_stores() {
        let cache = PathCache::new();
        let g = cache.generation();
        let expired = 50;
        for i in 0..expired {
            store_expired(&cache, v6(i));
        }
        assert_eq!(cache.len(), expired as usize);
        let live = |i: u32| v6(10_000 + i % 20);
        for i in 0..20 {
            cache.store(live(i), g, &Ok(path("2001:db8:1::2")));
        }
        // Each store sweeps two slots: one pass over the table is enough.
        let slots = cache.slots.load(Ordering::Relaxed);
        for i in 0..(slots / SWEEP_PER_STORE) as u32 + 1 {
            cache.store(live(i), g, &Ok(path("2001:db8:1::2")));
        }
        assert_eq!(cache.len(), 20, "expired entries left behind");
        // Unexpired "no route" entries stay. (An hour from now, not the usual second: Miri's
        // clock advances with every step it interprets.)
        store_no_route_until(&cache, v6(7), cache.now_ms() + 3_600_000);
        for i in 0..slots as u32 {
            cache.store(live(i), g, &Ok(path("2001:db8:1::2")));
        }
        assert_eq!(cache.lookup(v6(7)), Lookup::NoRoute);
    }

    /// At capacity, eviction takes an expired "no route" entry before any live one.
    #[test]
    fn eviction_prefers_expired_no_route_entries() {
        for trial in 0..20u32 {
            let cache = PathCache::with_capacity(EVICT_SCAN);
            let g = cache.generation();
            let live: Vec<IpAddr> = (1..EVICT_SCAN as u32).map(|i| v6(trial << 8 | i)).collect();
            for d in &live {
                cache.store(*d, g, &Ok(path("2001:db8:1::2")));
            }
            store_expired(&cache, v6(trial << 8));
            assert_eq!(cache.len(), EVICT_SCAN);
            cache.store(v6(trial << 8 | 0xff), g, &Ok(path("2001:db8:1::3")));
            for d in &live {
                assert!(matches!(cache.lookup(*d), Lookup::Hit(_)), "{d} evicted");
            }
        }
    }

    /// Path slots are reused once no entry names them; when every slot holds a path still in
    /// use, a new path is not cached (a miss next time), and the paths in use stay right.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "1,000 stores, each scanning the 256 path slots: single-threaded arithmetic \
                  (two thirds of the Miri run); the path reads are covered by the other tests"
    )]
    fn path_slots_are_recycled_and_their_limit_only_costs_misses() {
        let cache = PathCache::new();
        let g = cache.generation();
        let src = |i: u32| Path {
            source: IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i)),
            interface: Some(i),
        };
        // Three times as many paths as slots, each forgotten after use.
        for i in 0..3 * MAX_PATHS as u32 {
            cache.store(v6(i), g, &Ok(src(i)));
            assert_eq!(cache.lookup(v6(i)), Lookup::Hit(src(i)));
            cache.forget(v6(i));
        }
        for i in 0..MAX_PATHS as u32 {
            cache.store(v6(i), g, &Ok(src(i)));
        }
        cache.store(v6(9999), g, &Ok(src(9999)));
        assert!(matches!(cache.lookup(v6(9999)), Lookup::Miss { .. }));
        for i in 0..MAX_PATHS as u32 {
            assert_eq!(cache.lookup(v6(i)), Lookup::Hit(src(i)), "{i}");
        }
        // A destination that shares a path in use is cached.
        cache.store(v6(10_000), g, &Ok(src(3)));
        assert_eq!(cache.lookup(v6(10_000)), Lookup::Hit(src(3)));
    }

    /// Readers racing resets, inserts and growth: a hit is never an entry stored before the
    /// generation the reader saw before its lookup (a stale network), and never torn.
    #[test]
    fn concurrent_readers_never_see_a_stale_generation_or_a_torn_entry() {
        let cache = PathCache::new();
        let stop = AtomicBool::new(false);
        let dsts: Vec<IpAddr> = (0..64u32).map(v6).collect();
        // The path encodes its generation twice (source and interface): a torn read would
        // show two different numbers.
        let path_of = |g: u64| Path {
            source: IpAddr::V6(Ipv6Addr::from(u128::from(g) | 0x2001_0db8_u128 << 96)),
            interface: Some(g as u32),
        };
        let hits = AtomicU64::new(0);
        let (min_rounds, min_hits) = (scaled(2000, 3), scaled(10_000, 5) as u64);
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
            while round < min_rounds
                || (hits.load(Ordering::Relaxed) < min_hits
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

    /// A lookup that starts while entries are moving (here: one entry taken out of its slot
    /// mid-move) waits for the writer and finds the entry where the move put it, instead of
    /// reporting the miss the half-moved table shows.
    #[test]
    fn a_lookup_during_a_move_waits_for_it_instead_of_missing() {
        let cache = PathCache::new();
        let g = cache.generation();
        cache.store(v6(1), g, &Ok(path("2001:db8:1::2")));
        let at = cache.find_locked(&Key::new(v6(1))).unwrap();
        let entry = cache.slot(at).peek();
        let writer = cache.lock();
        cache.begin_moves();
        cache.slot(at).write(&Fields::EMPTY);
        std::thread::scope(|s| {
            let reader = s.spawn(|| cache.lookup(v6(1)));
            // The reader cannot finish while the move is in progress (it waits for the lock);
            // give it time to get there, then complete the move.
            let waited = Instant::now();
            while waited.elapsed() < Duration::from_millis(scaled(50, 5) as u64) {
                assert!(
                    !reader.is_finished(),
                    "the lookup did not wait for the move"
                );
                std::thread::yield_now();
            }
            cache.slot(at).write(&entry);
            cache.end_moves();
            drop(writer);
            assert_eq!(reader.join().unwrap(), Lookup::Hit(path("2001:db8:1::2")));
        });
    }

    /// Readers racing growth from empty, evictions and forgets: a destination the writer has
    /// stored (and not forgotten or had evicted) is found, not missed because entries moved
    /// under the reader, and every hit names its own destination's path.
    #[test]
    fn moving_entries_never_hide_a_cached_destination() {
        let n = scaled(4096, 20) as u32;
        let cache = PathCache::with_capacity(n as usize);
        let g = cache.generation();
        // Destinations below `stored` are in the cache; `stored` only grows.
        let stored = AtomicUsize::new(0);
        let src = |i: u32| Path {
            source: IpAddr::V4(Ipv4Addr::from(i % 100)),
            interface: Some(i % 100),
        };
        let (lookups, false_misses) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for r in 0..2u32 {
                let (cache, stored, lookups, false_misses) =
                    (&cache, &stored, &lookups, &false_misses);
                s.spawn(move || {
                    let mut x = 0x9e37_79b9u32 ^ r;
                    loop {
                        let upto = stored.load(Ordering::Acquire) as u32;
                        if upto == n {
                            break;
                        }
                        if upto == 0 {
                            std::hint::spin_loop();
                            continue;
                        }
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        let i = x % upto;
                        lookups.fetch_add(1, Ordering::Relaxed);
                        match cache.lookup(v6(i)) {
                            Lookup::Hit(p) => assert_eq!(p, src(i), "{i}: another's path"),
                            Lookup::Miss { .. } => {
                                false_misses.fetch_add(1, Ordering::Relaxed);
                            }
                            Lookup::NoRoute | Lookup::TunnelGone => panic!("no route never stored"),
                        }
                    }
                });
            }
            for i in 0..n {
                cache.store(v6(i), g, &Ok(src(i)));
                // A forgotten destination the readers never ask for: it shifts the chains
                // the readers probe.
                cache.store(v6(n + i), g, &Ok(src(i)));
                cache.forget(v6(n + i));
                stored.store(i as usize + 1, Ordering::Release);
            }
        });
        let (lookups, misses) = (lookups.into_inner(), false_misses.into_inner());
        // A reader may still miss when a slot stays mid-write through its whole spin (its
        // writer was preempted): rare, never systematic.
        assert!(
            misses * 100 <= lookups + 100,
            "{misses} of {lookups} lookups missed a cached destination"
        );
    }
}
