//! Training an RBM: its CD-k (or PCD-k) step with its schedule, per-epoch
//! metrics and figures, for the shared loop of [`crate::models::trainer`],
//! and [`TensorCd`], the parameters on a burn device updated through the
//! backend extension.

use super::*;
use crate::models::trainer::{
    self, BatchAt, BatchDone, EpochEnd, Plan, Position, Step, non_finite,
};

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
    test: &Split,
    pl_set: &[f32],
    train_subset: &[f32],
) -> Map<String, Value> {
    let fe_train = mean_free_energy_binarised(rbm, train_subset);
    // The test split 1,024 images at a time, never whole as f32 (the unit
    // view draws nothing from the stream).
    let (mut recon, mut fe) = (0.0f64, 0.0f64);
    let _ = for_each_chunk(
        test,
        PixelView::Unit,
        &mut stream(0, Purpose::Fixed, 0),
        1024,
        |v| {
            let n = (v.len() / rbm.visible) as f64;
            recon += rbm.reconstruction_error(v) * n;
            fe += mean_free_energy_binarised(rbm, v) * n;
            Ok::<(), std::convert::Infallible>(())
        },
    );
    let n_test = test.len().max(1) as f64;
    let fe_test = fe / n_test;
    let mut m = Map::new();
    m.insert("recon_error_test".into(), json!(recon / n_test));
    m.insert(
        "pseudo_likelihood_test".into(),
        json!(rbm.pseudo_likelihood(pl_set)),
    );
    m.insert("free_energy_train".into(), json!(fe_train));
    m.insert("free_energy_test".into(), json!(fe_test));
    m.insert("free_energy_gap".into(), json!(fe_test - fe_train));
    m
}

/// The mean free energy of `v`'s images rounded to {0, 1}, rounded 1,024
/// at a time (no copy of the whole set beside it).
fn mean_free_energy_binarised(rbm: &Rbm, v: &[f32]) -> f64 {
    let mut chunk = Vec::with_capacity(v.len().min(1024 * rbm.visible));
    let mut total = 0.0f64;
    for part in v.chunks(1024 * rbm.visible) {
        chunk.clear();
        chunk.extend(part.iter().map(|p| p.round()));
        total += rbm
            .free_energy(&chunk)
            .iter()
            .map(|&f| f as f64)
            .sum::<f64>();
    }
    total / (v.len() / rbm.visible).max(1) as f64
}

/// Normalises each of the first `n` hidden units' weight vectors to [0, 1]
/// (over all its channels together), one image-shaped tile each.
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
    let s = |key: &str, name: &str| log.named_series(key, name);
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

/// The weights and the optimiser state (velocities, persistent chains).
fn model_checkpoint(rbm: &Rbm, state: &RbmState, image: ImageShape) -> Checkpoint {
    let mut ck = rbm.to_checkpoint_for(image);
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
            TensorData::new(vec![chains.len() / rbm.hidden, rbm.hidden], chains.clone()),
        );
    }
    if let Some((visible, hidden)) = &state.offsets {
        ck.insert(
            "centring.visible",
            TensorData::new(vec![rbm.visible], visible.clone()),
        );
        ck.insert(
            "centring.hidden",
            TensorData::new(vec![rbm.hidden], hidden.clone()),
        );
    }
    ck
}

/// Restores the model and the optimiser state from a checkpoint.
fn restore(ck: &Checkpoint, config: &RbmConfig, image: ImageShape) -> Result<(Rbm, RbmState)> {
    let (nv, nh) = (image.pixels(), config.hidden);
    let rbm = Rbm::from_checkpoint(ck, nv, nh)?;
    let chains = if config.persistent {
        Some(
            ck.tensor("pcd.h", &[config.chain_count(), nh])?
                .data
                .clone(),
        )
    } else {
        None
    };
    let offsets = if config.centring {
        Some((
            ck.tensor("centring.visible", &[nv])?.data.clone(),
            ck.tensor("centring.hidden", &[nh])?.data.clone(),
        ))
    } else {
        None
    };
    let state = RbmState {
        vel_w: ck.tensor("velocity.W", &[nv, nh])?.data.clone(),
        vel_hb: ck.tensor("velocity.hb", &[nh])?.data.clone(),
        vel_vb: ck.tensor("velocity.vb", &[nv])?.data.clone(),
        chains,
        offsets,
    };
    Ok((rbm, state))
}

