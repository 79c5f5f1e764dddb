//! Training a VAE: its step (one loss, on the CPU path or burn's autodiff)
//! for the shared training loop of [`crate::models::trainer`].

use super::figures::write_figures;
use super::host_network::HostNetworkVae;
use super::*;
use crate::models::trainer::{
    self, BatchAt, BatchDone, EpochEnd, Plan, Position, Step, non_finite,
};

/// The VAE family: `genlab train vae [--preset vae-2|vae-8|vae-16|conv-vae|...]`.
pub struct VaeFamily;

/// Sums of (loss, recon, kl, images) over an epoch's finished batches.
type Sums = [f64; 4];

/// The VAE's part of the training loop.
struct VaeStep<'a> {
    ctx: &'a TrainContext,
    config: &'a VaeConfig,
    seed: u64,
    net: VaeNet,
    vae: Vae,
    opt: Optimizer,
    /// The CPU executor's path (GENLAB_CPU_KERNELS=0 forces burn's
    /// generic path, for comparisons).
    fast: Option<HostNetworkVae>,
    /// Several posterior draws per image or IWAE (burn's path); `None`:
    /// the seed's one draw and the ELBO.
    draws: Option<DrawsLoss>,
    val_eps: Vec<f32>,
    prior_z: Vec<f32>,
    view: PixelView,
    skip_bad: bool,
    xbuf: Vec<f32>,
    eps: Vec<f32>,
    sums: Sums,
    /// The sums of the interrupted epoch a resumed run continues.
    resumed: Sums,
    best_val: f64,
}

impl VaeStep<'_> {
    /// Copies the fast path's parameters and optimiser state back.
    fn sync(&mut self) {
        if let Some(h) = &self.fast {
            h.store(&mut self.vae, &mut self.opt);
        }
    }
}

