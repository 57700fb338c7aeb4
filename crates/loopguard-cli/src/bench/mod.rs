//! `loopguard bench [--quick] [--json]`: how much loopguard costs, measured against baselines
//! in the same run.
//!
//! These machines are noisy (absolute rates swing by about 20% from one round to the next),
//! so every comparison runs its variants interleaved, round after round, and reports the
//! median of the per-round ratios to the baseline with their spread (smallest and largest).
//! Nothing here passes or fails on a number: the figures are printed, BENCHMARKS.md says what
//! they mean.
//!
//! What needs root (network namespaces, socket marks) is skipped without it, and said so;
//! the JSON then holds `null` for those figures.

mod cache;
mod readers;
mod stats;
mod storm;
mod tripwire;
#[cfg(target_os = "linux")]
mod udp;

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use stats::round;

/// Arguments of `loopguard bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Fewer and shorter rounds: done within 30 seconds
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object instead of tables
    #[arg(long)]
    pub json: bool,
    /// Internal: fill a cache of this kind (loopguard or dashmap) and print its memory use
    #[arg(long, hide = true, value_name = "KIND")]
    pub memory_child: Option<String>,
}

/// Destinations cached for the memory figures.
const MEMORY_DESTINATIONS: usize = 100_000;

/// Runs the benchmarks (on a blocking thread: they are CPU-bound and make their own runtimes).
pub async fn run(args: BenchArgs) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || run_blocking(&args)).await?
}

fn run_blocking(args: &BenchArgs) -> anyhow::Result<bool> {
    if let Some(kind) = &args.memory_child {
        return memory_child(kind);
    }
    let started = Instant::now();
    let (rounds, window, lookups) = if args.quick {
        (5, Duration::from_millis(100), 200_000)
    } else {
        (21, Duration::from_millis(150), 500_000)
    };
    let mut notes: Vec<String> = Vec::new();
    // An unoptimised build measures nothing worth reading: shorten its work (the smoke test
    // runs one) and say so.
    let lookups = if cfg!(debug_assertions) {
        notes.push("debug build: the figures are not representative; use --release".into());
        lookups / 20
    } else {
        lookups
    };
    let mut report = json!({
        "machine": machine(),
        "mode": if args.quick { "quick" } else { "full" },
        "rounds": rounds,
    });
    let say = |what: &str| {
        if !args.json {
            eprintln!("bench: {what} ({:.1} s)", started.elapsed().as_secs_f64());
        }
    };

    say("source cache hits");
    report["cache_hit_ns"] = cache::hits(rounds, lookups);
    say("source cache misses and inserts");
    let (miss, insert) = cache::misses_and_inserts(rounds);
    report["cache_miss_ns"] = miss;
    report["cache_insert_ns"] = insert;
    say("loop tripwire");
    report["tripwire_ns"] = tripwire::run(rounds, lookups);
    say("route print reader, 50 MB");
    report["route_print_reader"] = readers::run(rounds.min(5));
    say("miss storm");
    report["miss_storm"] = storm::run(rounds).unwrap_or_else(|e| {
        notes.push(format!("miss storm: {e:#}"));
        json!({"resolutions_max": null, "wake_during_resolution": {"worst_us": null},
               "wake_resolved_storm": {"worst_us": null}})
    });
    say("memory");
    report["memory"] = memory().unwrap_or_else(|e| {
        notes.push(format!("memory: {e:#}"));
        json!({"loopguard_bytes_per_destination": null, "loopguard_peak_rss_bytes": null})
    });

    let udp_null = json!({
        "baseline_pps": null, "explicit_src_ratio": null, "resolved_src_ratio": null,
        "mark_ratio": null, "pin_ratio": null,
    });
    let recv_null = json!({"baseline_pps": null, "loopguard_ratio": null, "mark_ratio": null});
    let cold_null = json!({"netlink": null, "ip_process": null});
    report["privileged"] = json!(false);
    #[cfg(target_os = "linux")]
    {
        match udp::privileges() {
            Ok(()) => {
                report["privileged"] = json!(true);
                say("UDP throughput across a veth pair (namespaces lg-bench-*)");
                let pair = udp::Pair::build()?;
                report["udp_send"] = udp::send(&pair, rounds, window)?;
                report["udp_recv"] = udp::recv(&pair, rounds, window)?;
                say("cold route resolution");
                report["cold_resolution_us"] =
                    udp::cold_resolution(Some(&pair.a), rounds, args.quick)?;
                drop(pair);
            }
            Err(why) => {
                notes.push(format!(
                    "UDP throughput skipped: {why} (it runs between two network namespaces)"
                ));
                report["udp_send"] = udp_null;
                report["udp_recv"] = recv_null;
                say("cold route resolution (current namespace, loopback)");
                report["cold_resolution_us"] = udp::cold_resolution(None, rounds, args.quick)
                    .unwrap_or_else(|e| {
                        notes.push(format!("cold resolution: {e:#}"));
                        cold_null
                    });
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = window;
        notes.push("UDP throughput and cold resolution run on Linux only".into());
        report["udp_send"] = udp_null;
        report["udp_recv"] = recv_null;
        report["cold_resolution_us"] = cold_null;
    }
    report["seconds"] = round(started.elapsed().as_secs_f64(), 1);
    report["machine"]["loadavg_end"] = json!(loadavg());
    report["notes"] = json!(notes);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(true)
}

/// CPU count, CPU model and kernel of this machine.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| std::env::consts::OS.to_owned());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": model,
        "kernel": kernel,
        // Other work on the machine skews absolute figures (ratios less so): say how busy it was.
        "loadavg_start": loadavg(),
    })
}

