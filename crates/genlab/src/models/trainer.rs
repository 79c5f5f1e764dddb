//! The training loop, written once: epoch order, exact resume (epoch, batch
//! and RNG position), the NaN policy's bookkeeping, Ctrl-C checkpoints,
//! metrics.jsonl rows, latest and best checkpoints, progress. A family
//! supplies only its [`Step`]: one batch's update, its checkpoint contents,
//! its end-of-epoch figures and its final files.

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

use super::TrainContext;
use crate::config::OnNan;
use crate::data::batches::EpochOrder;
use crate::progress::{EpochProgress, EpochTiming};
use crate::rng::{GenRng, Purpose, RngState, stream};
use crate::run::Checkpoint;

/// Where a run's training stands, as every checkpoint records it.
#[derive(Debug, Clone, Default)]
pub struct Position {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Batches finished of the next epoch (0 at an epoch boundary).
    pub batches_done: usize,
    /// The batch stream's state inside an interrupted epoch.
    pub rng: Option<GenRng>,
}

impl Position {
    /// Reads the position of a checkpoint.
    pub fn read(ck: &Checkpoint) -> Result<Position> {
        let parse = |key: &str| -> Result<usize> {
            ck.meta(key)?
                .parse()
                .with_context(|| format!("checkpoint entry {key} is not a number"))
        };
        let rng = match ck.metadata.get("genlab.rng") {
            Some(json) => Some(serde_json::from_str::<RngState>(json)?.restore()?),
            None => None,
        };
        Ok(Position {
            epochs_done: parse("genlab.epoch")?,
            batches_done: parse("genlab.batch")?,
            rng,
        })
    }

    /// Records the position in a checkpoint.
    pub fn write(&self, ck: &mut Checkpoint) -> Result<()> {
        ck.set_meta("genlab.epoch", self.epochs_done.to_string());
        ck.set_meta("genlab.batch", self.batches_done.to_string());
        if let Some(rng) = &self.rng {
            ck.set_meta(
                "genlab.rng",
                serde_json::to_string(&RngState::capture(rng))?,
            );
        }
        Ok(())
    }
}

/// Which batch a step is on.
#[derive(Debug, Clone, Copy)]
pub struct BatchAt {
    pub epoch: usize,
    /// 0-based index in the epoch.
    pub batch: usize,
}

/// What one batch did.
#[derive(Debug, Clone)]
pub struct BatchDone {
    /// Images in the batch.
    pub rows: usize,
    /// The loss shown in the progress bar.
    pub loss: Option<f64>,
    /// Updates undone under `--on-nan skip-batch`.
    pub skipped: usize,
    /// A line to print above the progress bar.
    pub line: Option<String>,
}

impl BatchDone {
    /// A batch of `rows` images whose update went through.
    pub fn updated(rows: usize, loss: Option<f64>) -> Self {
        BatchDone {
            rows,
            loss,
            skipped: 0,
            line: None,
        }
    }
}

/// What the end of an epoch gave.
#[derive(Debug, Clone)]
pub struct EpochEnd {
    /// The family's columns of the metrics row.
    pub metrics: Map<String, Value>,
    /// The progress line's figures.
    pub summary: String,
    /// Whether the epoch beat the best so far (then it is saved as best).
    pub improved: bool,
}

/// A family's part of training.
pub trait Step {
    /// The epoch's batches (its order, batch size, drop-last).
    fn order(&self, epoch: usize) -> EpochOrder;
    /// A new epoch starts (`resumed`: inside an interrupted one, whose
    /// partial sums the step restored from the checkpoint).
    fn start_epoch(&mut self, resumed: bool);
    /// One batch: the update, or an error under `--on-nan stop` (see
    /// [`non_finite`]).
    fn batch(&mut self, at: BatchAt, indices: &[usize], rng: &mut GenRng) -> Result<BatchDone>;
    /// Model, optimiser state and the family's own metadata at `at`
    /// (the trainer adds the position).
    fn checkpoint(&mut self, at: &Position) -> Result<Checkpoint>;
    /// The epoch's figures, after its training time is taken; `skipped`
    /// counts its undone updates and `batches` the batches it ran.
    fn end_epoch(&mut self, epoch: usize, skipped: usize, batches: usize) -> Result<EpochEnd>;
    /// Writes the final weights and figures.
    fn finish(&mut self) -> Result<()>;
    /// The metrics column counting undone updates under skip-batch.
    fn skipped_key(&self) -> &'static str {
        "skipped_batches"
    }
}

