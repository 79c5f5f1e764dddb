//! The RBM's arithmetic against independent, naive computations.
// Reference computations index like the formulas they transcribe.
#![allow(clippy::needless_range_loop)]

use genlab::cpu::uniform;
use genlab::models::rbm::train::TensorCd;
use genlab::models::rbm::{CdBuffers, NegativeHidden, Rbm, RbmConfig, UpdateRule};
use genlab::models::tensors::upload;
use genlab::rng::{Purpose, stream};
use rand::{Rng, RngExt};

fn tiny(visible: usize, hidden: usize, seed: u64) -> Rbm {
    let mut rng = stream(seed, Purpose::Init, 0);
    let mut rbm = Rbm::init(visible, hidden, &mut rng);
    // Larger, varied weights and biases than the init, so every term matters.
    for w in &mut rbm.w {
        *w = rng.random::<f32>() * 2.0 - 1.0;
    }
    for b in rbm.hb.iter_mut().chain(rbm.vb.iter_mut()) {
        *b = rng.random::<f32>() - 0.5;
    }
    rbm
}

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A direct transcription of SPEC section 1 in f64 loops, drawing uniform
/// numbers from the same keyed streams as the fast path. The negative
/// phase runs the persistent chains' rows (any number) or, for CD, the
/// batch's; each phase's statistics are means over its own rows.
#[allow(clippy::too_many_arguments)]
fn reference_update(
    rbm: &Rbm,
    v0: &[f64],
    b: usize,
    rule: UpdateRule,
    keys: &mut impl FnMut() -> u64,
    chains: Option<&mut Vec<f64>>,
    vel: (&mut Vec<f64>, &mut Vec<f64>, &mut Vec<f64>),
    offsets: Option<(&mut Vec<f64>, &mut Vec<f64>)>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (nv, nh) = (rbm.visible, rbm.hidden);
    let w = |i: usize, j: usize| rbm.w[i * nh + j] as f64;
    let hidden_probs = |v: &[f64]| -> Vec<f64> {
        (0..v.len() / nv)
            .flat_map(|r| (0..nh).map(move |j| (r, j)))
            .map(|(r, j)| {
                sig(rbm.hb[j] as f64 + (0..nv).map(|i| v[r * nv + i] * w(i, j)).sum::<f64>())
            })
            .collect()
    };
    let visible_probs = |h: &[f64]| -> Vec<f64> {
        (0..h.len() / nh)
            .flat_map(|r| (0..nv).map(move |i| (r, i)))
            .map(|(r, i)| {
                sig(rbm.vb[i] as f64 + (0..nh).map(|j| h[r * nh + j] * w(i, j)).sum::<f64>())
            })
            .collect()
    };
    // The fast path compares in f32; do the same so the draws agree exactly.
    let draw = |p: &[f64], key: u64| -> Vec<f64> {
        p.iter()
            .enumerate()
            .map(|(i, &p)| (uniform(key, i as u32) < p as f32) as u8 as f64)
            .collect()
    };
    let ph0 = hidden_probs(v0);
    let mut h = draw(&ph0, keys());
    if let Some(c) = &chains {
        h = c.to_vec();
    }
    let c = h.len() / nh;
    let mut v = vec![0.0; c * nv];
    let mut ph = Vec::new();
    for _ in 0..rule.k {
        v = draw(&visible_probs(&h), keys());
        ph = hidden_probs(&v);
        h = draw(&ph, keys());
    }
    if let Some(c) = chains {
        *c = h.clone();
    }
    // The negative statistics' hidden layer.
    let h = match rule.negative_hidden {
        NegativeHidden::Sample => h,
        NegativeHidden::Probability => ph,
    };
    let (lr, m, wd) = (
        rule.lr as f64,
        rule.momentum as f64,
        rule.weight_decay as f64,
    );
    let (vw, vh, vv) = vel;
    // Centring: E = -(v - mu)'W(h - lambda) - b'(v - mu) - c'(h - lambda),
    // the centred model's gradient mapped back to the standard biases
    // vb = b - W lambda, hb = c - W' mu (zero offsets: the plain update).
    let (mu, lambda) = match &offsets {
        Some((mu, lambda)) => (mu.to_vec(), lambda.to_vec()),
        None => (vec![0.0; nv], vec![0.0; nh]),
    };
    let mut grad_w = vec![0.0; nv * nh];
    for i in 0..nv {
        for j in 0..nh {
            grad_w[i * nh + j] = (0..b)
                .map(|r| (v0[r * nv + i] - mu[i]) * (ph0[r * nh + j] - lambda[j]))
                .sum::<f64>()
                / b as f64
                - (0..c)
                    .map(|r| (v[r * nv + i] - mu[i]) * (h[r * nh + j] - lambda[j]))
                    .sum::<f64>()
                    / c as f64;
        }
    }
    let mut new_w = vec![0.0; nv * nh];
    for k in 0..nv * nh {
        vw[k] = m * vw[k] + lr * (grad_w[k] - wd * w(k / nh, k % nh));
        new_w[k] = w(k / nh, k % nh) + vw[k];
    }
    let new_hb = (0..nh)
        .map(|j| {
            let g = (0..b).map(|r| ph0[r * nh + j]).sum::<f64>() / b as f64
                - (0..c).map(|r| h[r * nh + j]).sum::<f64>() / c as f64
                - (0..nv).map(|i| grad_w[i * nh + j] * mu[i]).sum::<f64>();
            vh[j] = m * vh[j] + lr * g;
            rbm.hb[j] as f64 + vh[j]
        })
        .collect();
    let new_vb = (0..nv)
        .map(|i| {
            let g = (0..b).map(|r| v0[r * nv + i]).sum::<f64>() / b as f64
                - (0..c).map(|r| v[r * nv + i]).sum::<f64>() / c as f64
                - (0..nh).map(|j| grad_w[i * nh + j] * lambda[j]).sum::<f64>();
            vv[i] = m * vv[i] + lr * g;
            rbm.vb[i] as f64 + vv[i]
        })
        .collect();
    if let Some((mu, lambda)) = offsets {
        let rate = rule.offset_rate as f64;
        for i in 0..nv {
            let mean = (0..b).map(|r| v0[r * nv + i]).sum::<f64>() / b as f64;
            mu[i] += rate * (mean - mu[i]);
        }
        for j in 0..nh {
            let mean = (0..b).map(|r| ph0[r * nh + j]).sum::<f64>() / b as f64;
            lambda[j] += rate * (mean - lambda[j]);
        }
    }
    (new_w, new_hb, new_vb)
}

