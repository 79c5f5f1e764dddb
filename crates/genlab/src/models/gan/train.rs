//! Training the GAN: the custom loop of D and G steps with their two
//! optimisers, the NaN policy, checkpoints and exact resume, the fixed-noise
//! evolution and the loss curves.

use super::*;
use crate::models::trainer::{
    self, BatchAt, BatchDone, EpochEnd, Plan, Position, Step, non_finite,
};

/// The GAN family: `genlab train gan`.
pub struct GanFamily;

/// Sums over an epoch: d_loss, g_loss, D(x), D(G(z)), d steps, g steps.
type Sums = [f64; 6];

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
fn update_evolution(run: &RunDir, epoch: usize, samples: &[f32], image: ImageShape) -> Result<()> {
    let per = image.pixels();
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
            TensorData::new(vec![samples.len() / per, per], samples.to_vec()),
        );
    }
    ck.save(&path)?;
    let cols = samples.len() / per;
    let mut tiles = Vec::new();
    for t in ck.tensors.values() {
        tiles.extend(to_unit(&t.data));
    }
    let rows = ck.tensors.len();
    if rows > 0 {
        save_grid(
            &run.images().join("evolution.png"),
            &tiles,
            image,
            rows,
            cols,
        )?;
    }
    Ok(())
}

/// The GAN's part of the training loop: per batch, `d_steps` discriminator
/// steps and one generator step, each with its own optimiser.
struct GanStep<'a> {
    ctx: &'a TrainContext,
    config: &'a GanConfig,
    seed: u64,
    gan: Gan,
    opt_d: Optimizer,
    opt_g: Optimizer,
    /// The CPU fast path (GENLAB_CPU_KERNELS=0 forces burn's generic path).
    fast: Option<HostGan>,
    /// The fixed noise of the progress pictures, drawn once per run.
    fixed_z: Vec<f32>,
    skip_bad: bool,
    xbuf: Vec<f32>,
    sums: Sums,
    /// The last batch's (d, g) losses.
    last: [f64; 2],
    /// The sums and last losses of the interrupted epoch a resumed run continues.
    resumed: (Sums, [f64; 2]),
}

impl GanStep<'_> {
    /// Copies the fast path's parameters and optimiser states back.
    fn sync(&mut self) {
        if let Some(h) = &self.fast {
            h.store(&mut self.gan, &mut self.opt_g, &mut self.opt_d);
        }
    }

    fn non_finite(&self, at: BatchAt, net: &str, loss: f64) -> anyhow::Error {
        non_finite(
            self.ctx,
            at,
            &format!("the {net} loss or a gradient became NaN or infinite (loss {loss})"),
            "model.lr_d / model.lr_g",
        )
    }
}

