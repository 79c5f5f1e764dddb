//! Training an RBM: the CD-k (or PCD-k) loop with its schedule, per-epoch
//! metrics and figures, checkpoints and exact resume, and [`TensorCd`], the
//! parameters on a burn device updated through the backend extension.

use super::*;

/// The RBM family: `genlab train rbm`.
pub struct RbmFamily;

/// Learning rate at update `t` of `total`.
fn lr_at(config: &RbmConfig, t: usize, total: usize) -> f64 {
    match config.schedule {
        Schedule::Constant => config.lr,
        Schedule::Linear => {
            let frac = if total > 1 {
                t as f64 / (total - 1) as f64
            } else {
                0.0
            };
            config.lr + (config.lr_final - config.lr) * frac
        }
    }
}

/// What is measured after each epoch.
fn epoch_metrics(
    rbm: &Rbm,
    test: &[f32],
    pl_set: &[f32],
    train_subset: &[f32],
) -> Map<String, Value> {
    let fe_train = mean(&rbm.free_energy(&binarise(train_subset)));
    let fe_test = mean(&rbm.free_energy(&binarise(test)));
    let mut m = Map::new();
    m.insert(
        "recon_error_test".into(),
        json!(rbm.reconstruction_error(test)),
    );
    m.insert(
        "pseudo_likelihood_test".into(),
        json!(rbm.pseudo_likelihood(pl_set)),
    );
    m.insert("free_energy_train".into(), json!(fe_train));
    m.insert("free_energy_test".into(), json!(fe_test));
    m.insert("free_energy_gap".into(), json!(fe_test - fe_train));
    m
}

fn binarise(v: &[f32]) -> Vec<f32> {
    v.iter().map(|p| p.round()).collect()
}

fn mean(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64).sum::<f64>() / x.len().max(1) as f64
}

/// Normalises each of the first `n` hidden units' weight vectors to [0, 1] as 28x28 tiles.
pub fn filter_tiles(rbm: &Rbm, n: usize) -> Vec<f32> {
    let n = n.min(rbm.hidden);
    let mut out = Vec::with_capacity(n * rbm.visible);
    for j in 0..n {
        let col: Vec<f32> = (0..rbm.visible)
            .map(|i| rbm.w[i * rbm.hidden + j])
            .collect();
        let (lo, hi) = col
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        let span = (hi - lo).max(1e-12);
        out.extend(col.iter().map(|x| (x - lo) / span));
    }
    out
}

/// Writes the loss-curve style plots of an RBM run from its metrics log.
pub fn plot_metrics(run: &RunDir) -> Result<()> {
    let log = run.metrics();
    let s = |key: &str, name: &str| -> Result<Series> {
        Ok(Series {
            name: name.into(),
            points: log.series(key)?,
        })
    };
    line_plot(
        &run.images().join("free_energy"),
        "Mean free energy (binarised images)",
        "epoch",
        "free energy",
        &[
            s("free_energy_train", "train subset (1,000)")?,
            s("free_energy_test", "test")?,
        ],
    )?;
    line_plot(
        &run.images().join("pseudo_likelihood"),
        "Pseudo-likelihood per image (test)",
        "epoch",
        "nats",
        &[s("pseudo_likelihood_test", "pseudo-likelihood")?],
    )?;
    line_plot(
        &run.images().join("reconstruction_error"),
        "Mean-field reconstruction error (test)",
        "epoch",
        "mean squared error per pixel",
        &[s("recon_error_test", "reconstruction error")?],
    )
}

/// Writes the weights, the optimiser state and the training position.
/// `epochs_done` full epochs are finished, and `batches_done` batches of the
/// next one, whose training generator is then `rng`.
struct Position<'a> {
    epochs_done: usize,
    batches_done: usize,
    rng: Option<&'a GenRng>,
    best_pl: f64,
}

fn training_checkpoint(
    rbm: &Rbm,
    state: &RbmState,
    batch_size: usize,
    at: &Position,
) -> Result<Checkpoint> {
    let mut ck = rbm.to_checkpoint();
    ck.insert(
        "velocity.W",
        TensorData::new(vec![rbm.visible, rbm.hidden], state.vel_w.clone()),
    );
    ck.insert(
        "velocity.hb",
        TensorData::new(vec![rbm.hidden], state.vel_hb.clone()),
    );
    ck.insert(
        "velocity.vb",
        TensorData::new(vec![rbm.visible], state.vel_vb.clone()),
    );
    if let Some(chains) = &state.chains {
        ck.insert(
            "pcd.h",
            TensorData::new(vec![batch_size, rbm.hidden], chains.clone()),
        );
    }
    ck.set_meta("genlab.epoch", at.epochs_done.to_string());
    ck.set_meta("genlab.batch", at.batches_done.to_string());
    ck.set_meta("genlab.best_pseudo_likelihood", at.best_pl.to_string());
    if let Some(rng) = at.rng {
        ck.set_meta(
            "genlab.rng",
            serde_json::to_string(&RngState::capture(rng))?,
        );
    }
    Ok(ck)
}