/// Two updates of a 12x5 RBM on `b` rows against the f64 reference, PCD
/// with `chains` persistent chains (`None`: one per batch row). More than
/// 32 chains (one shard) checks that the shards' draws are keyed by their
/// rows' places among all chains.
fn check_update(
    b: usize,
    persistent: bool,
    chains: Option<usize>,
    momentum: f32,
    weight_decay: f32,
    negative_hidden: NegativeHidden,
    centring: bool,
) {
    let (nv, nh) = (12, 5);
    let rbm0 = tiny(nv, nh, 1);
    let config = RbmConfig {
        hidden: nh,
        batch_size: b,
        persistent,
        chains,
        centring,
        ..Default::default()
    };
    let mut rbm = rbm0.clone();
    let mut state = rbm.new_state(&config, &mut stream(2, Purpose::Init, 1));
    let mut chains: Option<Vec<f64>> = state
        .chains
        .as_ref()
        .map(|c| c.iter().map(|&x| x as f64).collect());
    let mut data_rng = stream(3, Purpose::Train, 9);
    let v0: Vec<f32> = (0..b * nv).map(|_| data_rng.random::<f32>()).collect();
    let rule = UpdateRule {
        k: 3,
        lr: 0.1,
        momentum,
        weight_decay,
        negative_hidden,
        // A large rate, so that the second update sees offsets far from 1/2.
        offset_rate: 0.3,
    };
    let mut offsets: Option<(Vec<f64>, Vec<f64>)> = state.offsets.as_ref().map(|(v, h)| {
        (
            v.iter().map(|&x| x as f64).collect(),
            h.iter().map(|&x| x as f64).collect(),
        )
    });
    let mut bufs = CdBuffers::new(&rbm, b, config.chain_count());
    bufs.data_mut().copy_from_slice(&v0);
    let mut rng = stream(4, Purpose::Train, 0);
    let mut key_rng = rng.clone();
    // Two updates, so velocities and chains carry over.
    let mut vel = (vec![0.0; nv * nh], vec![0.0; nh], vec![0.0; nv]);
    let mut reference = rbm0.clone();
    let v0d: Vec<f64> = v0.iter().map(|&x| x as f64).collect();
    for _ in 0..2 {
        bufs.data_mut().copy_from_slice(&v0);
        rbm.cd_update(&mut bufs, &mut state, rule, &mut rng);
        let (w, hb, vb) = reference_update(
            &reference,
            &v0d,
            b,
            rule,
            &mut || key_rng.next_u64(),
            chains.as_mut(),
            (&mut vel.0, &mut vel.1, &mut vel.2),
            offsets.as_mut().map(|(v, h)| (v, h)),
        );
        reference.w = w.iter().map(|&x| x as f32).collect();
        reference.hb = hb.iter().map(|&x| x as f32).collect();
        reference.vb = vb.iter().map(|&x| x as f32).collect();
    }
    for (name, got, want) in [
        ("W", &rbm.w, &reference.w),
        ("hb", &rbm.hb, &reference.hb),
        ("vb", &rbm.vb, &reference.vb),
    ] {
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((g - w).abs() < 1e-5, "{name}: {g} vs {w}");
        }
    }
    assert_ne!(rbm.w, rbm0.w, "the update changed W");
    if let (Some((v, h)), Some((rv, rh))) = (&state.offsets, &offsets) {
        for (g, w) in v.iter().chain(h).zip(rv.iter().chain(rh)) {
            assert!((*g as f64 - w).abs() < 1e-5, "offset {g} vs {w}");
        }
    }

    // The same two updates with every Gibbs product as a sum of the weight
    // rows the sampled layer selects (and with none).
    for gather_below in [1.01, 0.0] {
        let mut gathered = rbm0.clone();
        let mut gathered_state = rbm0.new_state(&config, &mut stream(2, Purpose::Init, 1));
        let mut bufs = CdBuffers::new(&gathered, b, config.chain_count());
        bufs.gather_below = gather_below;
        let mut rng = stream(4, Purpose::Train, 0);
        for _ in 0..2 {
            bufs.data_mut().copy_from_slice(&v0);
            gathered.cd_update(&mut bufs, &mut gathered_state, rule, &mut rng);
        }
        for (name, got, want) in [
            ("W", &gathered.w, &reference.w),
            ("hb", &gathered.hb, &reference.hb),
            ("vb", &gathered.vb, &reference.vb),
        ] {
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(
                    (g - w).abs() < 1e-5,
                    "gather below {gather_below}: {name}: {g} vs {w}"
                );
            }
        }
        assert_eq!(gathered_state.chains, state.chains);
    }

    // The same two updates on burn tensors: through the backend extension
    // (on flex: the host kernel in place on the tensors' buffers) and as
    // burn's composed tensor operations (the GPU backends' body), both on the
    // CPU device. The skip-batch backup is a clone taken before the update:
    // it must keep the old values (the kernel copies on write).
    // With `--features wgpu` (and a Vulkan, Metal or DirectX adapter; Mesa's
    // lavapipe runs it on the CPU) the extension's cubecl body is checked too.
    #[allow(unused_mut)]
    let mut paths = vec![
        ("extension on flex", burn::tensor::Device::flex(), false),
        ("composed on flex", burn::tensor::Device::flex(), true),
    ];
    #[cfg(feature = "wgpu")]
    paths.push((
        "extension on wgpu",
        burn::tensor::Device::wgpu(Default::default()),
        false,
    ));
    for (path, device, composed) in paths {
        let mut tensor_state = rbm0.new_state(&config, &mut stream(2, Purpose::Init, 1));
        let mut on_device = TensorCd::upload(&rbm0, &tensor_state, &device);
        on_device.composed = composed;
        let before = on_device.clone();
        let mut tensor_rng = stream(4, Purpose::Train, 0);
        for _ in 0..2 {
            on_device.cd_update(upload(v0.clone(), [b, nv], &device), rule, &mut tensor_rng);
        }
        let mut tensor_rbm = rbm0.clone();
        on_device
            .download_into(&mut tensor_rbm, &mut tensor_state)
            .unwrap();
        for (name, got, want) in [
            ("W", &tensor_rbm.w, &reference.w),
            ("hb", &tensor_rbm.hb, &reference.hb),
            ("vb", &tensor_rbm.vb, &reference.vb),
        ] {
            for (g, w) in got.iter().zip(want.iter()) {
                assert!((g - w).abs() < 1e-5, "{path} path {name}: {g} vs {w}");
            }
        }
        // Velocities too (both stay zero without momentum), so a resume continues alike.
        for (g, w) in tensor_state.vel_w.iter().zip(&state.vel_w) {
            assert!((g - w).abs() < 1e-5, "{path} path velocity: {g} vs {w}");
        }
        if let Some(c) = &chains {
            let c: Vec<f32> = c.iter().map(|&x| x as f32).collect();
            assert_eq!(
                tensor_state.chains.as_ref().unwrap(),
                &c,
                "{path} path chains"
            );
            assert_eq!(state.chains.as_ref().unwrap(), &c);
        }
        let mut untouched = rbm0.clone();
        let mut untouched_state = rbm0.new_state(&config, &mut stream(2, Purpose::Init, 1));
        let fresh_state = untouched_state.clone();
        before
            .download_into(&mut untouched, &mut untouched_state)
            .unwrap();
        assert_eq!(
            untouched, rbm0,
            "{path} path changed a clone taken before the update"
        );
        assert_eq!(untouched_state, fresh_state);
    }
}

