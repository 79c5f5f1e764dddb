//! The RBM's likelihood: log Z by AIS from two bases (and exactly for
//! small hidden layers), the average log-likelihood of test and training
//! images, and RAISE's conservative estimate on test images beside AIS's.

use std::time::Instant;

use anyhow::Result;
use serde_json::{Value, json};

use super as rbm;
use crate::data::PixelView;
use crate::data::batches::split_to_f32;
use crate::eval::options::{EXACT_MAX_HIDDEN, EvalOptions};
use crate::eval::{ais, raise};
use crate::rng::{Purpose, stream};
use crate::run::RunDir;

/// The RBM's part of `genlab eval`.
pub fn evaluate_rbm(run: &RunDir, opts: &EvalOptions) -> Result<(Value, Vec<String>)> {
    let loaded = rbm::load_run(run)?;
    let model = &loaded.rbm;
    let data = loaded.config.data.load(opts.data_dir.clone())?;
    // Binary data for the likelihood: one fixed-seed Bernoulli draw per pixel.
    let split = opts.on.name();
    let test = split_to_f32(
        opts.on.of(&data)?,
        PixelView::Dynamic,
        &mut stream(opts.seed, Purpose::Eval, 10),
    );
    let train = split_to_f32(
        &data.train.head(10_000),
        PixelView::Dynamic,
        &mut stream(opts.seed, Purpose::Eval, 11),
    );
    let all_train = split_to_f32(
        &data.train,
        PixelView::Dynamic,
        &mut stream(opts.seed, Purpose::Eval, 12),
    );
    let t0 = Instant::now();
    let estimate = ais::two_base_log_z(model, &all_train, opts.ais_runs, opts.ais_steps, opts.seed);
    let ais_seconds = t0.elapsed().as_secs_f64();
    let (from_data, from_model) = (&estimate.from_base_rates, &estimate.from_model_biases);
    let exact = (model.hidden <= EXACT_MAX_HIDDEN).then(|| {
        let t = Instant::now();
        (ais::exact_log_z(model), t.elapsed().as_secs_f64())
    });
    let log_z = exact.map(|(z, _)| z).unwrap_or(estimate.log_z);
    let mean_neg_f = |v: &[f32]| -> f64 {
        let f = model.free_energy(v);
        -f.iter().map(|&x| x as f64).sum::<f64>() / f.len() as f64
    };
    let (nf_test, nf_train) = (mean_neg_f(&test), mean_neg_f(&train));
    let ll = |nf: f64, z: f64| nf - z;
    // RAISE on the first test images, and AIS's figure on the same images.
    let raise_images = opts.raise_images.min(test.len() / model.visible);
    let raise = (raise_images > 0).then(|| {
        let images = &test[..raise_images * model.visible];
        let t = Instant::now();
        let r = raise::two_base_raise(
            model,
            &all_train,
            images,
            opts.raise_chains,
            opts.raise_steps,
            opts.seed,
        );
        (r, mean_neg_f(images), t.elapsed().as_secs_f64())
    });

    let mut lines = vec![
        format!("run              {}", run.root.display()),
        format!(
            "model            binary RBM, {} visible ({} images) x {} hidden ({})",
            model.visible,
            loaded.image.to_meta(),
            model.hidden,
            loaded.config.preset
        ),
        format!(
            "AIS              {} chains x {} inverse temperatures (Salakhutdinov-Murray schedule), {:.1} s",
            from_model.runs, from_model.steps, ais_seconds
        ),
        format!(
            "log Z (AIS)      {:.3}  [{:.3}, {:.3}] (log of mean -/+ 3 s.e.), from the base-rate model",
            from_data.log_z, from_data.log_z_low, from_data.log_z_high
        ),
        format!(
            "log Z (AIS)      {:.3}  [{:.3}, {:.3}], from the model's visible biases",
            from_model.log_z, from_model.log_z_low, from_model.log_z_high
        ),
        format!(
            "log Z (AIS)      {:.3}  {}",
            estimate.log_z,
            if estimate.rule == "pooled" {
                "the two pooled (their intervals overlap; inverse-variance weights)"
            } else {
                "the larger (their intervals are disjoint, so one missed mass; AIS only underestimates)"
            }
        ),
    ];
    if let Some((z, s)) = exact {
        lines.push(format!(
            "log Z (exact)    {z:.3}  (sum over all 2^{} hidden states, {s:.1} s)",
            model.hidden
        ));
    }
    lines.push(format!(
        "{split} log-likelihood   {:.2} nats per image ({} {split} images binarised by a Bernoulli draw, seed {})",
        ll(nf_test, log_z),
        test.len() / model.visible,
        opts.seed
    ));
    lines.push(format!(
        "train log-likelihood  {:.2} nats per image (first {} training images, binarised the same way)",
        ll(nf_train, log_z),
        train.len() / model.visible
    ));
    if let Some((r, nf, seconds)) = &raise {
        let ais_here = ll(*nf, estimate.log_z);
        lines.push(format!(
            "RAISE            {:.2} nats per image on the first {raise_images} {split} images (AIS there {ais_here:.2}, gap {:.2}); {} reverse chains x {} inverse temperatures from each base, {seconds:.1} s",
            r.mean_log_likelihood,
            ais_here - r.mean_log_likelihood,
            r.from_base_rates.chains,
            r.from_base_rates.steps,
        ));
        lines.push(format!(
            "RAISE            towards the base-rate model {:.2} (+- {:.2}), towards the model's biases {:.2} (+- {:.2}): the smaller is reported; each is a lower estimate only of its own annealed model, not of the RBM",
            r.from_base_rates.mean_log_likelihood,
            r.from_base_rates.chain_stderr,
            r.from_model_biases.mean_log_likelihood,
            r.from_model_biases.chain_stderr,
        ));
        if !r.directions_agree() {
            lines.push(format!(
                "RAISE            the two directions disagree by {:.2} nats, more than their noise ({:.2}, 3 s.e.): an annealing path missed part of the model, and the larger figure (towards the {}) is not a bound",
                r.disagreement,
                r.noise,
                r.larger_base()
            ));
        }
        if let Some((z, _)) = exact {
            let (from_rates, from_biases) = r.exact_gaps(ll(*nf, z));
            lines.push(format!(
                "(exact log-likelihood of those images: {:.2}; RAISE minus exact: towards the base rates {from_rates:+.2}, towards the model's biases {from_biases:+.2})",
                ll(*nf, z)
            ));
        }
    }
    if exact.is_some() {
        lines.push(format!(
            "(with the AIS log Z instead: {split} {:.2}, train {:.2})",
            ll(nf_test, estimate.log_z),
            ll(nf_train, estimate.log_z)
        ));
    }
    let raise_json = match &raise {
        Some((r, nf, seconds)) => json!({
            "raise_test_log_likelihood": r.mean_log_likelihood,
            "raise_base": r.base,
            "raise_base_rates": [r.from_base_rates.mean_log_likelihood, r.from_base_rates.chain_stderr],
            "raise_model_biases": [r.from_model_biases.mean_log_likelihood, r.from_model_biases.chain_stderr],
            "raise_images": raise_images,
            "raise_chains": r.from_base_rates.chains,
            "raise_steps": r.from_base_rates.steps,
            "raise_seconds": seconds,
            "raise_ais_same_images": ll(*nf, estimate.log_z),
            "raise_ais_gap": ll(*nf, estimate.log_z) - r.mean_log_likelihood,
            "raise_exact_same_images": exact.map(|(z, _)| ll(*nf, z)),
            "raise_disagreement": r.disagreement,
            "raise_noise": r.noise,
            "raise_directions_agree": r.directions_agree(),
            "raise_not_a_bound": (!r.directions_agree()).then(|| r.larger_base()),
            "raise_exact_gap_base_rates": exact.map(|(z, _)| r.exact_gaps(ll(*nf, z)).0),
            "raise_exact_gap_model_biases": exact.map(|(z, _)| r.exact_gaps(ll(*nf, z)).1),
        }),
        None => json!({}),
    };
    let mut json = json!({
        "run": run.root.display().to_string(),
        "family": "rbm",
        "preset": loaded.config.preset,
        "seed": opts.seed,
        "likelihood": {
            "binarisation": "one Bernoulli(pixel/255) draw per pixel, fixed seed",
            "split": split,
            "log_z": log_z,
            "log_z_source": if exact.is_some() { "exact" } else { "ais" },
            "log_z_ais": estimate.log_z,
            "log_z_ais_rule": estimate.rule,
            "log_z_ais_base_rate": [from_data.log_z_low, from_data.log_z, from_data.log_z_high],
            "log_z_ais_model_biases": [from_model.log_z_low, from_model.log_z, from_model.log_z_high],
            "log_z_exact": exact.map(|(z, _)| z),
            "ais_runs": from_model.runs,
            "ais_steps": from_model.steps,
            "ais_seconds": ais_seconds,
            "test_log_likelihood": ll(nf_test, log_z),
            "train_log_likelihood": ll(nf_train, log_z),
            "test_images": test.len() / model.visible,
            "train_images": train.len() / model.visible,
        }
    });
    if let (Some(likelihood), Some(extra)) =
        (json["likelihood"].as_object_mut(), raise_json.as_object())
    {
        likelihood.extend(extra.clone());
    }
    Ok((json, lines))
}
