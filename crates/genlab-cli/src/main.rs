//! The `genlab` command line: a thin layer over the `genlab` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use genlab::config::Overrides;
use genlab::data::DatasetName;
use genlab::device::DeviceKind;
use genlab::models::rbm::ChainStart;
use genlab::models::{self, TrainRequest};
use genlab::presets::PRESETS;

mod eval_command;

#[derive(Parser)]
#[command(
    name = "genlab",
    version,
    about = "Train, sample, inspect and evaluate classic deep generative models on MNIST-style images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model: creates a run directory with config, metrics, checkpoints and images.
    Train(TrainArgs),
    /// Draw samples from a trained run (RBM: Gibbs chains) into a PNG grid.
    Sample(SampleArgs),
    /// Remove part of test digits' ink and let the model fill it in; prints the error on removed pixels.
    Inpaint(InpaintArgs),
    /// Measure a trained run (RBM: log Z by AIS, exact for small H, test log-likelihood, RAISE beside it); writes eval.json.
    Eval(eval_command::EvalArgs),
    /// One table across runs (model, preset, epochs, training time, every metric from eval.json), as Markdown and CSV.
    Compare(CompareArgs),
    /// Train, evaluate and report every seed preset of SPEC.md in one directory (reuses finished runs).
    Reproduce(ReproduceArgs),
    /// A static, self-contained HTML report of runs (index.html plus the pictures it shows).
    Report(ReportArgs),
    /// Many runs from one sweep file (presets x grid x seeds), on this machine or as a Slurm job array.
    Sweep(SweepArgs),
    /// List every preset with a one-line description.
    Presets,
    /// Datasets: where they are found and what they hold.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// The evaluator network behind the sample-quality metrics.
    Evaluator {
        #[command(subcommand)]
        command: EvaluatorCommand,
    },
}

#[derive(Args)]
struct CompareArgs {
    /// Run directories.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Directory for compare.md and compare.csv (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
}

