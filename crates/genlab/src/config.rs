//! Run configuration: a model's seed defaults, overlaid by a preset, a user's
//! `--config` file, command-line flags and `--set key=value`, in that order.
//! The resolved configuration is written into the run as `config.toml` and is
//! enough to repeat the run exactly.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use std::path::PathBuf;

use crate::data::{DataSources, Dataset, DatasetName, ImageOptions, ResizeFilter};

/// The largest side `data.crop` and `data.resize` take.
const MAX_SIDE: usize = 4096;
use crate::device::DeviceKind;
use crate::presets::Preset;

/// Which data a run uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `mnist`, `fashion-mnist`, `cifar10`, `idx:DIR`, `folder:DIR`,
    /// `npy:IMAGES.npy[,LABELS.npy]`, `npz:FILE.npz` or `cifar10:DIR`.
    pub dataset: DatasetName,
    /// Keep only the first N training images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// Keep only the first M test images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    /// Hold out the last N training images (after `train_limit`) as a
    /// validation split: training never sees them, and `genlab eval --on
    /// validation` measures the likelihood on them (for tuning without
    /// touching the test set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<usize>,
    /// Convert colour images to one grey channel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grey: bool,
    /// A centre crop to `[height, width]`, before any resize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<[usize; 2]>,
    /// A resize to `[height, width]` (needed for images of mixed sizes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<[usize; 2]>,
    /// The resize filter: nearest, triangle (bilinear, the default),
    /// catmull-rom, gaussian or lanczos3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_filter: Option<ResizeFilter>,
    /// Read at most this many images of each split of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_images: Option<usize>,
    /// For a source without its own test split: the share held out as test
    /// images by a fixed-seed split (0.1 unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: DatasetName::Mnist,
            train_limit: None,
            test_limit: None,
            validation: None,
            grey: false,
            crop: None,
            resize: None,
            resize_filter: None,
            max_images: None,
            test_fraction: None,
        }
    }
}

/// What training does when a loss, gradient or parameter becomes NaN or infinite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnNan {
    /// Stop at once with a message; the last good checkpoint stays.
    #[default]
    Stop,
    /// Undo the batch's update, count it in metrics.jsonl, go on.
    SkipBatch,
}

impl DataConfig {
    /// The shape of the images training will see, where it is known before
    /// the data is read (a named dataset, after the crop, resize and grey options).
    pub fn expected_shape(&self) -> Option<crate::data::ImageShape> {
        let mut shape = self.dataset.known_shape()?;
        if self.grey {
            shape.channels = 1;
        }
        if let Some([height, width]) = self.resize.or(self.crop) {
            shape.height = height;
            shape.width = width;
        }
        Some(shape)
    }

    /// Checks the limits before any data is read.
    pub fn validate(&self) -> Result<()> {
        for (key, limit) in [
            ("data.train_limit", self.train_limit),
            ("data.test_limit", self.test_limit),
            ("data.validation", self.validation),
        ] {
            if limit == Some(0) {
                crate::usage_bail!("{key} = 0: a limit must be a positive number of images");
            }
        }
        if self.max_images == Some(0) {
            crate::usage_bail!("data.max_images = 0: a cap must be a positive number of images");
        }
        for (key, size) in [("data.crop", self.crop), ("data.resize", self.resize)] {
            if size.is_some_and(|[h, w]| h == 0 || w == 0 || h > MAX_SIDE || w > MAX_SIDE) {
                crate::usage_bail!(
                    "{key} = {:?}: give [height, width], each from 1 to {MAX_SIDE}",
                    size.unwrap_or_default()
                );
            }
        }
        if let Some(f) = self.test_fraction
            && !(f > 0.0 && f < 1.0)
        {
            crate::usage_bail!(
                "data.test_fraction = {f}: use a share strictly between 0 and 1, such as 0.1"
            );
        }
        Ok(())
    }