/// Restores the model, the optimiser state and the position from a checkpoint.
fn restore(
    ck: &Checkpoint,
    config: &RbmConfig,
) -> Result<(Rbm, RbmState, usize, usize, Option<GenRng>, f64)> {
    let (nv, nh) = (PIXELS, config.hidden);
    let rbm = Rbm::from_checkpoint(ck, nv, nh)?;
    let chains = if config.persistent {
        Some(ck.tensor("pcd.h", &[config.batch_size, nh])?.data.clone())
    } else {
        None
    };
    let state = RbmState {
        vel_w: ck.tensor("velocity.W", &[nv, nh])?.data.clone(),
        vel_hb: ck.tensor("velocity.hb", &[nh])?.data.clone(),
        vel_vb: ck.tensor("velocity.vb", &[nv])?.data.clone(),
        chains,
    };
    let parse = |key: &str| -> Result<usize> {
        ck.meta(key)?
            .parse()
            .with_context(|| format!("checkpoint entry {key} is not a number"))
    };
    let rng = match ck.metadata.get("genlab.rng") {
        Some(json) => Some(serde_json::from_str::<RngState>(json)?.restore()?),
        None => None,
    };
    let best = ck
        .meta("genlab.best_pseudo_likelihood")?
        .parse()
        .unwrap_or(f64::NEG_INFINITY);
    Ok((
        rbm,
        state,
        parse("genlab.epoch")?,
        parse("genlab.batch")?,
        rng,
        best,
    ))
}

impl Family for RbmFamily {
    const NAME: &'static str = "rbm";
    const SEED_PRESET: &'static str = "rbm-500";
    type Config = RbmConfig;