impl Step for VaeStep<'_> {
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
        self.sums = if resumed { self.resumed } else { [0.0; 4] };
    }

    fn batch(&mut self, at: BatchAt, idx: &[usize], rng: &mut GenRng) -> Result<BatchDone> {
        let config = self.config;
        let rows = idx.len();
        fill_batch(&self.ctx.dataset.train, idx, self.view, rng, &mut self.xbuf);
        self.eps.resize(rows * config.k * config.latent, 0.0);
        fill_standard_normal(rng, &mut self.eps);
        let ([loss, r, k], finite) = match (self.fast.as_mut(), self.draws) {
            // Only skip-batch must see a bad gradient before the update;
            // otherwise the update's own pass reports it (below).
            (Some(h), _) => {
                let ([r, k], finite) = h.forward_backward(
                    &self.xbuf,
                    &self.eps,
                    config.likelihood,
                    config.beta as f32,
                    self.skip_bad,
                );
                ([r + config.beta * k, r, k], finite)
            }
            (None, Some(draws)) => {
                let (stats, finite, g) =
                    burn_draws_step(&self.net, &self.vae, &self.xbuf, &self.eps, draws)?;
                if finite {
                    self.opt.update(&mut self.vae.params, g);
                }
                (stats, finite)
            }
            (None, None) => {
                let (stats, finite, g) = burn_step(
                    &self.net,
                    &self.vae,
                    &self.xbuf,
                    &self.eps,
                    config.likelihood,
                    config.beta as f32,
                )?;
                if finite {
                    self.opt.update(&mut self.vae.params, g);
                }
                (
                    [stats[0] + config.beta * stats[1], stats[0], stats[1]],
                    finite,
                )
            }
        };
        if !finite {
            if self.skip_bad {
                return Ok(BatchDone {
                    skipped: 1,
                    ..BatchDone::updated(rows, None)
                });
            }
            return Err(non_finite(
                self.ctx,
                at,
                &format!(
                    "the loss or a gradient became NaN or infinite (loss {:.4})",
                    loss / rows as f64
                ),
                "model.lr",
            ));
        }
        if let Some(h) = self.fast.as_mut()
            && !h.apply()
        {
            // The parameters in memory are spoilt, but the trainer stops
            // here and nothing is saved: the last checkpoint stays good.
            return Err(non_finite(
                self.ctx,
                at,
                "a gradient became NaN or infinite",
                "model.lr",
            ));
        }
        self.sums[0] += loss;
        self.sums[1] += r;
        self.sums[2] += k;
        self.sums[3] += rows as f64;
        Ok(BatchDone::updated(rows, Some(loss / rows as f64)))
    }

    fn checkpoint(&mut self, at: &Position) -> Result<Checkpoint> {
        self.sync();
        let mut ck = self.vae.to_checkpoint()?;
        self.opt.save(&mut ck, "optimizer", &self.vae.net.names())?;
        ck.set_meta("genlab.best_val_loss", self.best_val.to_string());
        let partial = if at.batches_done > 0 {
            self.sums
        } else {
            [0.0; 4]
        };
        ck.set_meta("genlab.partial_sums", serde_json::to_string(&partial)?);
        Ok(ck)
    }

    fn end_epoch(&mut self, epoch: usize, _skipped: usize, _batches: usize) -> Result<EpochEnd> {
        self.sync();
        let config = self.config;
        let [val, val_recon, val_kl] = match self.draws {
            // The same noise every epoch, drawn as the split is read.
            Some(draws) => self.vae.split_draws_terms(
                &self.ctx.dataset.test,
                draws,
                self.seed,
                &mut stream(self.seed, Purpose::Fixed, 2),
            )?,
            None => {
                let (r, k) = self.vae.split_loss_terms(
                    &self.ctx.dataset.test,
                    &self.val_eps,
                    config.likelihood,
                    self.seed,
                )?;
                [r + config.beta * k, r, k]
            }
        };
        if !val.is_finite() {
            bail!(
                "epoch {epoch}: the validation loss is {val}; the model diverged (lower model.lr); {}",
                crate::models::kept_checkpoint(self.ctx)
            );
        }
        let sums = self.sums;
        if sums[3] == 0.0 {
            bail!(
                "epoch {epoch}: every batch of the epoch was skipped (the loss or a gradient was NaN or infinite each time); training stopped and {}; lower model.lr",
                crate::models::kept_checkpoint(self.ctx)
            );
        }
        let n = sums[3];
        let (tl, tr, tk) = (sums[0] / n, sums[1] / n, sums[2] / n);
        let samples = self.vae.decode(&self.prior_z)?;
        save_grid(
            &self
                .ctx
                .run
                .images()
                .join(format!("samples_epoch_{epoch:03}.png")),
            &samples,
            self.vae.net.image,
            8,
            8,
        )?;
        let mut metrics = Map::new();
        metrics.insert("loss".into(), json!(tl));
        metrics.insert("recon".into(), json!(tr));
        metrics.insert("kl".into(), json!(tk));
        metrics.insert("val_loss".into(), json!(val));
        metrics.insert("val_recon".into(), json!(val_recon));
        metrics.insert("val_kl".into(), json!(val_kl));
        let improved = val < self.best_val;
        if improved {
            self.best_val = val;
        }
        Ok(EpochEnd {
            metrics,
            summary: if config.objective == Objective::Iwae {
                let k = config.k;
                format!(
                    "loss {tl:.3} (minus the IWAE bound, k = {k}; recon {tr:.3}, KL {tk:.3})  val {val:.3} (recon {val_recon:.3}, KL {val_kl:.3})"
                )
            } else if config.beta == 1.0 {
                format!(
                    "loss {tl:.3} (recon {tr:.3} + KL {tk:.3})  val {val:.3} (recon {val_recon:.3} + KL {val_kl:.3})"
                )
            } else {
                let b = config.beta;
                format!(
                    "loss {tl:.3} (recon {tr:.3} + {b} x KL {tk:.3})  val {val:.3} (recon {val_recon:.3} + {b} x KL {val_kl:.3})"
                )
            },
            improved,
        })
    }

    fn finish(&mut self) -> Result<()> {
        let run = &self.ctx.run;
        self.vae
            .to_checkpoint()?
            .save(&run.root.join("weights.safetensors"))?;
        write_figures(
            run,
            &self.vae,
            self.config,
            &self.ctx.dataset.test,
            self.seed,
        )
        .context("drawing the figures")
    }
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
        let image = ctx.dataset.image;
        if let Some(ck) = resume {
            super::super::check_image(ck, image, &ctx.dataset.name)?;
        }
        let net = VaeNet::from_config(config, image);
        let (names, sizes) = (net.names(), net.sizes());
        let (vae, opt, start, best_val, resumed) = match resume {
            Some(ck) => {
                let vae =
                    Vae::from_checkpoint(net.clone(), ck, &device).map_err(crate::error::usage)?;
                let opt = Optimizer::load(config.rule(), ck, "optimizer", &names, &sizes, &device)
                    .map_err(crate::error::usage)?;
                let partial: Sums = match ck.metadata.get("genlab.partial_sums") {
                    Some(s) => serde_json::from_str(s)?,
                    None => [0.0; 4],
                };
                let best = ck
                    .meta("genlab.best_val_loss")?
                    .parse()
                    .unwrap_or(f64::INFINITY);
                (vae, opt, Position::read(ck)?, best, partial)
            }
            None => {
                let vae = Vae::init(net.clone(), &mut stream(seed, Purpose::Init, 0), &device);
                let opt = Optimizer::new(config.rule(), &sizes, &device);
                (vae, opt, Position::default(), f64::INFINITY, [0.0; 4])
            }
        };
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
        let n_test = ctx.dataset.test.len();
        let draws = (config.k > 1 || config.objective == Objective::Iwae).then_some(DrawsLoss {
            likelihood: config.likelihood,
            objective: config.objective,
            k: config.k,
            beta: config.beta as f32,
        });
        let fast = if run_config.device == crate::device::DeviceKind::Cpu
            && crate::cpu::kernels_enabled()
            && draws.is_none()
        {
            Some(HostNetworkVae::new(&vae, &opt)?)
        } else {
            None
        };
        let mut step = VaeStep {
            ctx,
            config,
            seed,
            net,
            vae,
            opt,
            fast,
            draws,
            val_eps: if draws.is_none() {
                fixed_noise(seed, 2, n_test * config.latent)
            } else {
                Vec::new()
            },
            prior_z: fixed_noise(seed, 3, 64 * config.latent),
            view: config.train_view(),
            skip_bad: run_config.on_nan == OnNan::SkipBatch,
            xbuf: Vec::new(),
            eps: Vec::new(),
            sums: [0.0; 4],
            resumed,
            best_val,
        };
        let plan = Plan {
            seed,
            epochs: config.epochs,
            on_nan: run_config.on_nan,
        };
        trainer::run(ctx, plan, start, &mut step)
    }
}
