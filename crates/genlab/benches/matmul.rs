//! Achieved GFLOP/s of the RBM's hot matrix product (64x784 @ 784x500, f32) on
//! the CPU backend, how many cores it keeps busy (CPU time / wall time), and
//! the machine's measured peak f32 throughput.
//!
//! Run: `cargo bench --bench matmul`.

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use genlab::bench_util::{cpu_seconds, median};

fn main() {
    let device = genlab::device::DeviceKind::Cpu
        .device()
        .expect("cpu backend");
    let (m, k, n) = (64usize, 784usize, 500usize);
    let a = Tensor::<2>::random([m, k], Distribution::Uniform(0.0, 1.0), &device);
    let b = Tensor::<2>::random([k, n], Distribution::Uniform(-0.1, 0.1), &device);
    let flops = 2.0 * (m * k * n) as f64;
    let reps = 200;
    // Warm up (thread pool start, allocator).
    for _ in 0..50 {
        let _ = a.clone().matmul(b.clone()).into_data();
    }
    let mut samples = Vec::new();
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..reps {
            let c = a.clone().matmul(b.clone());
            // Reading one value forces the product to finish.
            let _ = c.slice([0..1, 0..1]).into_data();
        }
        samples.push(flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    let busy = (cpu_seconds() - cpu0) / wall0.elapsed().as_secs_f64();
    println!(
        "matmul {m}x{k} @ {k}x{n} f32 (burn flex): median {:.1} GFLOP/s (min {:.1}, max {:.1}) over {} x {reps} products; cores busy {busy:.2} of {}",
        median(&mut samples.clone()),
        samples.iter().cloned().fold(f64::MAX, f64::min),
        samples.iter().cloned().fold(0.0, f64::max),
        samples.len(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
    println!(
        "peak: {:.1} GFLOP/s f32 on {threads} threads (independent FMA chains)",
        genlab::bench_util::peak_gflops(threads)
    );
}