    fn train(
        ctx: &TrainContext,
        run_config: &RunConfig<RbmConfig>,
        resume: Option<&Checkpoint>,
    ) -> Result<()> {
        let config = &run_config.model;
        let train = &ctx.dataset.train;
        let seed = run_config.seed;
        let (mut rbm, mut state, epochs_done, batches_done, resumed_rng, mut best_pl) = match resume
        {
            Some(ck) => restore(ck, config).map_err(crate::error::usage)?,
            None => {
                let rbm = Rbm::init(PIXELS, config.hidden, &mut stream(seed, Purpose::Init, 0));
                let state = rbm.new_state(config, &mut stream(seed, Purpose::Init, 1));
                (rbm, state, 0, 0, None, f64::NEG_INFINITY)
            }
        };
        // Rows after the checkpoint (a crash after the metrics but before the
        // checkpoint, or a torn line) are dropped, so no epoch appears twice.
        ctx.run.metrics().truncate_to_epoch(epochs_done as u64)?;

        // Fixed sets for the per-epoch figures and metrics, chosen once per run.
        let mut fixed_rng = stream(seed, Purpose::Fixed, 0);
        let test = split_to_f32(&ctx.dataset.test, PixelView::Unit, &mut fixed_rng);
        let pl_set = first_rows(&ctx.dataset.test, config.pl_images);
        let subset: Vec<usize> =
            rand::seq::index::sample(&mut fixed_rng, train.len(), 1000.min(train.len())).into_vec();
        let mut train_subset = Vec::new();
        fill_batch(
            train,
            &subset,
            PixelView::Unit,
            &mut fixed_rng,
            &mut train_subset,
        );
        let start_idx: Vec<usize> =
            rand::seq::index::sample(&mut fixed_rng, train.len(), 64.min(train.len())).into_vec();
        let mut sample_start = Vec::new();
        fill_batch(
            train,
            &start_idx,
            PixelView::Unit,
            &mut fixed_rng,
            &mut sample_start,
        );
        let side = (start_idx.len() as f64).sqrt().ceil() as usize;

        let batches_per_epoch = train.len() / config.batch_size;
        let total_updates = batches_per_epoch * config.epochs;
        // The Unit view draws nothing; the generator is only a formality.
        let mut no_rng = stream(seed, Purpose::Fixed, 1);
        // The parameters live on the device as tensors; the update is the
        // backend extension (genlab's fused kernel on the CPU).
        let mut on_device = TensorCd::upload(&rbm, &state, &ctx.device);
        on_device.composed = !crate::cpu::kernels_enabled();
        // Undo copy for --on-nan skip-batch (a clone shares the buffers until
        // the update writes, which then copies).
        let skip_bad = run_config.on_nan == OnNan::SkipBatch;
        let mut backup: Option<TensorCd> = None;
        for epoch in epochs_done + 1..=config.epochs {
            let order = EpochOrder::new(
                train.len(),
                config.batch_size,
                true,
                true,
                seed,
                epoch as u32,
            );
            let skip = if epoch == epochs_done + 1 {
                batches_done
            } else {
                0
            };
            let mut rng = match (&resumed_rng, skip) {
                (Some(r), s) if s > 0 => r.clone(),
                _ => stream(seed, Purpose::Train, epoch as u32),
            };
            let mut progress = EpochProgress::start(
                epoch,
                config.epochs,
                order.num_batches() - skip,
                ctx.interactive,
            );
            let mut lr = config.lr;
            let mut skipped = 0usize;
            for (b, idx) in order.batches().enumerate().skip(skip) {
                lr = lr_at(config, (epoch - 1) * batches_per_epoch + b, total_updates);
                // Filled in place and handed to the tensor, which owns it.
                let mut batch = vec![0.0f32; config.batch_size * PIXELS];
                fill_batch_slice(train, idx, PixelView::Unit, &mut no_rng, &mut batch);
                let rule = UpdateRule {
                    k: config.k,
                    lr: lr as f32,
                    momentum: config.momentum as f32,
                    weight_decay: config.weight_decay as f32,
                };
                if skip_bad {
                    backup = Some(on_device.clone());
                }
                let v0 = upload(batch, [config.batch_size, PIXELS], &ctx.device);
                on_device.cd_update(v0, rule, &mut rng);
                if !on_device.all_finite()? {
                    match backup.take() {
                        Some(good) => {
                            on_device = good;
                            skipped += 1;
                        }
                        None => {
                            let kept = crate::models::kept_checkpoint(ctx);
                            bail!(
                                "epoch {epoch}, batch {}: parameter W, hb or vb became NaN or infinite (lr {lr}); training stopped and {kept}; lower model.lr or pass --on-nan skip-batch",
                                b + 1
                            )
                        }
                    }
                }
                progress.batch(idx.len(), None);
                if crate::interrupt::requested() && b + 1 < order.num_batches() {
                    on_device.download_into(&mut rbm, &mut state)?;
                    let at = Position {
                        epochs_done: epoch - 1,
                        batches_done: b + 1,
                        rng: Some(&rng),
                        best_pl,
                    };
                    training_checkpoint(&rbm, &state, config.batch_size, &at)?
                        .save(&ctx.run.latest_checkpoint())?;
                    return Err(crate::interrupt::Interrupted {
                        epoch,
                        batch: b + 1,
                        run: ctx.run.root.display().to_string(),
                    }
                    .into());
                }
            }
            on_device.download_into(&mut rbm, &mut state)?;
            if skipped > 0 && skipped == order.num_batches() - skip {
                bail!(
                    "epoch {epoch}: every batch of the epoch was skipped (a parameter became NaN or infinite each time); training stopped and {}; lower model.lr",
                    crate::models::kept_checkpoint(ctx)
                );
            }
            let timing = progress.timing();
            let eval_start = std::time::Instant::now();
            let metrics = epoch_metrics(&rbm, &test, &pl_set, &train_subset);
            let pl = metrics["pseudo_likelihood_test"]
                .as_f64()
                .unwrap_or(f64::NAN);
            let summary = format!(
                "recon {:.5}  PL {:.2}  F train {:.2} test {:.2}",
                metrics["recon_error_test"].as_f64().unwrap_or(f64::NAN),
                pl,
                metrics["free_energy_train"].as_f64().unwrap_or(f64::NAN),
                metrics["free_energy_test"].as_f64().unwrap_or(f64::NAN),
            );
            progress.finish(timing, &summary);

            // The seed's figure: a Gibbs chain from the fixed training batch.
            let samples = rbm.gibbs_from_visible(
                &sample_start,
                config.sample_steps,
                &mut stream(seed, Purpose::Sample, epoch as u32),
            );
            save_grid(
                &ctx.run
                    .images()
                    .join(format!("samples_epoch_{epoch:03}.png")),
                &samples,
                side,
                side,
            )?;
            save_grid(&ctx.run.images().join("samples.png"), &samples, side, side)?;

            let mut row = Map::new();
            row.insert("epoch".into(), json!(epoch));
            row.insert("seconds".into(), json!(timing.seconds));
            row.insert(
                "samples_per_second".into(),
                json!(timing.samples_per_second),
            );
            row.insert("lr".into(), json!(lr));
            row.insert(
                "eval_seconds".into(),
                json!(eval_start.elapsed().as_secs_f64()),
            );
            if run_config.on_nan == OnNan::SkipBatch {
                row.insert("skipped_batches".into(), json!(skipped));
            }
            row.extend(metrics);

            let improved = pl > best_pl;
            if improved {
                best_pl = pl;
            }
            let at = Position {
                epochs_done: epoch,
                batches_done: 0,
                rng: None,
                best_pl,
            };
            let ck = training_checkpoint(&rbm, &state, config.batch_size, &at)?;
            // Metrics first, then the checkpoint: a crash between the two leaves
            // a row that resume drops, never a checkpoint without its row.
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
        rbm.to_checkpoint()
            .save(&ctx.run.root.join("weights.safetensors"))?;
        save_grid(
            &ctx.run.images().join("filters.png"),
            &filter_tiles(&rbm, 100),
            10,
            10,
        )?;
        plot_metrics(&ctx.run).context("drawing the metric plots")?;
        Ok(())
    }
}

/// The RBM's parameters and optimiser state as tensors on a burn device,
/// updated by the backend extension [`ContrastiveDivergence`]: on the CPU
/// (`Flex`) genlab's fused host kernel runs in place on the tensors'
/// buffers, on the GPU backends the same update composed of burn's tensor
/// operations. Both draw the same uniforms from the same keys, so they run
/// the same chains up to the rounding of their matrix products.
#[derive(Clone)]
pub struct TensorCd {
    /// `None` only while an update holds the tensors.
    params: Option<CdTensors<Dispatch>>,
    /// Run the composed tensor operations even where the backend has a
    /// kernel of its own (`GENLAB_CPU_KERNELS=0`, and tests comparing them).
    pub composed: bool,
}

impl TensorCd {
    /// Copies the parameters and the optimiser state to `device`.
    pub fn upload(rbm: &Rbm, state: &RbmState, device: &Device) -> Self {
        let (nv, nh) = (rbm.visible, rbm.hidden);
        let put = |data: &[f32], shape: &[usize]| match shape {
            [n] => upload(data.to_vec(), [*n], device).into_dispatch(),
            [r, c] => upload(data.to_vec(), [*r, *c], device).into_dispatch(),
            _ => unreachable!("RBM tensors are vectors or matrices"),
        };
        TensorCd {
            params: Some(CdTensors {
                w: put(&rbm.w, &[nv, nh]),
                hb: put(&rbm.hb, &[nh]),
                vb: put(&rbm.vb, &[nv]),
                vel_w: put(&state.vel_w, &[nv, nh]),
                vel_hb: put(&state.vel_hb, &[nh]),
                vel_vb: put(&state.vel_vb, &[nv]),
                chains: match &state.chains {
                    Some(c) => Chains::Persistent(put(c, &[c.len() / nh, nh])),
                    None => Chains::Fresh,
                },
            }),
            composed: false,
        }
    }

