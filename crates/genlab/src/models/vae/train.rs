//! Training a VAE: one loss, its step on the CPU path or burn's autodiff,
//! the NaN policy, checkpoints (latest and best) and exact resume.

use super::figures::write_figures;
use super::host_mlp::FastPath;
use super::*;

/// The VAE family: `genlab train vae [--preset vae-2|vae-8|vae-16|conv-vae|...]`.
pub struct VaeFamily;

/// Training position saved in a checkpoint.
struct Position<'a> {
    epochs_done: usize,
    batches_done: usize,
    rng: Option<&'a GenRng>,
    best_val: f64,
    /// Sums of (loss, recon, kl, images) over the finished batches of an
    /// interrupted epoch, so its reported means stay exact after a resume.
    partial: [f64; 4],
}

fn training_checkpoint(vae: &Vae, opt: &Optimizer, at: &Position) -> Result<Checkpoint> {
    let mut ck = vae.to_checkpoint()?;
    opt.save(&mut ck, "optimizer", &vae.net.names())?;
    ck.set_meta("genlab.epoch", at.epochs_done.to_string());
    ck.set_meta("genlab.batch", at.batches_done.to_string());
    ck.set_meta("genlab.best_val_loss", at.best_val.to_string());
    ck.set_meta("genlab.partial_sums", serde_json::to_string(&at.partial)?);
    if let Some(rng) = at.rng {
        ck.set_meta(
            "genlab.rng",
            serde_json::to_string(&RngState::capture(rng))?,
        );
    }
    Ok(ck)
}

impl Family for VaeFamily {
    const NAME: &'static str = "vae";
    const SEED_PRESET: &'static str = "vae-2";
    type Config = VaeConfig;

