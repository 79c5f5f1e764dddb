//! `genlab eval`: its options and the report it prints.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Clone, Copy, clap::ValueEnum)]
enum EvalOn {
    Test,
    Validation,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The run directory.
    run: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The images of the likelihood: the test set, or the training images the run held out (data.validation).
    #[arg(long, value_enum, default_value_t = EvalOn::Test)]
    on: EvalOn,
    /// AIS chains (run in parallel as one batch).
    #[arg(long, default_value_t = 100)]
    ais_runs: usize,
    /// AIS inverse temperatures.
    #[arg(long, default_value_t = 14_500)]
    ais_steps: usize,
    /// RBM: test images whose likelihood RAISE (reverse annealing, a conservative estimate) also gives; 0 skips it.
    #[arg(long, default_value_t = 100)]
    raise_images: usize,
    /// RBM: RAISE's reverse chains per image (from each of two base models).
    #[arg(long, default_value_t = 5)]
    raise_chains: usize,
    /// RBM: RAISE's inverse temperatures.
    #[arg(long, default_value_t = 14_500)]
    raise_steps: usize,
    /// VAE: importance samples per test image (default 5000 for MLP VAEs, 500 for the conv VAE).
    #[arg(long)]
    k: Option<usize>,
    /// VAE, GAN: images of the split whose decoder likelihood AIS estimates (default 100 for MLP decoders, 20 for the conv VAE); 0 skips decoder AIS.
    #[arg(long)]
    decoder_ais_images: Option<usize>,
    /// VAE, GAN: decoder AIS chains per image (default 16 MLP, 4 conv).
    #[arg(long)]
    decoder_ais_chains: Option<usize>,
    /// VAE, GAN: decoder AIS's intermediate distributions (default 500 MLP, 200 conv).
    #[arg(long)]
    decoder_ais_steps: Option<usize>,
    /// VAE, GAN: leapfrog steps per HMC transition (default 10 MLP, 5 conv).
    #[arg(long)]
    hmc_leapfrog: Option<usize>,
    /// VAE, GAN: images simulated from the model for the BDMC bracket (default 20 MLP, 5 conv); 0 skips it.
    #[arg(long)]
    bdmc_images: Option<usize>,
    /// VAE (MSE), GAN: the Gaussian observation model's standard deviation on pixel/255, instead of choosing it on held-out images.
    #[arg(long)]
    sigma: Option<f64>,
    /// VAE (MSE), GAN: held-out images the standard deviation is chosen on (default 20 MLP, 10 conv).
    #[arg(long)]
    sigma_images: Option<usize>,
    /// Generated images for the sample-quality metrics (FID, KID, IS, precision/recall); 0 skips them.
    #[arg(short = 'n', long = "samples", default_value_t = 10_000)]
    samples: usize,
    /// RBM: Gibbs steps of each sampling chain, started from random noise.
    #[arg(long, default_value_t = 1000)]
    sample_steps: usize,
    /// Use this evaluator network (safetensors) instead of genlab's shipped one.
    #[arg(long, value_name = "FILE")]
    evaluator: Option<PathBuf>,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    json: bool,
    /// Where to write the JSON report (default: RUN/eval.json).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let report = genlab::eval::evaluate(
        &args.run,
        &genlab::eval::EvalOptions {
            seed: args.seed,
            on: match args.on {
                EvalOn::Test => genlab::eval::EvalSplit::Test,
                EvalOn::Validation => genlab::eval::EvalSplit::Validation,
            },
            ais_runs: args.ais_runs,
            ais_steps: args.ais_steps,
            raise_images: args.raise_images,
            raise_chains: args.raise_chains,
            raise_steps: args.raise_steps,
            k: args.k,
            decoder_ais: genlab::eval::DecoderAisOptions {
                images: args.decoder_ais_images,
                chains: args.decoder_ais_chains,
                steps: args.decoder_ais_steps,
                leapfrog: args.hmc_leapfrog,
                bdmc_images: args.bdmc_images,
                sigma_images: args.sigma_images,
                sigma: args.sigma,
            },
            samples: args.samples,
            sample_steps: args.sample_steps,
            evaluator: args.evaluator,
            out: args.out,
            data_dir: args.data_dir,
        },
    )?;
    if report.path == std::path::Path::new("-") {
        // The JSON report went to standard output; the table goes to standard error.
        for line in &report.lines {
            eprintln!("{line}");
        }
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json)?);
    } else {
        for line in &report.lines {
            println!("{line}");
        }
        println!("written to {}", report.path.display());
    }
    Ok(())
}
