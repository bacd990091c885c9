//! What `#[cacheow]` costs per call, against the same function unwrapped,
//! measured in the same run. Run by `bench/library.sh` twice: without
//! `CACHEOW_ENABLE` (the wrapper must cost nothing measurable) and with
//! `CACHEOW_ENABLE=1` in cache mode (the cost of a replay of a small value).

// Internal: criterion's macros define public functions without docs.
#![allow(missing_docs)]

use std::hint::black_box;

use cacheow::{Mode, cacheow, function_id};
use criterion::{Criterion, criterion_group, criterion_main};

/// `rounds` of arithmetic: 8 rounds take a few nanoseconds, so the
/// wrapper's share is as large as it gets; 2000 take about a microsecond,
/// still far cheaper than anything worth recording.
fn mix(x: u64, y: u64, rounds: u32) -> u64 {
    let mut h = x ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..rounds {
        h = (h ^ y).wrapping_mul(0x0100_0000_01b3).rotate_left(17);
    }
    h
}

// Neither may be inlined into the loop: the comparison is call against
// call, as in a real program calling an expensive function.
#[inline(never)]
fn plain(x: u64, y: u64, rounds: u32) -> u64 {
    mix(x, y, rounds)
}

#[cacheow]
#[inline(never)]
fn wrapped(x: u64, y: u64, rounds: u32) -> u64 {
    mix(x, y, rounds)
}

fn overhead(c: &mut Criterion) {
    let group_name = match cacheow::get_manager() {
        None => "disabled",
        Some(manager) => {
            manager.set_mode(function_id!(wrapped), Mode::Cache);
            // Recorded once; every measured call below is a cache hit.
            wrapped(7, 11, 8);
            wrapped(7, 11, 2000);
            "enabled_cache_hit"
        }
    };
    let mut group = c.benchmark_group(group_name);
    for rounds in [8, 2000] {
        group.bench_function(format!("plain_{rounds}"), |b| {
            b.iter(|| plain(black_box(7), black_box(11), black_box(rounds)))
        });
        group.bench_function(format!("wrapped_{rounds}"), |b| {
            b.iter(|| wrapped(black_box(7), black_box(11), black_box(rounds)))
        });
    }
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
