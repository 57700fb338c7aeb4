//! The source cache against `DashMap<IpAddr, IpAddr>`, through the library's public lookup
//! (`SocketFactory::path_for`, the call a socket makes per send), interleaved round by round.

use std::hint::black_box;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Barrier;
use std::time::Instant;

use dashmap::DashMap;
use loopguard::{Path, ProtectionError, ResolveError, SocketFactory, Strategy};
use serde_json::{json, Value};

use super::stats::{median, round, Ratio};

/// A strategy that resolves every destination at once to one source: the cache's cost alone.
#[derive(Clone, Copy, Debug)]
pub struct FixedSource {
    /// The source every destination resolves to.
    pub source: IpAddr,
    /// Resolve nothing: every lookup fails with an (uncached) I/O error, so each call is a miss.
    pub fail: bool,
}

impl Strategy for FixedSource {
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        Ok(())
    }

    fn pins_source(&self) -> bool {
        true
    }

    fn resolve(&self, _destination: IpAddr) -> Result<Path, ResolveError> {
        if self.fail {
            return Err(ResolveError::Io(io::ErrorKind::Other.into()));
        }
        Ok(Path {
            source: self.source,
            interface: Some(2),
        })
    }
}

const SOURCE: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2));
/// Datagrams in a burst to one destination.
pub const BURST: usize = 32;
/// Cache sizes measured.
pub const SIZES: [usize; 4] = [1, 16, 1024, 65_536];

/// Destination `i`: spread over 2001:db8::/32 (documentation addresses; never sent to).
fn destination(i: usize) -> SocketAddr {
    let x = (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15) & 0xffff_ffff_ffff;
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | x << 16 | i as u128)),
        4433,
    )
}

/// A small deterministic generator (xorshift), so every run measures the same pattern.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// How a thread walks the destinations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// A random destination per lookup.
    Random,
    /// [`BURST`] lookups in a row to one random destination.
    Burst,
}

/// One configuration: cache size, pattern, reading threads.
#[derive(Clone, Copy, Debug)]
struct Config {
    size: usize,
    pattern: Pattern,
    threads: usize,
}

/// The two structures under test, filled with the same destinations.
struct Subjects {
    factory: SocketFactory<FixedSource>,
    dashmap: DashMap<IpAddr, IpAddr>,
    dsts: Vec<SocketAddr>,
    /// Random indices into `dsts`, walked in order (one per lookup, or one per burst).
    order: Vec<u32>,
}

impl Subjects {
    fn new(size: usize) -> Subjects {
        let factory = SocketFactory::new(FixedSource {
            source: SOURCE,
            fail: false,
        });
        let dashmap = DashMap::new();
        let dsts: Vec<SocketAddr> = (0..size).map(destination).collect();
        for d in &dsts {
            factory.path_for(*d).expect("the fixed strategy resolves");
            dashmap.insert(d.ip(), SOURCE);
        }
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ size as u64);
        // A power of two, so the walk wraps with a mask, not a division.
        let order = (0..size.max(4096).next_power_of_two())
            .map(|_| (rng.next() % size as u64) as u32)
            .collect();
        Subjects {
            factory,
            dashmap,
            dsts,
            order,
        }
    }
}

/// Which structure a measurement reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Loopguard,
    DashMap,
}

/// `lookups` lookups by one thread, starting at `offset` in the order; nanoseconds each.
fn walk(s: &Subjects, which: Which, pattern: Pattern, lookups: usize, offset: usize) -> f64 {
    let per_step = match pattern {
        Pattern::Random => 1,
        Pattern::Burst => BURST,
    };
    let steps = lookups / per_step;
    let mask = s.order.len() - 1;
    // Each result feeds a running checksum instead of a store per lookup: the loop measures
    // the lookup, not the benchmark's own memory traffic.
    let mut checksum = 0u32;
    let start = Instant::now();
    match which {
        Which::Loopguard => {
            for k in 0..steps {
                let dst = s.dsts[s.order[(offset + k) & mask] as usize];
                for _ in 0..per_step {
                    if let Ok(Some(path)) = s.factory.path_for(dst) {
                        checksum ^= path.interface.unwrap_or(1);
                    }
                }
            }
        }
        Which::DashMap => {
            for k in 0..steps {
                let dst = s.dsts[s.order[(offset + k) & mask] as usize];
                for _ in 0..per_step {
                    if let Some(src) = s.dashmap.get(&dst.ip()) {
                        checksum ^= u32::from(src.is_ipv6());
                    }
                }
            }
        }
    }
    black_box(checksum);
    start.elapsed().as_nanos() as f64 / (steps * per_step) as f64
}

