//! Micro benchmarks of the source cache, through the public per-send lookup
//! (`SocketFactory::path_for`), next to `DashMap<IpAddr, IpAddr>` in the same run.
//!
//! `cargo bench -p loopguard --bench cache`. `loopguard bench` measures the same (and more)
//! with interleaved rounds and ratios; these are for profiling one case in isolation.

#[cfg(target_os = "linux")]
mod linux {
    use std::hint::black_box;
    use std::io;
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};

    use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
    use dashmap::DashMap;
    use loopguard::{Path, ProtectionError, ResolveError, SocketFactory, Strategy};

    /// Resolves every destination to one source at once, or fails every lookup (uncached).
    #[derive(Clone, Copy)]
    struct Fixed {
        fail: bool,
    }

    const SOURCE: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2));

    impl Strategy for Fixed {
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
                source: SOURCE,
                interface: Some(2),
            })
        }
    }

    /// Destination `i` in 2001:db8::/32 (documentation addresses, never sent to).
    fn destination(i: usize) -> SocketAddr {
        let x = (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15) & 0xffff_ffff_ffff;
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | x << 16 | i as u128)),
            4433,
        )
    }

    /// A fixed pseudo-random walk over `n` destinations, 4096 steps or more (a power of two).
    fn order(n: usize) -> Vec<usize> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n.max(4096).next_power_of_two())
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % n as u64) as usize
            })
            .collect()
    }

    fn hits(c: &mut Criterion) {
        let mut group = c.benchmark_group("hit");
        group.throughput(Throughput::Elements(1));
        for n in [1usize, 16, 1024, 65_536] {
            let factory = SocketFactory::new(Fixed { fail: false });
            let map = DashMap::new();
            let dsts: Vec<SocketAddr> = (0..n).map(destination).collect();
            for d in &dsts {
                factory.path_for(*d).unwrap();
                map.insert(d.ip(), SOURCE);
            }
            let walk = order(n);
            let mask = walk.len() - 1;
            group.bench_function(BenchmarkId::new("loopguard", n), |b| {
                let mut k = 0;
                b.iter(|| {
                    k = (k + 1) & mask;
                    black_box(factory.path_for(black_box(dsts[walk[k]])))
                })
            });
            group.bench_function(BenchmarkId::new("dashmap", n), |b| {
                let mut k = 0;
                b.iter(|| {
                    k = (k + 1) & mask;
                    black_box(map.get(&black_box(dsts[walk[k]]).ip()).map(|v| *v))
                })
            });
        }
        // 32 datagrams in a row to one destination.
        let factory = SocketFactory::new(Fixed { fail: false });
        let dst = destination(7);
        factory.path_for(dst).unwrap();
        group.bench_function("loopguard_burst", |b| {
            b.iter(|| black_box(factory.path_for(black_box(dst))))
        });
        group.finish();
    }

    fn misses_and_inserts(c: &mut Criterion) {
        let mut group = c.benchmark_group("miss");
        let failing = SocketFactory::new(Fixed { fail: true });
        let dst = destination(3);
        group.bench_function("loopguard_resolver_fails", |b| {
            b.iter(|| black_box(failing.path_for(black_box(dst)).is_err()))
        });
        let empty: DashMap<IpAddr, IpAddr> = DashMap::new();
        group.bench_function("dashmap", |b| {
            b.iter(|| black_box(empty.get(&black_box(dst).ip()).is_none()))
        });
        group.finish();

        let mut group = c.benchmark_group("insert_1024");
        group.throughput(Throughput::Elements(1024));
        let dsts: Vec<SocketAddr> = (0..1024).map(destination).collect();
        group.bench_function("loopguard", |b| {
            b.iter_with_large_drop(|| {
                let factory = SocketFactory::new(Fixed { fail: false });
                for d in &dsts {
                    black_box(factory.path_for(*d).is_ok());
                }
                factory
            })
        });
        group.bench_function("dashmap", |b| {
            b.iter_with_large_drop(|| {
                let map = DashMap::new();
                for d in &dsts {
                    if map.get(&d.ip()).is_none() {
                        map.insert(d.ip(), SOURCE);
                    }
                }
                map
            })
        });
        group.finish();
    }

    criterion_group!(benches, hits, misses_and_inserts);
}

#[cfg(target_os = "linux")]
criterion::criterion_main!(linux::benches);

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the cache benchmarks run on Linux (criterion is a Linux-only dev-dependency)");
}
