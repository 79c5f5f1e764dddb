//! The RBM's hot paths on the CPU: one CD-30 update of 64 images for a
//! 784x500 RBM (the seed's `rbm-500`), and AIS steps (100 chains).
//!
//! Run: `cargo bench --bench rbm` (add `--features wgpu` or `cuda` to time
//! the update on those backends too). Prints the median over repeated timings,
//! the achieved GFLOP/s of the update's matrix products and the cores kept busy.

use std::time::Instant;

use genlab::bench_util::{cpu_seconds, median};
use genlab::device::DeviceKind;
use genlab::models::rbm::train::TensorCd;
use genlab::models::rbm::{CdBuffers, NegativeHidden, Rbm, RbmConfig, UpdateRule};
use genlab::models::tensors::upload;
use genlab::rng::{Purpose, stream};
use rand::RngExt;

fn main() {
    let (nv, nh, b, k) = (784usize, 500usize, 64usize, 30usize);
    let config = RbmConfig::default();
    let mut rbm = Rbm::init(nv, nh, &mut stream(0, Purpose::Init, 0));
    let mut state = rbm.new_state(&config, &mut stream(0, Purpose::Init, 1));
    let mut bufs = CdBuffers::new(&rbm, b, b);
    let mut data_rng = stream(0, Purpose::Fixed, 0);
    let batch: Vec<f32> = (0..b * nv).map(|_| data_rng.random::<f32>()).collect();
    let mut rng = stream(0, Purpose::Train, 0);
    let rule = UpdateRule {
        k,
        lr: 0.01,
        momentum: 0.0,
        weight_decay: 0.0,
        negative_hidden: NegativeHidden::Sample,
        offset_rate: 0.0,
    };
    let mut step = |rbm: &mut Rbm| {
        bufs.data_mut().copy_from_slice(&batch);
        rbm.cd_update(&mut bufs, &mut state, rule, &mut rng);
    };
    for _ in 0..5 {
        step(&mut rbm);
    }
    let mut ms = Vec::new();
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    for _ in 0..40 {
        let t = Instant::now();
        step(&mut rbm);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let busy = (cpu_seconds() - cpu0) / wall0.elapsed().as_secs_f64();
    let med = median(&mut ms);
    // 2k + 2 products of 2*B*V*H flops (positive phase, k Gibbs steps, the 2B-row gradient).
    let flops = (2 * k + 1) as f64 * 2.0 * (b * nv * nh) as f64 + 2.0 * (2 * b * nv * nh) as f64;
    println!(
        "rbm-500 CD-{k} update, batch {b}: median {med:.2} ms ({:.1} GFLOP/s overall), cores busy {busy:.2}; one 60k epoch = {:.1} s",
        flops / med / 1e6,
        med * (60_000 / b) as f64 / 1e3
    );

    // The same update as training runs it: the backend extension on flex
    // tensors (the fused kernel in place on their buffers), then burn's
    // composed tensor operations (the GPU backends' body) on the CPU.
    let device = burn::tensor::Device::flex();
    for (label, composed) in [
        ("backend extension on flex", false),
        ("composed tensor ops on flex", true),
    ] {
        let mut on_device = TensorCd::upload(&rbm, &state, &device);
        on_device.composed = composed;
        let mut tensor_step = || {
            let v0 = upload(batch.clone(), [b, nv], &device);
            on_device.cd_update(v0, rule, &mut rng);
        };
        for _ in 0..3 {
            tensor_step();
        }
        let mut ms = Vec::new();
        for _ in 0..(if composed { 10 } else { 40 }) {
            let t = Instant::now();
            tensor_step();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let med_t = median(&mut ms);
        println!(
            "rbm-500 CD-{k} update, {label}: median {med_t:.2} ms ({:.2}x the host kernel's time)",
            med_t / med
        );
    }

    // On the GPU backends compiled in (`cargo bench --bench rbm --features
    // wgpu`): the same op through the extension, the trait's default body of
    // burn primitives; each update ends with a read-back so the timing
    // covers the work, not just its queueing.
    for kind in [DeviceKind::Wgpu, DeviceKind::Cuda] {
        if !kind.compiled_in() {
            continue;
        }
        let device = kind.device().expect("a compiled-in device");
        let mut on_device = TensorCd::upload(&rbm, &state, &device);
        let mut gpu_step = || {
            let v0 = upload(batch.clone(), [b, nv], &device);
            on_device.cd_update(v0, rule, &mut rng);
            on_device.all_finite().expect("read back from the device")
        };
        for _ in 0..5 {
            gpu_step();
        }
        let mut ms = Vec::new();
        for _ in 0..40 {
            let t = Instant::now();
            gpu_step();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let med_g = median(&mut ms);
        println!(
            "rbm-500 CD-{k} update, backend extension on {kind}: median {med_g:.2} ms ({:.2}x the host kernel's time)",
            med_g / med
        );
    }

    // One Gibbs half-step's product for one shard of 32 chains on one core,
    // as the update runs it, at the densities a chain goes through (a
    // trained rbm-500's states have 12-20% ones): the sum of the weight rows
    // the ones select (indexing included) against the dense product. Where
    // they cross sets `GATHER_BELOW`.
    let rows = 32;
    let mut ones = genlab::cpu::Ones::default();
    let (mut w_panels, mut wt_panels) = (
        genlab::cpu::Panels::default(),
        genlab::cpu::Panels::default(),
    );
    w_panels.fill(&rbm.w, nv, nh, false);
    wt_panels.fill(&rbm.w, nv, nh, true);
    let mut sweep_rng = stream(0, Purpose::Fixed, 1);
    for density in [0.05f32, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6] {
        let mut draw = |n: usize| -> Vec<f32> {
            (0..rows * n)
                .map(|_| (sweep_rng.random::<f32>() < density) as u8 as f32)
                .collect()
        };
        let (v, h) = (draw(nv), draw(nh));
        let time = |f: &mut dyn FnMut()| {
            let mut us = Vec::new();
            for rep in 0..205 {
                let t = Instant::now();
                genlab::cpu::serial(&mut *f);
                if rep >= 5 {
                    us.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            median(&mut us)
        };
        let (mut hp, mut vp) = (vec![0.0f32; rows * nh], vec![0.0f32; rows * nv]);
        let gathered = time(&mut || {
            ones.index(&v, nv);
            genlab::cpu::gathered_product(&mut hp, &w_panels, &ones);
            ones.index(&h, nh);
            genlab::cpu::gathered_product(&mut vp, &wt_panels, &ones);
        });
        let dense = time(&mut || {
            genlab::cpu::matmul(&mut hp, &v, &rbm.w, (rows, nv, nh), false, false, 0.0, 1.0);
            genlab::cpu::matmul(&mut vp, &h, &rbm.w, (rows, nh, nv), false, true, 0.0, 1.0);
        });
        println!(
            "one Gibbs step's products, {rows} chains, one core, {:.0}% ones: gathered rows {gathered:.1} us, dense products {dense:.1} us",
            density * 100.0
        );
    }

    let runs = 100;
    let steps = 1_000;
    let base = rbm.vb.clone();
    let t = Instant::now();
    let _ =
        genlab::eval::ais::ais_log_z(&rbm, &base, runs, steps, &mut stream(0, Purpose::Eval, 0));
    let secs = t.elapsed().as_secs_f64();
    println!(
        "AIS, {runs} chains x {steps} temperatures: {secs:.2} s ({:.1} s for the default 14,500 from one base)",
        secs * 14.5
    );
}