    fn params(&self) -> &CdTensors<Dispatch> {
        self.params
            .as_ref()
            .expect("RBM tensors present between updates")
    }

    /// Writes the parameters and the optimiser state back to the host.
    pub fn download_into(&self, rbm: &mut Rbm, state: &mut RbmState) -> Result<()> {
        let p = self.params();
        let get = |t: &FloatTensor<Dispatch>| download(Tensor::<1>::from_dispatch(t.clone()));
        let get2 = |t: &FloatTensor<Dispatch>| download(Tensor::<2>::from_dispatch(t.clone()));
        rbm.w = get2(&p.w)?;
        rbm.hb = get(&p.hb)?;
        rbm.vb = get(&p.vb)?;
        state.vel_w = get2(&p.vel_w)?;
        state.vel_hb = get(&p.vel_hb)?;
        state.vel_vb = get(&p.vel_vb)?;
        if let Chains::Persistent(c) = &p.chains {
            state.chains = Some(get2(c)?);
        }
        Ok(())
    }

    /// Whether the parameters stayed usable: one sum read back, finite
    /// exactly when no value is NaN or infinite and the values do not overflow
    /// f32 together (weights that large count as diverged too).
    pub fn all_finite(&self) -> Result<bool> {
        let p = self.params();
        let total = Tensor::<2>::from_dispatch(p.w.clone()).sum()
            + Tensor::<1>::from_dispatch(p.hb.clone()).sum()
            + Tensor::<1>::from_dispatch(p.vb.clone()).sum();
        Ok(download(total)?.iter().all(|v| v.is_finite()))
    }

    /// [`Rbm::cd_update`] on the batch `v0` (B x V), drawing the same keys
    /// from `rng`.
    pub fn cd_update(&mut self, v0: Tensor<2>, rule: UpdateRule, rng: &mut GenRng) {
        let keys: Vec<u64> = (0..rule.cd_keys()).map(|_| rng.next_u64()).collect();
        let params = self.params.take().expect("RBM tensors present");
        let v0 = v0.into_dispatch();
        self.params = Some(if self.composed {
            composed_cd_update::<Dispatch>(params, v0, rule, &keys)
        } else {
            <Dispatch as ContrastiveDivergence>::contrastive_divergence(params, v0, rule, keys)
        });
    }
}
