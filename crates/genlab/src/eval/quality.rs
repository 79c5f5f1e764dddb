//! Sample quality for every model family, measured the same way: features
//! of generated images and of the test set from the shipped evaluator
//! network, then FID, KID, Inception Score, precision/recall and class
//! coverage, beside a reference row of real training images.

use std::time::Instant;

use anyhow::Result;
use serde_json::{Value, json};

use super::EvalOptions;
use super::evaluator::{self, FEATURES};
use super::sample_metrics::{class_coverage, fid, inception_score, kid, precision_recall};
use crate::config::{DataConfig, RunConfig};
use crate::data::batches::split_to_f32;
use crate::data::{DatasetName, PixelView};
use crate::models::family::{ModelFamily, SampleSpec};
use crate::models::rbm::ChainStart;
use crate::rng::{Purpose, stream};
use crate::run::RunDir;

/// Every metric of one set of images against the test set. The
/// class-based ones (Inception Score, class coverage) need `classes`, the
/// evaluator's class count, to be the data's; for unlabelled data they are
/// null (not applicable).
fn metrics(
    feats: &[f32],
    probs: &[f32],
    test_feats: &[f32],
    classes: Option<usize>,
    seed: u64,
) -> Value {
    let (kid_mean, kid_std) = kid(feats, test_feats, FEATURES, 100, 1000, seed);
    let (precision, recall) = precision_recall(test_feats, feats, FEATURES, 3);
    let mut m = json!({
        "images": feats.len() / FEATURES,
        "fid": fid(feats, test_feats, FEATURES),
        "kid": kid_mean,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "inception_score": null,
        "inception_score_std": null,
        "class_histogram": null,
        "classes_covered": null,
        "classes": classes,
    });
    if let Some(classes) = classes {
        let (is_mean, is_std) = inception_score(probs, classes, 10);
        let (hist, covered) = class_coverage(probs, classes, 0.05);
        m["inception_score"] = json!(is_mean);
        m["inception_score_std"] = json!(is_std);
        m["class_histogram"] = json!(hist);
        m["classes_covered"] = json!(covered);
    }
    m
}

fn line(name: &str, m: &Value) -> String {
    let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
    let by_class = match m["classes"].as_u64() {
        Some(classes) => format!(
            "IS {:.2} +- {:.2}  precision {:.3}  recall {:.3}  classes >= 5%: {}/{classes}",
            f("inception_score"),
            f("inception_score_std"),
            f("precision"),
            f("recall"),
            m["classes_covered"].as_u64().unwrap_or(0)
        ),
        None => format!(
            "precision {:.3}  recall {:.3}  IS and class coverage n/a (unlabelled data)",
            f("precision"),
            f("recall")
        ),
    };
    format!(
        "{name:<16} FID {:.2}  KID {:.4} +- {:.4}  {by_class}",
        f("fid"),
        f("kid"),
        f("kid_std"),
    )
}