#[derive(Args)]
struct ReproduceArgs {
    /// One epoch of each preset on the first 10,000 training and 1,000 test images, with a lighter
    /// evaluation: a few minutes instead of about an hour.
    #[arg(long)]
    quick: bool,
    /// Only these model families or seed presets, comma-separated (e.g. rbm,vae or vae-2,gan).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    only: Vec<String>,
    /// Output directory (default: runs/reproduce, or runs/reproduce-quick with --quick).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seed of every run and evaluation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// mnist (the SPEC's figures are for it), fashion-mnist, or idx:DIR.
    #[arg(long, value_parser = parse_dataset)]
    dataset: Option<DatasetName>,
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ReportArgs {
    /// Run directories (with --serve and none given: serve the report already in --out).
    runs: Vec<PathBuf>,
    /// Report directory (replaced if it holds an earlier genlab report).
    #[arg(long, value_name = "DIR", default_value = "report")]
    out: PathBuf,
    /// Then serve it on 127.0.0.1 until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// Port for --serve (0: any free port).
    #[arg(long, default_value_t = 8000, requires = "serve")]
    port: u16,
    /// Title of the page.
    #[arg(long, default_value = "genlab report")]
    title: String,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SweepArgs {
    #[command(subcommand)]
    command: Option<SweepCommand>,
    /// The sweep file (see the README's Sweeps section).
    #[arg(required = true, value_name = "SWEEP.toml")]
    file: Option<PathBuf>,
    /// Sweep directory (default: sweeps/<file name without .toml>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// local: run here; slurm: write an sbatch script for one job array (and submit it with --submit).
    #[arg(long, default_value = "local", value_parser = ["local", "slurm"])]
    executor: String,
    /// Local executor: runs at a time (their threads share the cores; default: the file's local.jobs, or 1).
    #[arg(long, value_name = "N", conflicts_with = "submit")]
    jobs: Option<usize>,
    /// Print the runs and their states; start nothing, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Slurm: submit the script with sbatch and print the job id (implies --executor slurm).
    #[arg(long)]
    submit: bool,
    /// Run one task (a run by its index) of a sweep directory made before: what each Slurm array task runs.
    #[arg(long, value_name = "INDEX", conflicts_with_all = ["submit", "dry_run", "jobs"])]
    task: Option<usize>,
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum SweepCommand {
    /// Where every run of a sweep directory stands (and its Slurm tasks, where squeue answers).
    Status {
        /// The sweep directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum EvaluatorCommand {
    /// Train the evaluator CNN with its fixed recipe on a dataset's training set.
    Train(EvaluatorTrainArgs),
}

#[derive(Args)]
struct EvaluatorTrainArgs {
    /// A labelled dataset, named as for `genlab train --dataset`.
    #[arg(long, default_value = "mnist", value_parser = parse_dataset)]
    dataset: DatasetName,
    /// A data option, as in the runs the evaluator is for (repeatable): --set data.resize=[32,32], ...
    #[arg(long = "set", value_name = "data.KEY=VALUE")]
    set: Vec<String>,
    /// Where the weights go (default: evaluator-<dataset>.safetensors).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Print where a dataset was found, counts per split and class, and the pixel mean.
    Info(DataArgs),
}

#[derive(Args)]
struct DataArgs {
    /// mnist, fashion-mnist, cifar10, idx:DIR, folder:DIR, npy:IMAGES.npy[,LABELS.npy], npz:FILE.npz or cifar10:DIR.
    #[arg(long, default_value = "mnist", value_parser = parse_dataset)]
    dataset: DatasetName,
    /// Look here first (the directory itself or its <dataset>/ subdirectory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A data option, as in a run's config (repeatable): --set data.resize=[32,32], data.grey=true, ...
    #[arg(long = "set", value_name = "data.KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct TrainArgs {
    /// Model family to train.
    model: Option<String>,
    /// Continue an interrupted run from its latest checkpoint (with --epochs: train it further).
    #[arg(long, value_name = "RUN")]
    resume: Option<PathBuf>,
    /// Preset to start from (default: the model's seed preset). See `genlab presets`.
    #[arg(long)]
    preset: Option<String>,
    /// A TOML file with the same schema as a run's config.toml (any subset of keys).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Number of training epochs.
    #[arg(long)]
    epochs: Option<u64>,
    /// Seed of every random draw of the run.
    #[arg(long)]
    seed: Option<u64>,
    /// Run directory (default: runs/<model>-<preset>-<UTC time>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// mnist, fashion-mnist, or idx:DIR.
    #[arg(long, value_parser = parse_dataset)]
    dataset: Option<DatasetName>,
    /// Keep only the first N training images.
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// Keep only the first M test images.
    #[arg(long, value_name = "M")]
    test_limit: Option<usize>,
    /// cpu, cuda or wgpu (among the backends compiled in).
    #[arg(long, value_parser = parse_device)]
    device: Option<DeviceKind>,
    /// What to do when a parameter becomes NaN or infinite: stop (default) or skip-batch.
    #[arg(long, value_name = "stop|skip-batch", value_parser = ["stop", "skip-batch"])]
    on_nan: Option<String>,
    /// Override any configuration key, e.g. --set model.lr=0.05 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Look for data here first.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct SampleArgs {
    /// The run directory.
    run: PathBuf,
    /// Number of samples.
    #[arg(short = 'n', default_value_t = 64)]
    n: usize,
    /// RBM: Gibbs steps per chain (VAEs sample directly).
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Start the chains from random noise or from random test images.
    #[arg(long, default_value = "noise", value_parser = ["noise", "data"])]
    from: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output PNG (default: RUN/images/sample_<from>_<steps>steps_seed<seed>.png).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct InpaintArgs {
    /// The run directory.
    run: PathBuf,
    /// Fractions of each digit's non-zero pixels to remove, comma-separated.
    #[arg(long, default_value = "0.2,0.5,0.8", value_delimiter = ',')]
    remove: Vec<f32>,
    /// Number of test digits (the first N of the test set).
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// RBM: Gibbs steps of both reconstructions; VAE: encode -> decode iterations.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory for the PNGs (default: RUN/images).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn sample(args: SampleArgs) -> Result<()> {
    let from = if args.from == "data" {
        ChainStart::Data
    } else {
        ChainStart::Noise
    };
    let (path, how) = genlab::inspect::sample(
        &args.run,
        &genlab::inspect::SampleOptions {
            n: args.n,
            steps: args.steps,
            from,
            seed: args.seed,
            out: args.out,
            data_dir: args.data_dir,
        },
    )?;
    // With --out -, standard output carries the PNG alone.
    if path == std::path::Path::new("-") {
        eprintln!("{} samples ({how}) written to standard output", args.n);
    } else {
        println!("{} samples ({how}) written to {}", args.n, path.display());
    }
    Ok(())
}

fn inpaint(args: InpaintArgs) -> Result<()> {
    let report = genlab::inspect::inpaint(
        &args.run,
        &genlab::inspect::InpaintOptions {
            remove: args.remove,
            n: args.n,
            steps: args.steps,
            seed: args.seed,
            out: args.out,
            data_dir: args.data_dir,
        },
    )?;
    let rows = &report.rows;
    println!(
        "mean squared error on the removed pixels ({} test digits)",
        rows.first().map_or(0, |r| r.images),
    );
    println!(
        "{:>8}  {:>14}  {:>12}  {:>12}  picture",
        "removed", "pixels removed", "free chain", "clamped"
    );
    for r in rows {
        println!(
            "{:>7.0}%  {:>14}  {:>12.4}  {:>12.4}  {}",
            r.fraction * 100.0,
            r.removed_pixels,
            r.mse_free_chain,
            r.mse_clamped,
            r.picture.display()
        );
    }
    println!("{}", report.free_method);
    println!("{}", report.clamped_method);
    Ok(())
}

fn parse_dataset(s: &str) -> Result<DatasetName, String> {
    s.parse()
}

fn parse_device(s: &str) -> Result<DeviceKind, String> {
    s.parse()
}

fn train(args: TrainArgs) -> Result<()> {
    if let Some(run) = &args.resume {
        let others = args.model.is_some()
            || args.preset.is_some()
            || args.config.is_some()
            || args.seed.is_some()
            || args.out.is_some()
            || args.dataset.is_some()
            || args.train_limit.is_some()
            || args.test_limit.is_some()
            || args.device.is_some()
            || args.on_nan.is_some()
            || !args.set.is_empty();
        if others {
            genlab::usage_bail!(
                "--resume continues {} exactly as configured; only --epochs and --data-dir may be given with it",
                run.display()
            );
        }
        let root = models::resume(run, args.epochs.map(|e| e as usize), args.data_dir)?;
        println!("run written to {}", root.display());
        return Ok(());
    }
    let Some(model) = args.model else {
        genlab::usage_bail!(
            "give the model to train (one of {}) or --resume RUN",
            models::family::names().join(", ")
        );
    };
    // Flags become --set assignments applied before the user's own --set.
    let mut set = Vec::new();
    if let Some(e) = args.epochs {
        set.push(format!("model.epochs={e}"));
    }
    if let Some(s) = args.seed {
        set.push(format!("seed={s}"));
    }
    if let Some(d) = &args.dataset {
        set.push(format!("data.dataset=\"{d}\""));
    }
    if let Some(n) = args.train_limit {
        set.push(format!("data.train_limit={n}"));
    }
    if let Some(n) = args.test_limit {
        set.push(format!("data.test_limit={n}"));
    }
    if let Some(n) = &args.on_nan {
        set.push(format!("on_nan=\"{n}\""));
    }
    if let Some(d) = args.device {
        set.push(format!("device=\"{d}\""));
    }
    set.extend(args.set);
    let request = TrainRequest {
        family: model,
        preset: args.preset,
        overrides: Overrides {
            config_file: args.config,
            set,
        },
        out: args.out,
        data_dir: args.data_dir,
    };
    let root = models::train(&request)?;
    println!("run written to {}", root.display());
    Ok(())
}

fn presets() {
    let width = PRESETS.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in PRESETS {
        println!("{:width$}  {:9}  {}", p.name, p.family, p.description);
    }
    if PRESETS.is_empty() {
        println!("no presets: this genlab has no models yet");
    }
}

fn compare(args: CompareArgs) -> Result<()> {
    let runs: Vec<&std::path::Path> = args.runs.iter().map(PathBuf::as_path).collect();
    let comparison = genlab::sweep::aggregate::comparison(&runs)?;
    print!("{}", comparison.markdown);
    if args.out.exists() && !args.out.is_dir() {
        genlab::usage_bail!(
            "--out {} is a file; give a directory for compare.md and compare.csv",
            args.out.display()
        );
    }
    std::fs::create_dir_all(&args.out).map_err(|e| {
        genlab::error::usage(anyhow::anyhow!(
            "cannot create --out {} ({e}); give a directory you can write",
            args.out.display()
        ))
    })?;
    let written = genlab::sweep::aggregate::write_comparison(&comparison, &args.out)?;
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    println!("\nwritten to {}", names.join(", "));
    Ok(())
}

fn sweep(args: SweepArgs) -> Result<()> {
    use genlab::sweep::{Sweep, local, manifest::Manifest, slurm, task};
    if let Some(SweepCommand::Status { dir }) = args.command {
        return sweep_status(&dir);
    }
    let file = args.file.expect("clap requires the file");
    let plan = Sweep::plan(&file, args.out, args.data_dir)?;
    if let Some(index) = args.task {
        return task::run_task(&plan, index, &mut |line| println!("{line}"));
    }
    let slurm = args.submit || args.executor == "slurm";
    if slurm && args.jobs.is_some() {
        genlab::usage_bail!(
            "--jobs is for the local executor; on Slurm, slurm.limit in the sweep file caps the tasks at once"
        );
    }
    if args.dry_run {
        let exists = genlab::sweep::aggregate::is_sweep(&plan.dir);
        println!(
            "{} runs into {} ({}):",
            plan.runs.len(),
            plan.dir.display(),
            if exists { "exists" } else { "new" }
        );
        for (k, r) in plan.runs.iter().enumerate() {
            let state = if plan.is_finished(k) {
                "finished"
            } else if plan.run_dir(k).join("config.toml").is_file() {
                "to resume"
            } else {
                "to run"
            };
            println!(
                "  {k:>3}  {:<40} {:<9} {} epochs  --set {}",
                r.name,
                state,
                r.epochs,
                r.set.join(" --set ")
            );
        }
        return Ok(());
    }
    if slurm {
        plan.prepare()?;
        let manifest = Manifest::read(&plan.dir)?;
        let queued = slurm::queue_states(&manifest).unwrap_or_default();
        let todo: Vec<usize> = (0..plan.runs.len())
            .filter(|&k| !plan.is_finished(k) && !queued.contains_key(&k))
            .collect();
        if todo.is_empty() {
            println!(
                "every run of {} is finished or queued ({} queued); nothing to submit",
                plan.dir.display(),
                queued.len()
            );
            return Ok(());
        }
        let exe = std::env::current_exe()?;
        let script = slurm::write_script(&plan, &todo, &exe)?;
        println!(
            "sbatch script for {} of {} runs written to {}",
            todo.len(),
            plan.runs.len(),
            script.display()
        );
        if args.submit {
            let id = slurm::submit(&script)?;
            Manifest::update(&plan.dir, |m| {
                m.slurm_jobs.push(id.clone());
                Ok(())
            })?;
            println!(
                "submitted job array {id} ({} tasks); follow it with `genlab sweep status {}`",
                todo.len(),
                plan.dir.display()
            );
        } else {
            println!("submit it with `sbatch {}`", script.display());
        }
        return Ok(());
    }
    let jobs = args.jobs.or(plan.spec.local.jobs).unwrap_or(1);
    let summary = local::run_local(
        &plan,
        &local::LocalOptions {
            jobs,
            exe: std::env::current_exe()?,
            interactive: genlab::progress::interactive(),
        },
        &mut |line| println!("{line}"),
    )?;
    println!(
        "\n{} runs finished now, {} before, {} failed; {:.0} s",
        summary.finished.len(),
        summary.skipped,
        summary.failed.len(),
        summary.seconds
    );
    if summary.finished.len() + summary.skipped > 0 {
        let comparison = genlab::sweep::aggregate::comparison(&[plan.dir.as_path()])?;
        let written = genlab::sweep::aggregate::write_comparison(&comparison, &plan.dir)?;
        println!("\n{}", comparison.markdown);
        println!(
            "written to {}; an HTML report: `genlab report {}`",
            written
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            plan.dir.display()
        );
    }
    if let Some((name, error, log)) = summary.failed.first() {
        anyhow::bail!(
            "{} of {} runs failed (first: {name}: {error}; log {}); fix the cause and run `genlab sweep {}` again",
            summary.failed.len(),
            plan.runs.len(),
            log.display(),
            file.display()
        );
    }
    Ok(())
}

fn sweep_status(dir: &std::path::Path) -> Result<()> {
    use genlab::sweep::{slurm, task};
    let manifest = task::refresh(dir)?;
    let queued = slurm::task_states(&manifest);
    let mut counts = std::collections::BTreeMap::new();
    println!(
        "{:>5}  {:<40} {:<12} {:>7}{}",
        "task",
        "run",
        "state",
        "epochs",
        if queued.is_some() { "  slurm" } else { "" }
    );
    for r in &manifest.run {
        let run = dir.join(genlab::sweep::RUNS_DIR).join(&r.name);
        let done = std::fs::read(run.join("metrics.jsonl"))
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0);
        *counts.entry(r.state.as_str()).or_insert(0) += 1;
        let slurm_state = queued
            .as_ref()
            .map(|q| format!("  {}", q.get(&r.index).map_or("-", String::as_str)))
            .unwrap_or_default();
        println!(
            "{:>5}  {:<40} {:<12} {:>7}{slurm_state}",
            r.index,
            r.name,
            r.state.as_str(),
            done
        );
        if let Some(e) = &r.error {
            println!("       error: {e}");
        }
    }
    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!("\n{} runs: {}", manifest.run.len(), summary.join(", "));
    if !manifest.slurm_jobs.is_empty() {
        println!(
            "Slurm jobs: {}{}",
            manifest.slurm_jobs.join(", "),
            if queued.is_none() {
                " (squeue not reachable here)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn reproduce(args: ReproduceArgs) -> Result<()> {
    let opts = genlab::reproduce::ReproduceOptions {
        out: args
            .out
            .unwrap_or_else(|| genlab::reproduce::ReproduceOptions::default_out(args.quick)),
        quick: args.quick,
        only: args.only,
        seed: args.seed,
        dataset: args.dataset.map(|d| d.to_string()),
        data_dir: args.data_dir,
    };
    let done = genlab::reproduce::reproduce(&opts, &mut |line| println!("{line}"))?;
    println!();
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>10}",
        "preset", "training", "seconds", "eval", "seconds"
    );
    for s in &done.steps {
        println!(
            "{:<10} {:>9} {:>10.0} {:>10} {:>10.0}",
            s.preset, s.done.training, s.done.train_seconds, s.done.evaluation, s.done.eval_seconds
        );
    }
    println!(
        "\ndone in {:.0} s; table in {}; report: {}",
        done.seconds,
        done.compare_md.display(),
        done.report.display()
    );
    Ok(())
}

fn report(args: ReportArgs) -> Result<()> {
    if args.runs.is_empty() && !args.serve {
        genlab::usage_bail!(
            "give one or more run directories (genlab report RUN... [--out DIR]), or --serve to serve an existing report"
        );
    }
    if !args.runs.is_empty() {
        let runs: Vec<&std::path::Path> = args.runs.iter().map(PathBuf::as_path).collect();
        let done = genlab::report::write_report(&runs, &args.out, &args.title)?;
        println!(
            "report of {} run{} ({} pictures) written to {}",
            done.runs,
            if done.runs == 1 { "" } else { "s" },
            done.images,
            done.index.display()
        );
    }
    if args.serve {
        // The server polls for Ctrl-C itself and ends cleanly (exit 0).
        let _graceful = genlab::interrupt::graceful();
        genlab::report::serve(&args.out, args.port, |url| {
            println!("serving {} at {url} (Ctrl-C to stop)", args.out.display());
        })?;
    }
    Ok(())
}

fn evaluator_train(args: EvaluatorTrainArgs) -> Result<()> {
    use genlab::eval::evaluator::{Recipe, train};
    let config = genlab::config::data_config(&args.dataset, &args.set)?;
    let data = config.load(args.data_dir)?;
    if !data.is_labelled() {
        genlab::usage_bail!(
            "{}: the evaluator is a classifier and these images have no labels; use a labelled source (class subfolders, a labels array)",
            data.name
        );
    }
    let classes = data.classes.len();
    if classes < 2 {
        genlab::usage_bail!(
            "{}: {classes} class; the evaluator is a classifier and needs at least two",
            data.name
        );
    }
    let recipe = Recipe::default();
    println!(
        "evaluator on {}: {} training images of {classes} classes, recipe: seed {}, {} epochs, batch {}, Adam lr {}",
        data.name,
        data.train.len(),
        recipe.seed,
        recipe.epochs,
        recipe.batch_size,
        recipe.lr
    );
    let mut net = train(data.image, classes, &data.train, &data.test, recipe, |r| {
        println!(
            "epoch {:>2}/{}  {:.1}s  loss {:.4}  test accuracy {:.2}%",
            r.epoch,
            recipe.epochs,
            r.seconds,
            r.loss,
            100.0 * r.test_accuracy
        )
    })?;
    let accuracy = net.accuracy(&data.test);
    let mut ck = net.to_checkpoint();
    ck.set_meta("genlab.dataset", data.name.to_string());
    ck.set_meta("genlab.test_accuracy", format!("{accuracy:.4}"));
    ck.set_meta(
        "genlab.recipe",
        format!(
            "seed {}, {} epochs, batch {}, Adam (PyTorch) lr {} x0.3 after epoch {} and again for the last",
            recipe.seed, recipe.epochs, recipe.batch_size, recipe.lr, recipe.decay_after
        ),
    );
    let out = args.out.unwrap_or_else(|| {
        let name: String = data
            .name
            .to_string()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        PathBuf::from(format!("evaluator-{name}.safetensors"))
    });
    let bytes = ck.to_bytes()?;
    genlab::atomic::write_atomic(&out, &bytes)?;
    println!(
        "test accuracy {:.2}%; weights written to {} (SHA-256 {})",
        100.0 * accuracy,
        out.display(),
        genlab::data::download::sha256_hex(&bytes)
    );
    Ok(())
}

fn data_info(args: DataArgs) -> Result<()> {
    let config = genlab::config::data_config(&args.dataset, &args.set)?;
    let data = config.load(args.data_dir)?;
    println!("dataset  {}", data.name);
    println!("found in {}", data.dir.display());
    match &data.cache {
        Some(c) => println!("cache    {} (decoded images, memory-mapped)", c.display()),
        None => println!("cache    none (read directly)"),
    }
    println!(
        "images   {} x {} pixels, {} channel{}",
        data.image.height,
        data.image.width,
        data.image.channels,
        if data.image.channels == 1 {
            " (grey)"
        } else {
            "s (RGB)"
        }
    );
    if data.is_labelled() {
        println!(
            "classes  {}: {}",
            data.classes.len(),
            data.classes.join(", ")
        );
    } else {
        println!("classes  none (unlabelled)");
    }
    for (name, split) in [("train", &data.train), ("test", &data.test)] {
        let per_class = if data.is_labelled() {
            let counts = split.class_counts(data.classes.len());
            format!(
                "per class: {}; ",
                counts
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        } else {
            String::new()
        };
        println!(
            "{name:5}    {} images; {per_class}mean pixel {:.3} (0-255)",
            split.len(),
            split.mean_pixel()
        );
    }
    Ok(())
}

/// glibc returns every large block (over 128 KiB, growing adaptively) to the
/// kernel on free, so each training step of the conv VAE mapped and unmapped
/// its temporaries: page faults, zeroing and TLB shootdowns took about a fifth
/// of an epoch. Keep such blocks in the heap instead, and in one heap: the CPU
/// executor's buffers are made on rayon's threads, whose own arenas could not
/// reuse what the main thread freed (the conv VAE peaked about 35 MiB
/// higher).
fn keep_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`genlab ... | head`)
/// would panic; die of the signal quietly instead, as Unix tools do.
fn quiet_broken_pipes() {
    // SAFETY: resetting a signal's disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    keep_large_allocations();
    quiet_broken_pipes();
    let cli = Cli::parse();
    // Ctrl-C or SIGTERM: training finishes its batch, writes a checkpoint and stops; anything
    // else stops at once (every file is renamed into place whole, so nothing is torn).
    let _ = ctrlc::set_handler(|| match genlab::interrupt::on_signal() {
        genlab::interrupt::SignalAction::Graceful => eprintln!(
            "genlab: stopping after this batch, with a checkpoint; Ctrl-C again to stop at once"
        ),
        genlab::interrupt::SignalAction::ExitNow => {
            eprintln!("genlab: stopped");
            genlab::interrupt::stop_now()
        }
    });
    let result = match cli.command {
        Command::Train(args) => train(args),
        Command::Sample(args) => sample(args),
        Command::Inpaint(args) => inpaint(args),
        Command::Eval(args) => eval_command::eval(args),
        Command::Presets => {
            presets();
            Ok(())
        }
        Command::Data {
            command: DataCommand::Info(args),
        } => data_info(args),
        Command::Evaluator {
            command: EvaluatorCommand::Train(args),
        } => evaluator_train(args),
        Command::Compare(args) => compare(args),
        Command::Reproduce(args) => reproduce(args),
        Command::Report(args) => report(args),
        Command::Sweep(args) => sweep(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "genlab: error: {}",
                genlab::config::one_line(&format!("{e:#}"))
            );
            // 2 for bad input (as clap does for bad arguments), 130 for an interruption
            // (as a shell reports SIGINT), 1 for failures while working.
            if genlab::error::is_usage(&e) {
                ExitCode::from(2)
            } else if genlab::interrupt::is_interrupted(&e) {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