/// The 1-minute load average, when the system reports one.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Memory of 100,000 cached destinations, each kind measured in a child process of its own so
/// nothing else of the run counts.
fn memory() -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let mut out = json!({"destinations": MEMORY_DESTINATIONS});
    for kind in ["loopguard", "dashmap"] {
        let child = std::process::Command::new(&exe)
            .args(["bench", "--memory-child", kind])
            .output()?;
        anyhow::ensure!(
            child.status.success(),
            "the memory child failed: {}",
            String::from_utf8_lossy(&child.stderr)
        );
        let v: Value = serde_json::from_slice(&child.stdout)?;
        out[format!("{kind}_bytes_per_destination")] = v["bytes_per_destination"].clone();
        out[format!("{kind}_peak_rss_bytes")] = v["peak_rss_bytes"].clone();
    }
    Ok(out)
}

/// A field of /proc/self/status in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn memory_child(kind: &str) -> anyhow::Result<bool> {
    anyhow::ensure!(
        matches!(kind, "loopguard" | "dashmap"),
        "unknown cache kind {kind}"
    );
    let before = status_bytes("VmRSS:");
    let cache = cache::fill(kind, MEMORY_DESTINATIONS);
    let after = status_bytes("VmRSS:");
    let peak = status_bytes("VmHWM:");
    let per = match (before, after) {
        (Some(b), Some(a)) => json!(a.saturating_sub(b) as f64 / MEMORY_DESTINATIONS as f64),
        _ => Value::Null,
    };
    outln!(
        "{}",
        json!({"bytes_per_destination": per, "peak_rss_bytes": peak})
    );
    drop(cache);
    Ok(true)
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 1e5 => format!("{x:.0}"),
        Some(x) => format!("{x}"),
        None => "n/a".into(),
    }
}