#[test]
fn cd_k_matches_a_hand_computation() {
    check_update(4, false, None, 0.0, 0.0, NegativeHidden::Sample, false);
}

#[test]
fn cd_k_with_momentum_and_weight_decay_matches_a_hand_computation() {
    check_update(4, false, None, 0.5, 0.01, NegativeHidden::Sample, false);
}

#[test]
fn persistent_cd_matches_a_hand_computation() {
    check_update(70, true, None, 0.0, 0.001, NegativeHidden::Sample, false);
}

#[test]
fn persistent_cd_with_more_or_fewer_chains_than_the_batch_matches_a_hand_computation() {
    check_update(6, true, Some(70), 0.0, 0.001, NegativeHidden::Sample, false);
    check_update(
        6,
        true,
        Some(70),
        0.5,
        0.0,
        NegativeHidden::Probability,
        false,
    );
    check_update(40, true, Some(3), 0.5, 0.001, NegativeHidden::Sample, false);
    check_update(6, true, Some(70), 0.5, 0.001, NegativeHidden::Sample, true);
}

#[test]
fn negative_hidden_probabilities_match_a_hand_computation() {
    check_update(
        70,
        true,
        None,
        0.5,
        0.001,
        NegativeHidden::Probability,
        false,
    );
    check_update(4, false, None, 0.0, 0.0, NegativeHidden::Probability, false);
}