    /// How the source's images are read.
    pub fn image_options(&self) -> ImageOptions {
        ImageOptions {
            grey: self.grey,
            crop: self.crop,
            resize: self.resize,
            filter: self.resize_filter.unwrap_or_default(),
            max_images: self.max_images,
            test_fraction: self.test_fraction.unwrap_or(0.1),
        }
    }

    /// Finds and reads the dataset (see [`DataSources`]) and applies the limits.
    pub fn load(&self, data_dir: Option<PathBuf>) -> Result<Dataset> {
        let sources = DataSources::from_env(data_dir);
        let mut dataset = Dataset::load_with(
            &self.dataset,
            &sources,
            &self.image_options(),
            crate::progress::interactive(),
        )?;
        dataset.limit(self.train_limit, self.test_limit);
        if let Some(n) = self.validation {
            if n >= dataset.train.len() {
                crate::usage_bail!(
                    "data.validation = {n} leaves no training images ({} in the training set); hold out fewer",
                    dataset.train.len()
                );
            }
            dataset.validation = Some(dataset.train.split_off(dataset.train.len() - n));
        }
        Ok(dataset)
    }
}

/// A run's whole configuration; `M` is the model family's own section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig<M> {
    /// Model family: rbm, vae, conv-vae, gan.
    pub family: String,
    /// The preset this configuration started from.
    pub preset: String,
    #[serde(default)]
    pub description: String,
    pub seed: u64,
    pub device: DeviceKind,
    /// `stop` or `skip-batch`.
    #[serde(default)]
    pub on_nan: OnNan,
    pub data: DataConfig,
    pub model: M,
}

/// Where the pieces of a configuration come from, beyond the preset.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// A user's TOML file with the same schema (any subset of keys).
    pub config_file: Option<std::path::PathBuf>,
    /// `key=value` pairs (dotted keys, TOML values; bare words are strings), applied last.
    pub set: Vec<String>,
}

/// Merges `over` into `base`, table by table; other values are replaced.
pub fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Parses one `--set` value: a TOML value if it is one, else a plain string.
fn parse_set_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Applies `key.path=value` to `root`.
pub fn apply_set(root: &mut toml::Value, assignment: &str) -> Result<()> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| {
        anyhow!("--set {assignment}: expected key=value, for example --set model.lr=0.05")
    })?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        crate::usage_bail!("--set {assignment}: the key '{key}' is not a dotted key like model.lr");
    }
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        let table = node
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {assignment}: '{part}' is not inside a table"))?;
        node = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| anyhow!("--set {assignment}: the parent of '{key}' is not a table"))?;
    table.insert(
        parts[parts.len() - 1].to_string(),
        parse_set_value(raw.trim()),
    );
    Ok(())
}

/// The data configuration of `dataset` with `--set data.KEY=VALUE`
/// assignments applied (for the commands that read data without a run).
pub fn data_config(dataset: &DatasetName, sets: &[String]) -> Result<DataConfig> {
    let base = DataConfig {
        dataset: dataset.clone(),
        ..DataConfig::default()
    };
    let mut root = toml::Value::Table(toml::Table::new());
    root.as_table_mut()
        .expect("a table")
        .insert("data".into(), toml::Value::try_from(&base)?);
    for set in sets {
        if !set.trim_start().starts_with("data.") {
            crate::usage_bail!(
                "--set {set}: only data.* keys apply here, such as --set data.resize=[32, 32]"
            );
        }
        apply_set(&mut root, set).map_err(crate::error::usage)?;
    }
    let data = root.get("data").cloned().expect("the data table");
    let config: DataConfig = data.try_into().map_err(|e: toml::de::Error| {
        crate::error::usage(anyhow!("--set: {}", one_line(&e.to_string())))
    })?;
    config.validate()?;
    Ok(config)
}

/// Reads a TOML file into a value, with a message naming the file.
pub fn read_toml(path: &Path) -> Result<toml::Value> {
    let text = crate::bounded::read_text(path, crate::bounded::CONFIG_LIMIT, "config file")?;
    parse_toml_text(&path.display().to_string(), &text)
}