/// The human-readable report.
fn table(r: &Value) -> String {
    let mut out = String::new();
    let m = &r["machine"];
    out.push_str(&format!(
        "loopguard bench ({}; {} rounds) on {} CPU(s), {}, Linux {}; load average {} at the start, {} at the end\n\n",
        r["mode"].as_str().unwrap_or(""),
        r["rounds"],
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        num(&m["loadavg_start"]),
        num(&m["loadavg_end"]),
    ));
    let u = &r["udp_send"];
    out.push_str(&format!(
        "UDP send, {}-byte datagrams in GSO batches of {}, veth between namespaces\n",
        u["payload_bytes"].as_u64().unwrap_or(1200),
        num(&u["gso_segments"]),
    ));
    out.push_str(&format!(
        "  (a) plain quinn-udp          {:>12} datagrams/s  {} Gbit/s\n",
        num(&u["baseline_pps"]),
        num(&u["baseline_gbps"])
    ));
    for (label, key) in [
        ("(b) loopguard, explicit src", "explicit_src"),
        ("(c) loopguard, resolved src", "resolved_src"),
        ("(d) loopguard, mark        ", "mark"),
        ("(e) loopguard, pin strategy", "pin"),
        ("(f) loopguard, try_send    ", "try_send"),
    ] {
        out.push_str(&format!(
            "  {label}  ratio {} spread {}; per sender CPU-second {} spread {}\n",
            num(&u[format!("{key}_ratio")]),
            u[format!("{key}_spread")],
            num(&u[format!("{key}_cpu_ratio")]),
            u[format!("{key}_cpu_spread")]
        ));
    }
    out.push_str(&format!(
        "  delivered (received/sent): {}\n\n",
        u["delivered"]
    ));
    let v = &r["udp_recv"];
    out.push_str(&format!(
        "UDP receive with GRO ({} datagrams per buffer)\n  (a) plain quinn-udp          {:>12} datagrams/s  {} Gbit/s\n",
        num(&v["datagrams_per_buffer"]),
        num(&v["baseline_pps"]),
        num(&v["baseline_gbps"])
    ));
    for (label, key) in [
        ("loopguard socket           ", "loopguard"),
        ("loopguard, mark            ", "mark"),
    ] {
        out.push_str(&format!(
            "  {label}  ratio {} spread {}; per receiver CPU-second {} spread {}\n",
            num(&v[format!("{key}_ratio")]),
            v[format!("{key}_spread")],
            num(&v[format!("{key}_cpu_ratio")]),
            v[format!("{key}_cpu_spread")]
        ));
    }
    let c = &r["cache_hit_ns"];
    out.push_str("\nSource cache hit, ns per lookup (SocketFactory::path_for vs DashMap::get)\n");
    out.push_str("  destinations threads pattern   loopguard   dashmap   ratio (spread)\n");
    if let Some(rows) = c["configurations"].as_array() {
        for row in rows {
            out.push_str(&format!(
                "  {:>12} {:>7} {:<8} {:>10} {:>9}   {} {}\n",
                row["destinations"],
                row["threads"],
                row["pattern"].as_str().unwrap_or(""),
                num(&row["loopguard_ns"]),
                num(&row["dashmap_ns"]),
                num(&row["ratio"]),
                row["ratio_spread"],
            ));
        }
    }
    out.push_str(&format!(
        "  65,536 destinations cost {}x of 16 (random, one thread)\n",
        num(&c["loopguard_65536_over_16"])
    ));
    let (miss, ins) = (&r["cache_miss_ns"], &r["cache_insert_ns"]);
    out.push_str(&format!(
        "  miss: loopguard {} ns, dashmap {} ns; insert: loopguard {} ns, dashmap {} ns\n",
        num(&miss["loopguard"]),
        num(&miss["dashmap"]),
        num(&ins["loopguard"]),
        num(&ins["dashmap"])
    ));
    let t = &r["tripwire_ns"];
    out.push_str(&format!(
        "\nLoop tripwire (LoopTripwire::check, {} watched sockets): {} ns/packet not a loop, \
         {} ns/packet for a loop; false positives {}, loops missed {}\n",
        num(&t["watched_sockets"]),
        num(&t["not_loop"]),
        num(&t["loop"]),
        num(&t["false_positives"]),
        num(&t["loops_missed"]),
    ));
    let rp = &r["route_print_reader"];
    out.push_str(&format!(
        "\nroute print reader ({} bytes, {} routes): {} s; splitting the text into lines alone {} s ({}x)\n",
        num(&rp["bytes"]),
        num(&rp["routes"]),
        num(&rp["seconds"]),
        num(&rp["lines_only_seconds"]),
        num(&rp["ratio_to_lines"]),
    ));
    let st = &r["miss_storm"];
    out.push_str(&format!(
        "\nMiss storm ({} tasks send to one new destination, its resolution takes {} ms, {}): \
         {} resolution(s) at most, {} datagrams sent at least, in {} us (median)\n",
        num(&st["tasks"]),
        num(&st["resolution_ms"]),
        st["runtime"].as_str().unwrap_or("?"),
        num(&st["resolutions_max"]),
        num(&st["datagrams_sent_min"]),
        num(&st["storm_us"]),
    ));
    for (label, key) in [
        ("while the resolution runs  ", "wake_during_resolution"),
        ("whole miss storm           ", "wake_miss_storm"),
        ("same storm, resolved before", "wake_resolved_storm"),
        ("idle runtime               ", "wake_idle"),
    ] {
        out.push_str(&format!(
            "  wait of a 1 ms timer's wake-up, {label}: worst {} us, median {} us ({} ticks)\n",
            num(&st[key]["worst_us"]),
            num(&st[key]["p50_us"]),
            num(&st[key]["ticks"]),
        ));
    }
    let mem = &r["memory"];
    out.push_str(&format!(
        "\nMemory, {} cached destinations: loopguard {} bytes each, peak RSS {} bytes; dashmap {} bytes each, peak RSS {} bytes\n",
        num(&mem["destinations"]),
        num(&mem["loopguard_bytes_per_destination"]),
        num(&mem["loopguard_peak_rss_bytes"]),
        num(&mem["dashmap_bytes_per_destination"]),
        num(&mem["dashmap_peak_rss_bytes"]),
    ));
    let cold = &r["cold_resolution_us"];
    out.push_str(&format!(
        "\nCold route resolution with a mark: one netlink request {} us (with the interface name {} us, new socket per lookup {} us), `ip route get` process {} us: {}x\n",
        num(&cold["netlink"]),
        num(&cold["netlink_with_name"]),
        num(&cold["netlink_new_socket"]),
        num(&cold["ip_process"]),
        num(&cold["speedup"]),
    ));
    out.push_str(&format!(
        "Cold route resolution of the pin strategy (snapshot of links, routes and addresses, then the selection): {} us\n",
        num(&cold["pin_snapshot_and_select"]),
    ));
    if let Some(notes) = r["notes"].as_array() {
        for n in notes {
            out.push_str(&format!("note: {}\n", n.as_str().unwrap_or("")));
        }
    }
    out.push_str(&format!("\n({} s)\n", num(&r["seconds"])));
    out
}