/// Nanoseconds per lookup with `threads` threads reading at once (each on its own part of the
/// order), averaged over the threads.
fn measure(s: &Subjects, which: Which, c: Config, lookups: usize) -> f64 {
    if c.threads == 1 {
        return walk(s, which, c.pattern, lookups, 0);
    }
    let barrier = Barrier::new(c.threads);
    let per_thread: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..c.threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    walk(s, which, c.pattern, lookups, t * s.order.len() / c.threads)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    per_thread.iter().sum::<f64>() / per_thread.len() as f64
}

/// Results of one configuration over all rounds.
struct Series {
    config: Config,
    loopguard: Vec<f64>,
    dashmap: Vec<f64>,
}

impl Series {
    fn json(&self) -> Value {
        let r = Ratio::of(&self.loopguard, &self.dashmap);
        json!({
            "destinations": self.config.size,
            "threads": self.config.threads,
            "pattern": match self.config.pattern { Pattern::Random => "random", Pattern::Burst => "burst" },
            "loopguard_ns": round(median(&self.loopguard), 2),
            "dashmap_ns": round(median(&self.dashmap), 2),
            "ratio": round(r.median, 3),
            "ratio_spread": r.spread(),
        })
    }
}

/// Hit costs for every size, pattern and thread count, loopguard and DashMap interleaved.
pub fn hits(rounds: usize, lookups: usize) -> Value {
    let mut series = Vec::new();
    for size in SIZES {
        let subjects = Subjects::new(size);
        let configs: Vec<Config> = [
            (Pattern::Random, 1),
            (Pattern::Random, 2),
            (Pattern::Burst, 1),
            (Pattern::Burst, 2),
        ]
        .into_iter()
        .map(|(pattern, threads)| Config {
            size,
            pattern,
            threads,
        })
        .collect();
        let mut results: Vec<Series> = configs
            .iter()
            .map(|&config| Series {
                config,
                loopguard: Vec::new(),
                dashmap: Vec::new(),
            })
            .collect();
        // Warm up both structures (caches, branch predictors, page faults).
        for c in &configs {
            measure(&subjects, Which::Loopguard, *c, lookups / 4);
            measure(&subjects, Which::DashMap, *c, lookups / 4);
        }
        for round in 0..rounds {
            for s in results.iter_mut() {
                // Alternate which goes first, so neither always runs on a warmer machine.
                let order = if round % 2 == 0 {
                    [Which::Loopguard, Which::DashMap]
                } else {
                    [Which::DashMap, Which::Loopguard]
                };
                for which in order {
                    let ns = measure(&subjects, which, s.config, lookups);
                    match which {
                        Which::Loopguard => s.loopguard.push(ns),
                        Which::DashMap => s.dashmap.push(ns),
                    }
                }
            }
        }
        series.extend(results);
    }
    let pick = |size: usize, pattern: Pattern, threads: usize| {
        series
            .iter()
            .find(|s| {
                s.config.size == size && s.config.pattern == pattern && s.config.threads == threads
            })
            .expect("configuration measured")
    };
    let s16 = pick(16, Pattern::Random, 1);
    let s16_2 = pick(16, Pattern::Random, 2);
    let b16 = pick(16, Pattern::Burst, 1);
    let big = pick(65_536, Pattern::Random, 1);
    json!({
        "loopguard": round(median(&s16.loopguard), 2),
        "dashmap": round(median(&s16.dashmap), 2),
        "ratio": round(Ratio::of(&s16.loopguard, &s16.dashmap).median, 3),
        "ratio_spread": Ratio::of(&s16.loopguard, &s16.dashmap).spread(),
        "loopguard_2t": round(median(&s16_2.loopguard), 2),
        "dashmap_2t": round(median(&s16_2.dashmap), 2),
        "ratio_2t": round(Ratio::of(&s16_2.loopguard, &s16_2.dashmap).median, 3),
        "ratio_2t_spread": Ratio::of(&s16_2.loopguard, &s16_2.dashmap).spread(),
        "loopguard_burst": round(median(&b16.loopguard), 2),
        "dashmap_burst": round(median(&b16.dashmap), 2),
        // The send path resolves once per send call: a burst sent as one GSO batch of BURST
        // datagrams costs one lookup.
        "loopguard_burst_gso_per_datagram": round(median(&b16.loopguard) / BURST as f64, 3),
        "loopguard_65536_over_16": round(Ratio::of(&big.loopguard, &s16.loopguard).median, 3),
        "configurations": series.iter().map(Series::json).collect::<Vec<_>>(),
    })
}