#[test]
fn centred_updates_match_a_hand_computation() {
    check_update(70, true, None, 0.5, 0.001, NegativeHidden::Sample, true);
    check_update(4, false, None, 0.0, 0.0, NegativeHidden::Probability, true);
}

/// log sum_h exp(-E(v,h)) by enumerating h.
fn brute_neg_free_energy(rbm: &Rbm, v: &[f64]) -> f64 {
    let (nv, nh) = (rbm.visible, rbm.hidden);
    let mut terms = Vec::new();
    for code in 0..(1u32 << nh) {
        let h: Vec<f64> = (0..nh).map(|j| ((code >> j) & 1) as f64).collect();
        let mut neg_e = 0.0;
        for i in 0..nv {
            neg_e += rbm.vb[i] as f64 * v[i];
            for j in 0..nh {
                neg_e += v[i] * rbm.w[i * nh + j] as f64 * h[j];
            }
        }
        for j in 0..nh {
            neg_e += rbm.hb[j] as f64 * h[j];
        }
        terms.push(neg_e);
    }
    let m = terms.iter().cloned().fold(f64::MIN, f64::max);
    m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln()
}

#[test]
fn free_energy_matches_the_brute_force_marginal() {
    let rbm = tiny(6, 4, 5);
    for code in 0..64u32 {
        let v: Vec<f32> = (0..6).map(|i| ((code >> i) & 1) as f32).collect();
        let f = rbm.free_energy(&v)[0] as f64;
        let want = -brute_neg_free_energy(&rbm, &v.iter().map(|&x| x as f64).collect::<Vec<_>>());
        assert!((f - want).abs() < 1e-4, "{f} vs {want}");
    }
}

