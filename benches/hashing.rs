//! Criterion: hashing throughput of `nudge::snapshot::read` (read + SHA-256 of every file of a
//! volume, as for every `..data` swap) on a kubelet-style volume of one key of 1 KiB, 100 KiB
//! and 1 MiB (the ConfigMap maximum). The files are in the page cache, as they are in a pod
//! (the kubelet has just written them). Medians go to BENCHMARKS.md.
//!
//! `cargo bench --bench hashing` (part of `make bench`).

#[path = "../tests/support/kubelet.rs"]
#[allow(dead_code)]
mod kubelet;
#[path = "support/report.rs"]
#[allow(dead_code)]
mod report;

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput};
use kubelet::KubeletVolume;
use report::Error;

const GROUP: &str = "hashing";
const SIZES: [(&str, usize); 3] = [("1KiB", 1 << 10), ("100KiB", 100 << 10), ("1MiB", 1 << 20)];

fn main() -> Result<(), Error> {
    // `cargo test --all-targets` runs this file too, without `--bench`: measure only for real.
    if !report::benchmarking() {
        println!("hashing benchmark: skipped (run `make bench`)");
        return Ok(());
    }
    let started = SystemTime::now();
    let dir = tempfile::tempdir()?;
    let mut criterion = Criterion::default()
        .output_directory(&report::criterion_dir()?)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = criterion.benchmark_group(GROUP);
    for (id, size) in SIZES {
        let volume = KubeletVolume::create(dir.path().join(id), &[("payload.txt", &payload(size))]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(id, |b| {
            b.iter(|| nudge::snapshot::read(black_box(&volume.dir)))
        });
    }
    group.finish();
    criterion.final_summary();
    // A filtered or `--profile-time` run measures nothing new: leave BENCHMARKS.md alone.
    match summary(started) {
        Some(section) => report::write_section(&section),
        None => Ok(()),
    }
}

/// `size` bytes of text, as a config file would hold.
fn payload(size: usize) -> String {
    "key: some configuration value\n"
        .chars()
        .cycle()
        .take(size)
        .collect()
}

/// The BENCHMARKS.md section; `None` when no benchmark ran.
fn summary(started: SystemTime) -> Option<String> {
    let medians = SIZES.map(|(id, _)| report::criterion_median_ns(GROUP, id, started));
    medians.iter().any(Option::is_some).then_some(())?;
    let mut rows = String::new();
    for ((id, size), median) in SIZES.into_iter().zip(medians) {
        let row = match median {
            Some(ns) => {
                let mib_per_s = size as f64 / (1 << 20) as f64 / (ns / 1e9);
                format!("| {id} | {:.1} | {mib_per_s:.0} |", ns / 1000.0)
            }
            None => format!("| {id} | not run | |"),
        };
        let _ = writeln!(rows, "{row}");
    }
    Some(format!(
        "## Sidecar: hashing throughput (criterion)\n\n\
         {run} `cargo bench --bench hashing`: `nudge::snapshot::read` (readlink `..data`, list \
         the generation, read and SHA-256 each file, hash the keys) on a kubelet-style volume \
         with one key, files in the page cache. Median of criterion's samples; the time includes \
         the per-read fixed cost (opening the volume), which dominates at 1 KiB.\n\n\
         | payload | median (µs) | throughput (MiB/s) |\n\
         |---|---|---|\n\
         {rows}",
        run = report::run_line(),
    ))
}