/// The RBM's part of the training loop: one CD-k (or PCD-k) update per
/// batch on the device, no autodiff.
struct RbmStep<'a> {
    ctx: &'a TrainContext,
    config: &'a RbmConfig,
    seed: u64,
    /// The host copy, brought up to date before checkpoints and figures.
    rbm: Rbm,
    state: RbmState,
    /// The parameters live on the device as tensors; the update is the
    /// backend extension (genlab's fused kernel on the CPU).
    on_device: TensorCd,
    skip_bad: bool,
    batches_per_epoch: usize,
    total_updates: usize,
    /// The learning rate of the last update.
    lr: f64,
    best_pl: f64,
    // Fixed sets for the per-epoch figures and metrics, chosen once per run.
    pl_set: Vec<f32>,
    train_subset: Vec<f32>,
    sample_start: Vec<f32>,
    side: usize,
}

impl RbmStep<'_> {
    fn sync(&mut self) -> Result<()> {
        self.on_device.download_into(&mut self.rbm, &mut self.state)
    }
}

impl Step for RbmStep<'_> {
    fn order(&self, epoch: usize) -> EpochOrder {
        let n = self.ctx.dataset.train.len();
        EpochOrder::new(
            n,
            self.config.batch_size,
            true,
            true,
            self.seed,
            epoch as u32,
        )
    }

    fn start_epoch(&mut self, _resumed: bool) {
        self.lr = self.config.lr;
    }

    fn batch(&mut self, at: BatchAt, idx: &[usize], rng: &mut GenRng) -> Result<BatchDone> {
        let config = self.config;
        self.lr = lr_at(
            config,
            (at.epoch - 1) * self.batches_per_epoch + at.batch,
            self.total_updates,
        );
        // Filled in place and handed to the tensor, which owns it.
        let visible = self.ctx.dataset.image.pixels();
        let mut batch = vec![0.0f32; config.batch_size * visible];
        // The Bernoulli view draws from the training generator before the
        // update does, so a resumed run draws the same pixels.
        fill_batch_slice(
            &self.ctx.dataset.train,
            idx,
            config.training_pixels.view(),
            rng,
            &mut batch,
        );
        let rule = UpdateRule {
            k: config.k,
            lr: self.lr as f32,
            momentum: config.momentum as f32,
            weight_decay: config.weight_decay as f32,
            negative_hidden: config.negative_hidden,
            offset_rate: config.offset_rate as f32,
        };
        // Undo copy for --on-nan skip-batch (a clone shares the buffers until
        // the update writes, which then copies).
        let backup = self.skip_bad.then(|| self.on_device.clone());
        let v0 = upload(batch, [config.batch_size, visible], &self.ctx.device);
        self.on_device.cd_update(v0, rule, rng);
        let mut skipped = 0;
        if !self.on_device.all_finite()? {
            match backup {
                Some(good) => {
                    self.on_device = good;
                    skipped = 1;
                }
                None => {
                    return Err(non_finite(
                        self.ctx,
                        at,
                        &format!(
                            "parameter W, hb or vb became NaN or infinite (lr {})",
                            self.lr
                        ),
                        "model.lr",
                    ));
                }
            }
        }
        Ok(BatchDone {
            skipped,
            ..BatchDone::updated(idx.len(), None)
        })
    }

    fn checkpoint(&mut self, _at: &Position) -> Result<Checkpoint> {
        self.sync()?;
        let mut ck = model_checkpoint(&self.rbm, &self.state, self.ctx.dataset.image);
        ck.set_meta("genlab.best_pseudo_likelihood", self.best_pl.to_string());
        Ok(ck)
    }

    fn end_epoch(&mut self, epoch: usize, skipped: usize, batches: usize) -> Result<EpochEnd> {
        self.sync()?;
        if skipped > 0 && skipped == batches {
            bail!(
                "epoch {epoch}: every batch of the epoch was skipped (a parameter became NaN or infinite each time); training stopped and {}; lower model.lr",
                crate::models::kept_checkpoint(self.ctx)
            );
        }
        let rbm = &self.rbm;
        let mut metrics = epoch_metrics(
            rbm,
            &self.ctx.dataset.test,
            &self.pl_set,
            &self.train_subset,
        );
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
        // The seed's figure: a Gibbs chain from the fixed training batch.
        let samples = rbm.gibbs_from_visible(
            &self.sample_start,
            self.config.sample_steps,
            &mut stream(self.seed, Purpose::Sample, epoch as u32),
        );
        let images = self.ctx.run.images();
        let (side, image) = (self.side, self.ctx.dataset.image);
        save_grid(
            &images.join(format!("samples_epoch_{epoch:03}.png")),
            &samples,
            image,
            side,
            side,
        )?;
        save_grid(&images.join("samples.png"), &samples, image, side, side)?;
        metrics.insert("lr".into(), json!(self.lr));
        let improved = pl > self.best_pl;
        if improved {
            self.best_pl = pl;
        }
        Ok(EpochEnd {
            metrics,
            summary,
            improved,
        })
    }

    fn finish(&mut self) -> Result<()> {
        let run = &self.ctx.run;
        let image = self.ctx.dataset.image;
        self.rbm
            .to_checkpoint_for(image)
            .save(&run.root.join("weights.safetensors"))?;
        save_grid(
            &run.images().join("filters.png"),
            &filter_tiles(&self.rbm, 100),
            image,
            10,
            10,
        )?;
        plot_metrics(run).context("drawing the metric plots")
    }
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
        let (rbm, state, start, best_pl) = match resume {
            Some(ck) => {
                let (rbm, state) =
                    restore(ck, config, ctx.dataset.image).map_err(crate::error::usage)?;
                let best = ck
                    .meta("genlab.best_pseudo_likelihood")
                    .map_err(crate::error::usage)?
                    .parse()
                    .unwrap_or(f64::NEG_INFINITY);
                let start = Position::read(ck).map_err(crate::error::usage)?;
                (rbm, state, start, best)
            }
            None => {
                let visible = ctx.dataset.image.pixels();
                let rbm = Rbm::init(visible, config.hidden, &mut stream(seed, Purpose::Init, 0));
                let state = rbm.new_state(config, &mut stream(seed, Purpose::Init, 1));
                (rbm, state, Position::default(), f64::NEG_INFINITY)
            }
        };
        // Fixed sets for the per-epoch figures and metrics, chosen once per run.
        let mut fixed_rng = stream(seed, Purpose::Fixed, 0);
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
        let mut on_device = TensorCd::upload(&rbm, &state, &ctx.device);
        on_device.composed = !crate::cpu::kernels_enabled();
        let mut step = RbmStep {
            ctx,
            config,
            seed,
            rbm,
            state,
            on_device,
            skip_bad: run_config.on_nan == OnNan::SkipBatch,
            batches_per_epoch,
            total_updates: batches_per_epoch * config.epochs,
            lr: config.lr,
            best_pl,
            pl_set,
            train_subset,
            sample_start,
            side,
        };
        let plan = Plan {
            seed,
            epochs: config.epochs,
            on_nan: run_config.on_nan,
        };
        trainer::run(ctx, plan, start, &mut step)
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
                offsets: match &state.offsets {
                    Some((v, h)) => Offsets::Centred {
                        visible: put(v, &[nv]),
                        hidden: put(h, &[nh]),
                    },
                    None => Offsets::Off,
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
        if let Offsets::Centred { visible, hidden } = &p.offsets {
            state.offsets = Some((get(visible)?, get(hidden)?));
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