/// The message of a non-finite update under `--on-nan stop`: `what` says
/// what became NaN or infinite, `lr` names the learning-rate keys to lower.
pub fn non_finite(ctx: &TrainContext, at: BatchAt, what: &str, lr: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "epoch {}, batch {}: {what}; training stopped and {}; lower {lr} or pass --on-nan skip-batch",
        at.epoch,
        at.batch + 1,
        super::kept_checkpoint(ctx)
    )
}

/// The training settings the trainer itself needs.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub seed: u64,
    pub epochs: usize,
    pub on_nan: OnNan,
}

fn interrupted(ctx: &TrainContext, epoch: usize, batch: usize) -> anyhow::Error {
    crate::interrupt::Interrupted {
        epoch,
        batch,
        run: ctx.run.root.display().to_string(),
    }
    .into()
}

fn save(step: &mut impl Step, at: &Position, path: &std::path::Path) -> Result<Checkpoint> {
    let mut ck = step.checkpoint(at)?;
    at.write(&mut ck)?;
    ck.save(path)?;
    Ok(ck)
}

/// Trains `step` from `start` (a fresh run: the default position) to
/// `plan.epochs`, then lets it write its final files.
pub fn run(ctx: &TrainContext, plan: Plan, start: Position, step: &mut impl Step) -> Result<()> {
    // Rows after the checkpoint (a crash after the metrics but before the
    // checkpoint, or a torn line) are dropped, so no epoch appears twice.
    ctx.run
        .metrics()
        .truncate_to_epoch(start.epochs_done as u64)?;
    for epoch in start.epochs_done + 1..=plan.epochs {
        let order = step.order(epoch);
        let resuming = epoch == start.epochs_done + 1 && start.batches_done > 0;
        let skip = if resuming { start.batches_done } else { 0 };
        let mut rng = match (&start.rng, resuming) {
            (Some(r), true) => r.clone(),
            _ => stream(plan.seed, Purpose::Train, epoch as u32),
        };
        step.start_epoch(resuming);
        let mut skipped = 0usize;
        let mut progress = EpochProgress::start(
            epoch,
            plan.epochs,
            order.num_batches() - skip,
            ctx.interactive,
        );
        for (b, idx) in order.batches().enumerate().skip(skip) {
            let done = step.batch(BatchAt { epoch, batch: b }, idx, &mut rng)?;
            skipped += done.skipped;
            progress.batch(done.rows, done.loss);
            if let Some(line) = &done.line {
                progress.println(line);
            }
            if crate::interrupt::requested() && b + 1 < order.num_batches() {
                let at = Position {
                    epochs_done: epoch - 1,
                    batches_done: b + 1,
                    rng: Some(rng),
                };
                save(step, &at, &ctx.run.latest_checkpoint())?;
                return Err(interrupted(ctx, epoch, b + 1));
            }
        }
        let timing: EpochTiming = progress.timing();
        let eval_start = std::time::Instant::now();
        let end = step.end_epoch(epoch, skipped, order.num_batches() - skip)?;
        progress.finish(timing, &end.summary);
        let mut row = Map::new();
        row.insert("epoch".into(), json!(epoch));
        row.insert("seconds".into(), json!(timing.seconds));
        row.insert(
            "samples_per_second".into(),
            json!(timing.samples_per_second),
        );
        row.insert(
            "eval_seconds".into(),
            json!(eval_start.elapsed().as_secs_f64()),
        );
        if plan.on_nan == OnNan::SkipBatch {
            row.insert(step.skipped_key().into(), json!(skipped));
        }
        row.extend(end.metrics);
        let at = Position {
            epochs_done: epoch,
            batches_done: 0,
            rng: None,
        };
        let mut ck = step.checkpoint(&at)?;
        at.write(&mut ck)?;
        // Metrics first, then the checkpoint: a crash between the two leaves
        // a row that resume drops, never a checkpoint without its row.
        ctx.run.metrics().append(&row)?;
        ck.save(&ctx.run.latest_checkpoint())?;
        if end.improved {
            ck.save(&ctx.run.best_checkpoint())?;
        }
        if crate::interrupt::requested() && epoch < plan.epochs {
            return Err(interrupted(ctx, epoch, order.num_batches()));
        }
    }
    step.finish()
}