/// Parses TOML text into a value; errors start with `source`.
pub fn parse_toml_text(source: &str, text: &str) -> Result<toml::Value> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| anyhow!("{source}: {}", one_line(&e.to_string())))?;
    Ok(toml::Value::Table(table))
}

/// Collapses a multi-line parser message into one line.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| "|^ ".contains(c)) && !l.starts_with('|'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Resolves the configuration of a run of family `family` from `preset` and `overrides`.
pub fn resolve<M>(preset: &Preset, overrides: &Overrides) -> Result<RunConfig<M>>
where
    M: Serialize + DeserializeOwned + Default,
{
    let file = match &overrides.config_file {
        Some(path) => Some((path.display().to_string(), read_toml(path)?)),
        None => None,
    };
    resolve_layers(preset, file, &overrides.set)
}

/// [`resolve`] with the user's file already parsed: `file` is (its name, its value).
pub fn resolve_layers<M>(
    preset: &Preset,
    file: Option<(String, toml::Value)>,
    set: &[String],
) -> Result<RunConfig<M>>
where
    M: Serialize + DeserializeOwned + Default,
{
    let defaults = RunConfig {
        family: preset.family.to_string(),
        preset: preset.name.to_string(),
        description: preset.description.to_string(),
        seed: 0,
        device: DeviceKind::Cpu,
        on_nan: OnNan::Stop,
        data: DataConfig::default(),
        model: M::default(),
    };
    let mut value =
        toml::Value::try_from(&defaults).context("serialising the default configuration")?;
    let preset_value: toml::Table = toml::from_str(preset.toml)
        .map_err(|e| anyhow!("preset {}: {}", preset.name, one_line(&e.to_string())))?;
    merge(&mut value, toml::Value::Table(preset_value));
    let source = file
        .as_ref()
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| "configuration".into());
    if let Some((name, file)) = file {
        if let Some(f) = file.get("family").and_then(|f| f.as_str())
            && f != preset.family
        {
            crate::usage_bail!(
                "{name}: family = \"{f}\" but this is a {} run; use `genlab train {f}`",
                preset.family
            );
        }
        merge(&mut value, file);
    }
    for assignment in set {
        apply_set(&mut value, assignment)?;
    }
    check_f32_range(&value, "")?;
    let mut config: RunConfig<M> = value
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("{source}: {}", one_line(&e.to_string())))?;
    config.data.dataset = config.data.dataset.absolute();
    if config.family != preset.family {
        crate::usage_bail!("{source}: family must stay \"{}\"", preset.family);
    }
    match crate::presets::find(&config.preset) {
        _ if config.preset == preset.name => {}
        Some(p) if p.family == config.family => {}
        _ => crate::usage_bail!(
            "{source}: preset = \"{}\" is not a {} preset; choose the preset with --preset (see `genlab presets`)",
            config.preset,
            config.family
        ),
    }
    Ok(config)
}

/// Refuses numbers that f32, in which genlab computes, cannot hold (such as
/// 1e39): they would become infinite in the first step. Errors name the key.
pub fn check_f32_range(value: &toml::Value, key: &str) -> Result<()> {
    match value {
        toml::Value::Float(v) if v.is_finite() && v.abs() > f32::MAX as f64 => {
            crate::usage_bail!(
                "{key} = {v:e}: beyond the range of f32 (about 3.4e38), in which genlab computes; give a smaller number"
            )
        }
        toml::Value::Float(v) if !v.is_finite() => {
            crate::usage_bail!("{key} = {v}: must be a finite number")
        }
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                check_f32_range(v, &path)?;
            }
            Ok(())
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                check_f32_range(v, &format!("{key}[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Parses a run's `config.toml`.
pub fn parse_config<M: DeserializeOwned>(path: &Path) -> Result<RunConfig<M>> {
    let text = crate::bounded::read_text(path, crate::bounded::CONFIG_LIMIT, "config file")?;
    toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), one_line(&e.to_string())))
}

/// Serialises a configuration as TOML.
pub fn to_toml<M: Serialize>(config: &RunConfig<M>) -> Result<String> {
    toml::to_string_pretty(config).context("serialising the configuration")
}