/// The cost of a miss (lookup, a resolver that fails at once, nothing stored) and of an
/// insert (miss, resolve, store into a cache growing from empty to `INSERTS` entries),
/// against the same on a DashMap (`get` then `insert`). Nanoseconds, medians of the rounds.
pub fn misses_and_inserts(rounds: usize) -> (Value, Value) {
    const INSERTS: usize = 65_536;
    let dsts: Vec<SocketAddr> = (0..INSERTS).map(destination).collect();
    let failing = SocketFactory::new(FixedSource {
        source: SOURCE,
        fail: true,
    });
    let empty: DashMap<IpAddr, IpAddr> = DashMap::new();
    let (mut miss_lg, mut miss_dm, mut ins_lg, mut ins_dm) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let start = Instant::now();
        for d in &dsts {
            black_box(failing.path_for(black_box(*d)).is_err());
        }
        miss_lg.push(start.elapsed().as_nanos() as f64 / INSERTS as f64);
        let start = Instant::now();
        for d in &dsts {
            black_box(empty.get(&black_box(*d).ip()).is_none());
        }
        miss_dm.push(start.elapsed().as_nanos() as f64 / INSERTS as f64);

        let factory = SocketFactory::new(FixedSource {
            source: SOURCE,
            fail: false,
        });
        let start = Instant::now();
        for d in &dsts {
            black_box(factory.path_for(black_box(*d)).is_ok());
        }
        ins_lg.push(start.elapsed().as_nanos() as f64 / INSERTS as f64);
        drop(factory);
        let map: DashMap<IpAddr, IpAddr> = DashMap::new();
        let start = Instant::now();
        for d in &dsts {
            let ip = black_box(*d).ip();
            if map.get(&ip).is_none() {
                map.insert(ip, SOURCE);
            }
        }
        ins_dm.push(start.elapsed().as_nanos() as f64 / INSERTS as f64);
        drop(map);
    }
    (
        json!({
            "loopguard": round(median(&miss_lg), 2),
            "dashmap": round(median(&miss_dm), 2),
            "note": "loopguard: lookup, a resolver failing at once, nothing stored; dashmap: get",
        }),
        json!({
            "loopguard": round(median(&ins_lg), 2),
            "dashmap": round(median(&ins_dm), 2),
            "destinations": INSERTS,
            "note": "miss, resolve and store into a cache growing from empty; dashmap: get, then insert",
        }),
    )
}

/// Fills a cache (or a DashMap) with `n` destinations: the memory child's work.
pub fn fill(which: &str, n: usize) -> Box<dyn std::any::Any> {
    let dsts = (0..n).map(destination);
    if which == "dashmap" {
        let map: DashMap<IpAddr, IpAddr> = DashMap::new();
        for d in dsts {
            map.insert(d.ip(), SOURCE);
        }
        Box::new(map)
    } else {
        // A cache that may hold all `n`: the memory of `n` entries, not of the default bound.
        let factory = SocketFactory::with_path_capacity(
            FixedSource {
                source: SOURCE,
                fail: false,
            },
            n,
        );
        for d in dsts {
            factory.path_for(d).expect("the fixed strategy resolves");
        }
        Box::new(factory)
    }
}