    fn train(
        ctx: &TrainContext,
        run_config: &RunConfig<VaeConfig>,
        resume: Option<&Checkpoint>,
    ) -> Result<()> {
        let config = &run_config.model;
        let seed = run_config.seed;
        let device = ctx.device.clone();
        let net = VaeNet::from_config(config);
        let (names, sizes) = (net.names(), net.sizes());
        let (mut vae, mut opt, epochs_done, batches_done, resumed_rng, mut best_val, partial) =
            match resume {
                Some(ck) => {
                    let parse = |key: &str| -> Result<usize> {
                        ck.meta(key)?
                            .parse()
                            .with_context(|| format!("checkpoint entry {key} is not a number"))
                    };
                    let vae = Vae::from_checkpoint(net.clone(), ck, &device)
                        .map_err(crate::error::usage)?;
                    let opt =
                        Optimizer::load(config.rule(), ck, "optimizer", &names, &sizes, &device)
                            .map_err(crate::error::usage)?;
                    let rng = match ck.metadata.get("genlab.rng") {
                        Some(json) => Some(serde_json::from_str::<RngState>(json)?.restore()?),
                        None => None,
                    };
                    let partial: [f64; 4] = match ck.metadata.get("genlab.partial_sums") {
                        Some(s) => serde_json::from_str(s)?,
                        None => [0.0; 4],
                    };
                    let best = ck
                        .meta("genlab.best_val_loss")?
                        .parse()
                        .unwrap_or(f64::INFINITY);
                    (
                        vae,
                        opt,
                        parse("genlab.epoch")?,
                        parse("genlab.batch")?,
                        rng,
                        best,
                        partial,
                    )
                }
                None => {
                    let vae = Vae::init(net.clone(), &mut stream(seed, Purpose::Init, 0), &device);
                    let opt = Optimizer::new(config.rule(), &sizes, &device);
                    (vae, opt, 0, 0, None, f64::INFINITY, [0.0; 4])
                }
            };
        ctx.run.metrics().truncate_to_epoch(epochs_done as u64)?;
        let (enc, dec) = net.parameter_counts();
        if resume.is_none() {
            println!(
                "{} VAE, latent {}: {enc} encoder + {dec} decoder parameters ({} in all)",
                match config.architecture {
                    Architecture::Mlp => "MLP",
                    Architecture::Conv => "convolutional",
                },
                config.latent,
                enc + dec
            );
        }

        let train = &ctx.dataset.train;
        let test = test_pixels(&ctx.dataset.test, config.likelihood, seed);
        let n_test = ctx.dataset.test.len();
        let val_eps = fixed_noise(seed, 2, n_test * config.latent);
        let prior_z = fixed_noise(seed, 3, 64 * config.latent);
        let latent = config.latent;
        let view = config.train_view();
        let mut xbuf = Vec::new();
        let mut eps = Vec::new();
        let skip_bad = run_config.on_nan == OnNan::SkipBatch;
        // The CPU fast path for the MLP (GENLAB_CPU_KERNELS=0 forces burn's
        // generic path, for comparisons).
        let mut fast = if run_config.device == crate::device::DeviceKind::Cpu
            && crate::cpu::kernels_enabled()
        {
            Some(FastPath::new(&vae, &opt, config.batch_size)?)
        } else {
            None
        };

        for epoch in epochs_done + 1..=config.epochs {
            let order = EpochOrder::new(
                train.len(),
                config.batch_size,
                false,
                true,
                seed,
                epoch as u32,
            );
            let resuming = epoch == epochs_done + 1 && batches_done > 0;
            let skip = if resuming { batches_done } else { 0 };
            let mut rng = match (&resumed_rng, resuming) {
                (Some(r), true) => r.clone(),
                _ => stream(seed, Purpose::Train, epoch as u32),
            };
            // (loss, recon, kl, images) summed over the epoch's batches.
            let mut sums = if resuming { partial } else { [0.0; 4] };
            let mut skipped = 0usize;
            let mut progress = EpochProgress::start(
                epoch,
                config.epochs,
                order.num_batches() - skip,
                ctx.interactive,
            );
            for (b, idx) in order.batches().enumerate().skip(skip) {
                let rows = idx.len();
                fill_batch(train, idx, view, &mut rng, &mut xbuf);
                eps.resize(rows * latent, 0.0);
                fill_standard_normal(&mut rng, &mut eps);
                let ([r, k], finite) = match fast.as_mut() {
                    Some(h) => h.forward_backward(&xbuf, &eps, config.likelihood),
                    None => {
                        let (stats, finite, g) =
                            burn_step(&net, &vae, &xbuf, &eps, config.likelihood)?;
                        if finite {
                            opt.update(&mut vae.params, g);
                        }
                        (stats, finite)
                    }
                };
                if !finite {
                    if skip_bad {
                        skipped += 1;
                        progress.batch(rows, None);
                        continue;
                    }
                    let kept = crate::models::kept_checkpoint(ctx);
                    bail!(
                        "epoch {epoch}, batch {}: the loss or a gradient became NaN or infinite (loss {:.4}); training stopped and {kept}; lower model.lr or pass --on-nan skip-batch",
                        b + 1,
                        (r + k) / rows as f64
                    );
                }
                if let Some(h) = fast.as_mut() {
                    h.apply();
                }
                sums[0] += r + k;
                sums[1] += r;
                sums[2] += k;
                sums[3] += rows as f64;
                progress.batch(rows, Some((r + k) / rows as f64));
                if crate::interrupt::requested() && b + 1 < order.num_batches() {
                    if let Some(h) = &fast {
                        h.store(&mut vae, &mut opt);
                    }
                    let at = Position {
                        epochs_done: epoch - 1,
                        batches_done: b + 1,
                        rng: Some(&rng),
                        best_val,
                        partial: sums,
                    };
                    training_checkpoint(&vae, &opt, &at)?.save(&ctx.run.latest_checkpoint())?;
                    return Err(crate::interrupt::Interrupted {
                        epoch,
                        batch: b + 1,
                        run: ctx.run.root.display().to_string(),
                    }
                    .into());
                }
            }
            let timing = progress.timing();
            if let Some(h) = &fast {
                h.store(&mut vae, &mut opt);
            }
            let eval_start = Instant::now();
            let (val_recon, val_kl) = vae.loss_terms(&test, &val_eps, config.likelihood)?;
            let val = val_recon + val_kl;
            if !val.is_finite() {
                bail!(
                    "epoch {epoch}: the validation loss is {val}; the model diverged (lower model.lr); {}",
                    crate::models::kept_checkpoint(ctx)
                );
            }
            if sums[3] == 0.0 {
                bail!(
                    "epoch {epoch}: every batch of the epoch was skipped (the loss or a gradient was NaN or infinite each time); training stopped and {}; lower model.lr",
                    crate::models::kept_checkpoint(ctx)
                );
            }
            let n = sums[3];
            let (tl, tr, tk) = (sums[0] / n, sums[1] / n, sums[2] / n);
            progress.finish(
                timing,
                &format!("loss {tl:.3} (recon {tr:.3} + KL {tk:.3})  val {val:.3} (recon {val_recon:.3} + KL {val_kl:.3})"),
            );
            let samples = vae.decode(&prior_z)?;
            save_grid(
                &ctx.run
                    .images()
                    .join(format!("samples_epoch_{epoch:03}.png")),
                &samples,
                8,
                8,
            )?;

            let mut row = Map::new();
            row.insert("epoch".into(), json!(epoch));
            row.insert("seconds".into(), json!(timing.seconds));
            row.insert(
                "samples_per_second".into(),
                json!(timing.samples_per_second),
            );
            row.insert("loss".into(), json!(tl));
            row.insert("recon".into(), json!(tr));
            row.insert("kl".into(), json!(tk));
            row.insert("val_loss".into(), json!(val));
            row.insert("val_recon".into(), json!(val_recon));
            row.insert("val_kl".into(), json!(val_kl));
            row.insert(
                "eval_seconds".into(),
                json!(eval_start.elapsed().as_secs_f64()),
            );
            if run_config.on_nan == OnNan::SkipBatch {
                row.insert("skipped_batches".into(), json!(skipped));
            }
            let improved = val < best_val;
            if improved {
                best_val = val;
            }
            let at = Position {
                epochs_done: epoch,
                batches_done: 0,
                rng: None,
                best_val,
                partial: [0.0; 4],
            };
            let ck = training_checkpoint(&vae, &opt, &at)?;
            ctx.run.metrics().append(&row)?;
            ck.save(&ctx.run.latest_checkpoint())?;
            if improved {
                ck.save(&ctx.run.best_checkpoint())?;
            }
            if crate::interrupt::requested() && epoch < config.epochs {
                return Err(crate::interrupt::Interrupted {
                    epoch,
                    batch: order.num_batches(),
                    run: ctx.run.root.display().to_string(),
                }
                .into());
            }
        }
        vae.to_checkpoint()?
            .save(&ctx.run.root.join("weights.safetensors"))?;
        write_figures(&ctx.run, &vae, config, &ctx.dataset.test, seed)
            .context("drawing the figures")?;
        Ok(())
    }
}