impl Step for GanStep<'_> {
    fn order(&self, epoch: usize) -> EpochOrder {
        let n = self.ctx.dataset.train.len();
        EpochOrder::new(
            n,
            self.config.batch_size,
            false,
            true,
            self.seed,
            epoch as u32,
        )
    }

    fn start_epoch(&mut self, resumed: bool) {
        (self.sums, self.last) = if resumed {
            self.resumed
        } else {
            ([0.0; 6], [f64::NAN; 2])
        };
    }

    fn batch(&mut self, at: BatchAt, idx: &[usize], rng: &mut GenRng) -> Result<BatchDone> {
        let c = self.config;
        let rows = idx.len();
        let skip_bad = self.skip_bad;
        let mut skipped = 0;
        fill_batch(
            &self.ctx.dataset.train,
            idx,
            PixelView::Signed,
            rng,
            &mut self.xbuf,
        );
        let mut d_loss = f64::NAN;
        for _ in 0..c.d_steps {
            // An update is good when its loss and gradients are finite and so
            // are the parameters it leaves; a bad one is undone under skip-batch.
            let (stats, good) = match self.fast.as_mut() {
                Some(h) => {
                    let (stats, finite) = h.d_step(&self.gan, &self.xbuf, rng);
                    (stats, finite && h.apply_d(skip_bad))
                }
                None => {
                    let (stats, finite, g) = burn_d_step(&self.gan, &self.xbuf, rng)?;
                    let good =
                        finite && update_checked(&mut self.gan.d, &mut self.opt_d, g, skip_bad)?;
                    (stats, good)
                }
            };
            if !good {
                if skip_bad {
                    skipped += 1;
                    continue;
                }
                return Err(self.non_finite(at, "discriminator", stats[0]));
            }
            d_loss = stats[0];
            self.sums[0] += d_loss;
            self.sums[2] += stats[1];
            self.sums[3] += stats[2];
            self.sums[4] += 1.0;
        }
        // The generator's step sees the discriminator just updated.
        let (loss, good) = match self.fast.as_mut() {
            Some(h) => {
                let (loss, finite) = h.g_step(&self.gan, rows, rng);
                (loss, finite && h.apply_g(skip_bad))
            }
            None => {
                let (loss, finite, g) = burn_g_step(&self.gan, rows, rng)?;
                let good = finite && update_checked(&mut self.gan.g, &mut self.opt_g, g, skip_bad)?;
                (loss, good)
            }
        };
        let mut g_loss = f64::NAN;
        if good {
            g_loss = loss;
            self.sums[1] += g_loss;
            self.sums[5] += 1.0;
        } else if skip_bad {
            skipped += 1;
        } else {
            return Err(self.non_finite(at, "generator", loss));
        }
        self.last = [d_loss, g_loss];
        // The seed's progress line.
        let line = (at.batch + 1).is_multiple_of(c.print_every).then(|| {
            format!(
                "Epoch [{:5}/{:5}] | d_loss: {d_loss:6.4} | g_loss: {g_loss:6.4}",
                at.epoch, c.epochs
            )
        });
        Ok(BatchDone {
            rows,
            loss: Some(g_loss),
            skipped,
            line,
        })
    }

    fn checkpoint(&mut self, at: &Position) -> Result<Checkpoint> {
        self.sync();
        let gan = &self.gan;
        let mut ck = gan.to_checkpoint()?;
        let (gn, dn) = (param_names(&gan.g_net), param_names(&gan.d_net));
        self.opt_g.save(&mut ck, "optimizer_g", &gn)?;
        self.opt_d.save(&mut ck, "optimizer_d", &dn)?;
        let partial = if at.batches_done > 0 {
            self.sums
        } else {
            [0.0; 6]
        };
        ck.set_meta("genlab.partial_sums", serde_json::to_string(&partial)?);
        ck.set_meta("genlab.last_losses", serde_json::to_string(&self.last)?);
        Ok(ck)
    }

    fn end_epoch(&mut self, epoch: usize, _skipped: usize, _batches: usize) -> Result<EpochEnd> {
        self.sync();
        let sums = self.sums;
        if sums[4] == 0.0 || sums[5] == 0.0 {
            bail!(
                "epoch {epoch}: every {} step of the epoch was skipped (a loss, gradient or parameter was NaN or infinite each time); training stopped and {}; lower model.lr_d / model.lr_g",
                if sums[4] == 0.0 {
                    "discriminator"
                } else {
                    "generator"
                },
                crate::models::kept_checkpoint(self.ctx)
            );
        }
        let (nd, ng) = (sums[4], sums[5]);
        let (dl, gl, dx, dgz) = (sums[0] / nd, sums[1] / ng, sums[2] / nd, sums[3] / nd);
        let run = &self.ctx.run;
        let fixed = self.gan.generate(&self.fixed_z)?;
        let image = self.gan.image;
        save_grid(
            &run.images().join(format!("fixed_epoch_{epoch:03}.png")),
            &to_unit(&fixed),
            image,
            4,
            4,
        )?;
        save_grid(
            &run.images().join("fixed.png"),
            &to_unit(&fixed),
            image,
            4,
            4,
        )?;
        update_evolution(run, epoch, &fixed, image)?;
        let mut metrics = Map::new();
        metrics.insert("d_loss".into(), json!(dl));
        metrics.insert("g_loss".into(), json!(gl));
        // A last step that was skipped has no loss: the key is left out, not null.
        for (key, v) in [("d_loss_last", self.last[0]), ("g_loss_last", self.last[1])] {
            if v.is_finite() {
                metrics.insert(key.into(), json!(v));
            }
        }
        metrics.insert("d_x".into(), json!(dx));
        metrics.insert("d_g_z".into(), json!(dgz));
        Ok(EpochEnd {
            metrics,
            summary: format!("d_loss {dl:.4}  g_loss {gl:.4}  D(x) {dx:.3}  D(G(z)) {dgz:.3}"),
            // The GAN has no validation figure, so no best checkpoint.
            improved: false,
        })
    }

    fn finish(&mut self) -> Result<()> {
        let run = &self.ctx.run;
        self.gan
            .to_checkpoint()?
            .save(&run.root.join("weights.safetensors"))?;
        let noise = self
            .gan
            .noise(16, &mut stream(self.seed, Purpose::Sample, 0));
        let samples = self.gan.generate(&noise)?;
        save_grid(
            &run.images().join("samples.png"),
            &to_unit(&samples),
            self.gan.image,
            4,
            4,
        )?;
        plot_metrics(run).context("drawing the loss curves")
    }

    fn skipped_key(&self) -> &'static str {
        "skipped_steps"
    }
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
        let image = ctx.dataset.image;
        if let Some(ck) = resume {
            crate::models::check_image(ck, image, &ctx.dataset.name)?;
        }
        let (g_net, d_net) = networks(c, image).map_err(crate::error::usage)?;
        let (gn, dn) = (param_names(&g_net), param_names(&d_net));
        let (gan, opt_d, opt_g, start, resumed) = match resume {
            Some(ck) => {
                let gan = Gan::from_checkpoint(c, ck, &device).map_err(crate::error::usage)?;
                let opt_d = Optimizer::load(
                    rule_d,
                    ck,
                    "optimizer_d",
                    &dn,
                    &param_sizes(&d_net),
                    &device,
                )
                .map_err(crate::error::usage)?;
                let opt_g = Optimizer::load(
                    rule_g,
                    ck,
                    "optimizer_g",
                    &gn,
                    &param_sizes(&g_net),
                    &device,
                )
                .map_err(crate::error::usage)?;
                let sums: Sums = serde_json::from_str(ck.meta("genlab.partial_sums")?)?;
                let last: [f64; 2] = serde_json::from_str(ck.meta("genlab.last_losses")?)?;
                (gan, opt_d, opt_g, Position::read(ck)?, (sums, last))
            }
            None => {
                let gan = Gan::init(c, image, seed, &device).map_err(crate::error::usage)?;
                let opt_d = Optimizer::new(rule_d, &param_sizes(&d_net), &device);
                let opt_g = Optimizer::new(rule_g, &param_sizes(&g_net), &device);
                (
                    gan,
                    opt_d,
                    opt_g,
                    Position::default(),
                    ([0.0; 6], [f64::NAN; 2]),
                )
            }
        };
        if resume.is_none() {
            println!(
                "GAN: generator {:?} ({} parameters), discriminator {:?} ({} parameters)",
                g_net.dense_widths(),
                param_sizes(&g_net).iter().sum::<usize>(),
                d_net.dense_widths(),
                param_sizes(&d_net).iter().sum::<usize>()
            );
        }
        let fixed_z = gan.noise(16, &mut stream(seed, Purpose::Fixed, 5));
        let fast = if run_config.device == crate::device::DeviceKind::Cpu
            && crate::cpu::kernels_enabled()
        {
            Some(HostGan::new(&gan, &opt_g, &opt_d, c.batch_size)?)
        } else {
            None
        };
        let mut step = GanStep {
            ctx,
            config: c,
            seed,
            gan,
            opt_d,
            opt_g,
            fast,
            fixed_z,
            skip_bad: run_config.on_nan == OnNan::SkipBatch,
            xbuf: Vec::new(),
            sums: [0.0; 6],
            last: [f64::NAN; 2],
            resumed,
        };
        let plan = Plan {
            seed,
            epochs: c.epochs,
            on_nan: run_config.on_nan,
        };
        trainer::run(ctx, plan, start, &mut step)
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

/// D and G loss curves (PNG and SVG), and D's mean outputs.
pub fn plot_metrics(run: &RunDir) -> Result<()> {
    let log = run.metrics();
    let s = |key: &str, name: &str| log.named_series(key, name);
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