/// The checks of the sample-quality options and the evaluator network
/// they use, done before any other work of `genlab eval` so that a bad
/// option or evaluator file is refused at once.
/// Without an evaluator for the run's data, the line saying how to get one.
pub fn prepare(
    run: &RunDir,
    opts: &EvalOptions,
) -> Result<std::result::Result<(evaluator::Evaluator, String), String>> {
    let n = opts.samples;
    if n < 10 {
        crate::usage_bail!(
            "--samples {n}: use at least 10 generated images (10,000 is the default)"
        );
    }
    if opts.sample_steps == 0 {
        crate::usage_bail!("--sample-steps 0: a Gibbs chain needs at least one step");
    }
    let data_cfg: RunConfig<toml::Value> = run.read_config()?;
    let data = &data_cfg.data;
    let ds_name = data.dataset.to_string();
    let image = run
        .load_weights()
        .ok()
        .and_then(|(ck, _)| ck.image_shape().ok());
    let plain = matches!(data.dataset, DatasetName::Mnist | DatasetName::FashionMnist)
        && !data.grey
        && data.crop.is_none()
        && data.resize.is_none();
    if opts.evaluator.is_none() && !(plain && evaluator::shipped(&ds_name).is_some()) {
        return Ok(Err(format!(
            "sample metrics       none: genlab ships evaluators for mnist and fashion-mnist as they are; for {ds_name} train one with `genlab evaluator train --dataset {ds_name}` (with the run's data.* options) and pass it with `genlab eval RUN --evaluator FILE`"
        )));
    }
    let (net, desc) =
        evaluator::load(&ds_name, opts.evaluator.as_deref(), 500).map_err(crate::error::usage)?;
    if let Some(image) = image
        && net.image() != image
    {
        crate::usage_bail!(
            "--evaluator: it was trained on {} images and this run's are {}; train one on the run's data with `genlab evaluator train --dataset {ds_name}`",
            net.image().to_meta(),
            image.to_meta()
        );
    }
    Ok(Ok((net, desc)))
}

/// Generates `opts.samples` images from the run's model and measures them
/// with the evaluator from [`prepare`].
pub fn evaluate_samples(
    run: &RunDir,
    family: &dyn ModelFamily,
    opts: &EvalOptions,
    (mut net, evaluator_desc): (evaluator::Evaluator, String),
) -> Result<(Value, Vec<String>)> {
    let n = opts.samples;
    let data_cfg: RunConfig<toml::Value> = run.read_config()?;
    let run_data = &data_cfg.data;
    let dataset = run_data.dataset.clone();
    // The whole test set and the first 10,000 training images, whatever limits the run trained with.
    let full = DataConfig {
        dataset,
        train_limit: None,
        test_limit: None,
        validation: None,
        ..run_data.clone()
    }
    .load(opts.data_dir.clone())?;
    // Checked before the samples are drawn, the costly part.
    let classes = full.is_labelled().then(|| net.classes());
    if let Some(c) = classes
        && c != full.classes.len()
    {
        crate::usage_bail!(
            "--evaluator: it has {c} classes and {} has {}; train one on the run's data with `genlab evaluator train --dataset {}`",
            full.name,
            full.classes.len(),
            full.name
        );
    }
    let t0 = Instant::now();
    let model = family.load(run)?;
    let spec = SampleSpec {
        n,
        steps: opts.sample_steps,
        from: ChainStart::Noise,
        seed: opts.seed,
        data_dir: opts.data_dir.clone(),
    };
    let images = model.sample(&spec)?;
    let how = model.sample_how(&spec);
    let sampling_seconds = t0.elapsed().as_secs_f64();
    let fixed = &mut stream(0, Purpose::Fixed, 0);
    let test = split_to_f32(&full.test, PixelView::Unit, fixed);
    let reference = split_to_f32(&full.train.head(10_000), PixelView::Unit, fixed);
    let (test_feats, _) = net.features_and_probs(&test);
    let (ref_feats, ref_probs) = net.features_and_probs(&reference);
    let (feats, probs) = net.features_and_probs(&images);
    let model = metrics(&feats, &probs, &test_feats, classes, opts.seed);
    let real = metrics(&ref_feats, &ref_probs, &test_feats, classes, opts.seed);
    let lines = vec![
        format!("samples          {n} images: {how} ({sampling_seconds:.1} s)"),
        format!(
            "evaluator        {evaluator_desc}; against the {} test images",
            full.test.len()
        ),
        line("model", &model),
        line("real (reference)", &real),
    ];
    let mut model = model;
    model["how"] = json!(how);
    let json = json!({
        "sample_quality": {
            "evaluator": evaluator_desc,
            "test_images": full.test.len(),
            "reference_images": full.train.len().min(10_000),
            "model": model,
            "reference_real_train_10k": real,
        }
    });
    Ok((json, lines))
}
