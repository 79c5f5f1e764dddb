//! Training the GAN: the custom loop of D and G steps with their two
//! optimisers, the NaN policy, checkpoints and exact resume, the fixed-noise
//! evolution and the loss curves.

use super::*;

/// The GAN family: `genlab train gan`.
pub struct GanFamily;

/// Sums over an epoch: d_loss, g_loss, D(x), D(G(z)), d steps, g steps.
type Sums = [f64; 6];

struct Position<'a> {
    epochs_done: usize,
    batches_done: usize,
    rng: Option<&'a GenRng>,
    sums: Sums,
    last: [f64; 2],
}

fn training_checkpoint(
    gan: &Gan,
    opt_d: &Optimizer,
    opt_g: &Optimizer,
    at: &Position,
) -> Result<Checkpoint> {
    let mut ck = gan.to_checkpoint()?;
    let gn = gan.g_shape.names();
    let dn = gan.d_shape.names();
    opt_g.save(
        &mut ck,
        "optimizer_g",
        &gn.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    opt_d.save(
        &mut ck,
        "optimizer_d",
        &dn.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    ck.set_meta("genlab.epoch", at.epochs_done.to_string());
    ck.set_meta("genlab.batch", at.batches_done.to_string());
    ck.set_meta("genlab.partial_sums", serde_json::to_string(&at.sums)?);
    ck.set_meta("genlab.last_losses", serde_json::to_string(&at.last)?);
    if let Some(rng) = at.rng {
        ck.set_meta(
            "genlab.rng",
            serde_json::to_string(&RngState::capture(rng))?,
        );
    }
    Ok(ck)
}

/// Whether an epoch's fixed-noise samples go into the evolution picture.
pub fn in_evolution(epoch: usize) -> bool {
    epoch <= 10 || epoch.is_multiple_of(5)
}

/// The fixed-noise samples of past epochs: `fixed_samples.safetensors` in the run.
fn evolution_path(run: &RunDir) -> std::path::PathBuf {
    run.root.join("fixed_samples.safetensors")
}

/// Adds this epoch's fixed-noise samples (when it is an evolution epoch),
/// drops rows past it (a resumed run), and redraws `images/evolution.png`.
fn update_evolution(run: &RunDir, epoch: usize, samples: &[f32]) -> Result<()> {
    let path = evolution_path(run);
    let mut ck = if path.exists() {
        Checkpoint::load(&path)?
    } else {
        Checkpoint::default()
    };
    ck.tensors.retain(|name, _| {
        name.strip_prefix("epoch_")
            .and_then(|e| e.parse::<usize>().ok())
            .is_some_and(|e| e < epoch)
    });
    if in_evolution(epoch) {
        ck.insert(
            &format!("epoch_{epoch:03}"),
            TensorData::new(vec![samples.len() / PIXELS, PIXELS], samples.to_vec()),
        );
    }
    ck.save(&path)?;
    let cols = samples.len() / PIXELS;
    let mut tiles = Vec::new();
    for t in ck.tensors.values() {
        tiles.extend(to_unit(&t.data));
    }
    let rows = ck.tensors.len();
    if rows > 0 {
        save_grid(&run.images().join("evolution.png"), &tiles, rows, cols)?;
    }
    Ok(())
}

impl Family for GanFamily {
    const NAME: &'static str = "gan";
    const SEED_PRESET: &'static str = "gan";
    type Config = GanConfig;

    fn train(
        ctx: &TrainContext,
        run_config: &RunConfig<GanConfig>,
        resume: Option<&Checkpoint>,
    ) -> Result<()> {
        let c = &run_config.model;
        let seed = run_config.seed;
        let device = ctx.device.clone();
        let (rule_d, rule_g) = rules(c);
        let (g_shape, d_shape) = shapes(c);
        let (gn, dn) = (g_shape.names(), d_shape.names());
        let (gn, dn): (Vec<&str>, Vec<&str>) = (
            gn.iter().map(String::as_str).collect(),
            dn.iter().map(String::as_str).collect(),
        );
        let (mut gan, mut opt_d, mut opt_g, epochs_done, batches_done, resumed_rng, partial, last) =
            match resume {
                Some(ck) => {
                    let parse = |key: &str| -> Result<usize> {
                        ck.meta(key)?
                            .parse()
                            .with_context(|| format!("checkpoint entry {key} is not a number"))
                    };
                    let gan = Gan::from_checkpoint(c, ck, &device).map_err(crate::error::usage)?;
                    let opt_d =
                        Optimizer::load(rule_d, ck, "optimizer_d", &dn, &d_shape.sizes(), &device)
                            .map_err(crate::error::usage)?;
                    let opt_g =
                        Optimizer::load(rule_g, ck, "optimizer_g", &gn, &g_shape.sizes(), &device)
                            .map_err(crate::error::usage)?;
                    let rng = match ck.metadata.get("genlab.rng") {
                        Some(json) => Some(serde_json::from_str::<RngState>(json)?.restore()?),
                        None => None,
                    };
                    let sums: Sums = serde_json::from_str(ck.meta("genlab.partial_sums")?)?;
                    let last: [f64; 2] = serde_json::from_str(ck.meta("genlab.last_losses")?)?;
                    (
                        gan,
                        opt_d,
                        opt_g,
                        parse("genlab.epoch")?,
                        parse("genlab.batch")?,
                        rng,
                        sums,
                        last,
                    )
                }
                None => {
                    let gan = Gan::init(c, seed, &device);
                    let opt_d = Optimizer::new(rule_d, &d_shape.sizes(), &device);
                    let opt_g = Optimizer::new(rule_g, &g_shape.sizes(), &device);
                    (gan, opt_d, opt_g, 0, 0, None, [0.0; 6], [f64::NAN; 2])
                }
            };
        ctx.run.metrics().truncate_to_epoch(epochs_done as u64)?;
        if resume.is_none() {
            println!(
                "GAN: generator {:?} ({} parameters), discriminator {:?} ({} parameters)",
                g_shape.widths,
                g_shape.parameter_count(),
                d_shape.widths,
                d_shape.parameter_count()
            );
        }
        // The fixed noise of the progress pictures, drawn once per run.
        let fixed_z = gan.noise(16, &mut stream(seed, Purpose::Fixed, 5));
        let train = &ctx.dataset.train;
        let mut xbuf = Vec::new();
        let skip_bad = run_config.on_nan == OnNan::SkipBatch;
        // The CPU fast path (GENLAB_CPU_KERNELS=0 forces burn's generic path).
        let mut fast = if run_config.device == crate::device::DeviceKind::Cpu
            && crate::cpu::kernels_enabled()
        {
            Some(HostGan::new(&gan, &opt_g, &opt_d, c.batch_size)?)
        } else {
            None
        };

        for epoch in epochs_done + 1..=c.epochs {
            let order = EpochOrder::new(train.len(), c.batch_size, false, true, seed, epoch as u32);
            let resuming = epoch == epochs_done + 1 && batches_done > 0;
            let skip = if resuming { batches_done } else { 0 };
            let mut rng = match (&resumed_rng, resuming) {
                (Some(r), true) => r.clone(),
                _ => stream(seed, Purpose::Train, epoch as u32),
            };
            let mut sums: Sums = if resuming { partial } else { [0.0; 6] };
            let mut last_losses = if resuming { last } else { [f64::NAN; 2] };
            let mut skipped = 0usize;
            let mut progress =
                EpochProgress::start(epoch, c.epochs, order.num_batches() - skip, ctx.interactive);
            for (b, idx) in order.batches().enumerate().skip(skip) {
                let rows = idx.len();
                fill_batch(train, idx, PixelView::Signed, &mut rng, &mut xbuf);
                let mut d_loss = f64::NAN;
                for _ in 0..c.d_steps {
                    // An update is good when its loss and gradients are finite and so
                    // are the parameters it leaves; a bad one is undone under skip-batch.
                    let (stats, good) = match fast.as_mut() {
                        Some(h) => {
                            let (stats, finite) = h.d_step(&gan, &xbuf, &mut rng);
                            (stats, finite && h.apply_d(skip_bad))
                        }
                        None => {
                            let (stats, finite, g) = burn_d_step(&gan, &xbuf, &mut rng)?;
                            let good =
                                finite && update_checked(&mut gan.d, &mut opt_d, g, skip_bad)?;
                            (stats, good)
                        }
                    };
                    if !good {
                        if skip_bad {
                            skipped += 1;
                            continue;
                        }
                        bail!(nan_message(ctx, epoch, b, "discriminator", stats[0]));
                    }
                    d_loss = stats[0];
                    sums[0] += d_loss;
                    sums[2] += stats[1];
                    sums[3] += stats[2];
                    sums[4] += 1.0;
                }
                // The generator's step sees the discriminator just updated.
                let (loss, good) = match fast.as_mut() {
                    Some(h) => {
                        let (loss, finite) = h.g_step(&gan, rows, &mut rng);
                        (loss, finite && h.apply_g(skip_bad))
                    }
                    None => {
                        let (loss, finite, g) = burn_g_step(&gan, rows, &mut rng)?;
                        let good = finite && update_checked(&mut gan.g, &mut opt_g, g, skip_bad)?;
                        (loss, good)
                    }
                };
                let mut g_loss = f64::NAN;
                if good {
                    g_loss = loss;
                    sums[1] += g_loss;
                    sums[5] += 1.0;
                } else if skip_bad {
                    skipped += 1;
                } else {
                    bail!(nan_message(ctx, epoch, b, "generator", loss));
                }
                last_losses = [d_loss, g_loss];
                progress.batch(rows, Some(g_loss));
                if (b + 1) % c.print_every == 0 {
                    // The seed's progress line.
                    progress.println(&format!(
                        "Epoch [{epoch:5}/{:5}] | d_loss: {d_loss:6.4} | g_loss: {g_loss:6.4}",
                        c.epochs
                    ));
                }
                if crate::interrupt::requested() && b + 1 < order.num_batches() {
                    if let Some(h) = &fast {
                        h.store(&mut gan, &mut opt_g, &mut opt_d);
                    }
                    let at = Position {
                        epochs_done: epoch - 1,
                        batches_done: b + 1,
                        rng: Some(&rng),
                        sums,
                        last: last_losses,
                    };
                    training_checkpoint(&gan, &opt_d, &opt_g, &at)?
                        .save(&ctx.run.latest_checkpoint())?;
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
                h.store(&mut gan, &mut opt_g, &mut opt_d);
            }
            let eval_start = Instant::now();
            if sums[4] == 0.0 || sums[5] == 0.0 {
                bail!(
                    "epoch {epoch}: every {} step of the epoch was skipped (a loss, gradient or parameter was NaN or infinite each time); training stopped and {}; lower model.lr_d / model.lr_g",
                    if sums[4] == 0.0 {
                        "discriminator"
                    } else {
                        "generator"
                    },
                    crate::models::kept_checkpoint(ctx)
                );
            }
            let (nd, ng) = (sums[4], sums[5]);
            let (dl, gl, dx, dgz) = (sums[0] / nd, sums[1] / ng, sums[2] / nd, sums[3] / nd);
            progress.finish(
                timing,
                &format!("d_loss {dl:.4}  g_loss {gl:.4}  D(x) {dx:.3}  D(G(z)) {dgz:.3}"),
            );
            let fixed = gan.generate(&fixed_z)?;
            save_grid(
                &ctx.run.images().join(format!("fixed_epoch_{epoch:03}.png")),
                &to_unit(&fixed),
                4,
                4,
            )?;
            save_grid(&ctx.run.images().join("fixed.png"), &to_unit(&fixed), 4, 4)?;
            update_evolution(&ctx.run, epoch, &fixed)?;

            let mut row = Map::new();
            row.insert("epoch".into(), json!(epoch));
            row.insert("seconds".into(), json!(timing.seconds));
            row.insert(
                "samples_per_second".into(),
                json!(timing.samples_per_second),
            );
            row.insert("d_loss".into(), json!(dl));
            row.insert("g_loss".into(), json!(gl));
            // A last step that was skipped has no loss: the key is left out, not null.
            for (key, v) in [
                ("d_loss_last", last_losses[0]),
                ("g_loss_last", last_losses[1]),
            ] {
                if v.is_finite() {
                    row.insert(key.into(), json!(v));
                }
            }
            row.insert("d_x".into(), json!(dx));
            row.insert("d_g_z".into(), json!(dgz));
            row.insert(
                "eval_seconds".into(),
                json!(eval_start.elapsed().as_secs_f64()),
            );
            if skip_bad {
                row.insert("skipped_steps".into(), json!(skipped));
            }
            let at = Position {
                epochs_done: epoch,
                batches_done: 0,
                rng: None,
                sums: [0.0; 6],
                last: last_losses,
            };
            let ck = training_checkpoint(&gan, &opt_d, &opt_g, &at)?;
            ctx.run.metrics().append(&row)?;
            ck.save(&ctx.run.latest_checkpoint())?;
            if crate::interrupt::requested() && epoch < c.epochs {
                return Err(crate::interrupt::Interrupted {
                    epoch,
                    batch: order.num_batches(),
                    run: ctx.run.root.display().to_string(),
                }
                .into());
            }
        }
        gan.to_checkpoint()?
            .save(&ctx.run.root.join("weights.safetensors"))?;
        let samples = gan.generate(&gan.noise(16, &mut stream(seed, Purpose::Sample, 0)))?;
        save_grid(
            &ctx.run.images().join("samples.png"),
            &to_unit(&samples),
            4,
            4,
        )?;
        plot_metrics(&ctx.run).context("drawing the loss curves")?;
        Ok(())
    }
}

/// Applies an update on the device with `opt`, as [`HostGan::apply_d`] on
/// the host: false when it made a parameter non-finite (judged from one value
/// read back, the sum of all parameters), the state before put back with
/// `undo`.
fn update_checked(
    params: &mut Vec<Tensor<1>>,
    opt: &mut Optimizer,
    grads: Vec<Tensor<1>>,
    undo: bool,
) -> Result<bool> {
    let before = undo.then(|| (params.clone(), opt.clone()));
    opt.update(params, grads);
    let total = params
        .iter()
        .map(|t| t.clone().sum())
        .reduce(|a, b| a + b)
        .expect("parameters");
    let finite = download(total)?.iter().all(|v| v.is_finite());
    if let (false, Some(b)) = (finite, before) {
        (*params, *opt) = b;
    }
    Ok(finite)
}

fn nan_message(ctx: &TrainContext, epoch: usize, b: usize, net: &str, loss: f64) -> String {
    let kept = crate::models::kept_checkpoint(ctx);
    format!(
        "epoch {epoch}, batch {}: the {net} loss or a gradient became NaN or infinite (loss {loss}); training stopped and {kept}; lower model.lr_d / model.lr_g or pass --on-nan skip-batch",
        b + 1
    )
}

/// D and G loss curves (PNG and SVG), and D's mean outputs.
pub fn plot_metrics(run: &RunDir) -> Result<()> {
    let log = run.metrics();
    let s = |key: &str, name: &str| -> Result<Series> {
        Ok(Series {
            name: name.into(),
            points: log.series(key)?,
        })
    };
    line_plot(
        &run.images().join("loss"),
        "GAN losses (mean over each epoch)",
        "epoch",
        "binary cross-entropy",
        &[s("d_loss", "discriminator")?, s("g_loss", "generator")?],
    )?;
    line_plot(
        &run.images().join("discriminator_outputs"),
        "Mean discriminator output",
        "epoch",
        "sigmoid(D)",
        &[s("d_x", "D(x), real")?, s("d_g_z", "D(G(z)), fake")?],
    )
}