#[test]
fn pseudo_likelihood_is_the_sum_over_all_flipped_units() {
    let rbm = tiny(10, 4, 6);
    let mut rng = stream(7, Purpose::Eval, 0);
    let rows = 5;
    let v: Vec<f32> = (0..rows * 10).map(|_| rng.random::<f32>()).collect();
    let mut total = 0.0f64;
    for r in 0..rows {
        let x: Vec<f32> = v[r * 10..(r + 1) * 10].iter().map(|p| p.round()).collect();
        let fx = rbm.free_energy(&x)[0] as f64;
        for i in 0..10 {
            let mut flipped = x.clone();
            flipped[i] = 1.0 - flipped[i];
            let ff = rbm.free_energy(&flipped)[0] as f64;
            total += -(1.0 + (-(ff - fx)).exp()).ln();
        }
    }
    let want = total / rows as f64;
    let got = rbm.pseudo_likelihood(&v);
    assert!((got - want).abs() < 1e-3, "{got} vs {want}");
}

#[test]
fn init_follows_the_spec() {
    let rbm = Rbm::init(784, 500, &mut stream(0, Purpose::Init, 0));
    assert!(rbm.hb.iter().chain(&rbm.vb).all(|&b| b == 0.1));
    assert!(rbm.w.iter().all(|w| w.abs() <= 0.2));
    let n = rbm.w.len() as f64;
    let mean = rbm.w.iter().map(|&w| w as f64).sum::<f64>() / n;
    let sd = (rbm
        .w
        .iter()
        .map(|&w| (w as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    assert!(mean.abs() < 1e-3, "{mean}");
    // A normal(0, 0.1) truncated at two standard deviations has sd 0.0880.
    assert!((sd - 0.0880).abs() < 0.001, "{sd}");
}

#[test]
fn clamped_inpainting_keeps_the_kept_pixels_unchanged() {
    use genlab::data::corrupt::remove_nonzero_fraction;
    use genlab::models::rbm::inpaint_clamped;
    let rbm = tiny(784, 30, 8);
    let mut rng = stream(1, Purpose::Corrupt, 0);
    let images: Vec<f32> = (0..3 * 784)
        .map(|i| if (i / 7) % 3 == 0 { 0.9 } else { 0.0 })
        .collect();
    let (mut corrupted, mut missing) = (Vec::new(), Vec::new());
    for img in images.chunks(784) {
        let (c, m) = remove_nonzero_fraction(img, 0.5, &mut rng);
        corrupted.extend(c);
        missing.extend(m);
    }
    let out = inpaint_clamped(&rbm, &corrupted, &missing, 50, 10, &mut rng);
    let mut changed = 0;
    for i in 0..out.len() {
        if missing[i] {
            assert!((0.0..=1.0).contains(&out[i]));
            changed += (out[i] != corrupted[i]) as usize;
        } else {
            assert_eq!(out[i], corrupted[i], "kept pixel {i} moved");
        }
    }
    assert!(changed > 0, "the removed pixels were filled in");
}
