//! Small helpers for the benchmarks (timing statistics, CPU time).

/// CPU time (user + system) this process has used, in seconds (Linux; 0 elsewhere).
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Median of the samples (sorts them).
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        0.5 * (samples[n / 2 - 1] + samples[n / 2])
    }
}

/// The machine's measured peak f32 throughput in GFLOP/s on `threads`
/// threads: independent fused multiply-add chains (AVX-512 or AVX2 + FMA,
/// whichever is faster), enough of them to fill every FMA unit. What
/// `bench/compare.sh` divides achieved GFLOP/s by.
pub fn peak_gflops(threads: usize) -> f64 {
    let per_thread = 200_000_000u64; // FMA vector instructions per thread and run
    let run = |f: fn(u64) -> (f32, u64)| {
        let start = std::time::Instant::now();
        let flops: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads.max(1))
                .map(|_| s.spawn(move || f(per_thread)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    let (sink, flops) = h.join().expect("peak thread");
                    std::hint::black_box(sink);
                    flops
                })
                .sum()
        });
        flops as f64 / start.elapsed().as_secs_f64() / 1e9
    };
    let mut best = 0.0f64;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            for _ in 0..3 {
                best = best.max(run(|n| unsafe { fma_chains_avx2(n) }));
            }
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            for _ in 0..3 {
                best = best.max(run(|n| unsafe { fma_chains_avx512(n) }));
            }
        }
    }
    best
}

/// `n` 8-lane FMAs over 12 independent accumulators; returns a value to keep
/// the work alive and the FLOPs done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(n: u64) -> (f32, u64) {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..n / 12 {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut out = [0.0f32; 8];
    let mut sum = acc[0];
    for x in &acc[1..] {
        sum = _mm256_add_ps(sum, *x);
    }
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
    (out.iter().sum(), (n / 12) * 12 * 16)
}

/// The AVX-512 version of [`fma_chains_avx2`] (16 lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(n: u64) -> (f32, u64) {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..n / 12 {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    let mut sum = acc[0];
    for x in &acc[1..] {
        sum = _mm512_add_ps(sum, *x);
    }
    (_mm512_reduce_add_ps(sum), (n / 12) * 12 * 32)
}
