//! Where datasets are found: `--data-dir`, `$GENLAB_DATA/<name>/`, the user
//! cache, `/usr/share/datasets/<name>/`, and as a last resort a download.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::idx::find_file;

/// The four files of an IDX dataset, without the `.gz` suffix.
pub const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// A dataset as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetName {
    Mnist,
    FashionMnist,
    /// Any directory holding the four standard IDX files.
    Idx(PathBuf),
    /// PNG and JPEG files, in class subfolders or not, with or without
    /// `train/` and `test/` subfolders.
    Folder(PathBuf),
    /// A NumPy array of images, and optionally one of labels.
    Npy {
        images: PathBuf,
        labels: Option<PathBuf>,
    },
    /// A NumPy archive of image (and label) arrays.
    Npz(PathBuf),
    /// CIFAR-10's binary batches: in the standard places, or in the directory given.
    Cifar10(Option<PathBuf>),
}

impl DatasetName {
    /// The directory name used under `$GENLAB_DATA`, the cache and `/usr/share/datasets`.
    pub fn dir_name(&self) -> Option<&'static str> {
        match self {
            DatasetName::Mnist => Some("mnist"),
            DatasetName::FashionMnist => Some("fashion-mnist"),
            DatasetName::Cifar10(None) => Some("cifar10"),
            _ => None,
        }
    }

    /// The image shape of a named dataset, known before it is read.
    pub fn known_shape(&self) -> Option<super::ImageShape> {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => Some(super::ImageShape::MNIST),
            DatasetName::Cifar10(_) => Some(super::ImageShape {
                channels: 3,
                height: 32,
                width: 32,
            }),
            _ => None,
        }
    }

    /// Whether `dir` holds every file this dataset is read from.
    pub fn complete_in(&self, dir: &Path) -> bool {
        match self {
            DatasetName::Cifar10(_) => cifar10_batches_dir(dir).is_some(),
            _ => has_all_files(dir),
        }
    }

    /// SHA-256 of the decompressed IDX bytes of each file, in [`IDX_FILES`] order.
    pub fn known_sha256(&self) -> Option<[&'static str; 4]> {
        match self {
            DatasetName::Mnist => Some([
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ]),
            DatasetName::FashionMnist => Some([
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ]),
            _ => None,
        }
    }

    /// The public mirrors torchvision downloads from (base URLs ending in `/`).
    pub fn default_mirrors(&self) -> Vec<String> {
        match self {
            DatasetName::Mnist => vec![
                "https://ossci-datasets.s3.amazonaws.com/mnist/".into(),
                "http://yann.lecun.com/exdb/mnist/".into(),
            ],
            DatasetName::FashionMnist => {
                vec!["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/".into()]
            }
            _ => vec![],
        }
    }
}

impl DatasetName {
    /// The same source with its paths made absolute against the current
    /// directory (symbolic links kept), so that a run's `config.toml`
    /// names the same files wherever it is resumed from.
    pub fn absolute(&self) -> DatasetName {
        self.map_paths(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
    }

    /// The same source with every path resolved (`..`, symbolic links) as
    /// far as it exists: one spelling for the same files.
    pub fn canonical(&self) -> DatasetName {
        self.map_paths(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
    }

    /// The same source with `f` applied to each of its paths.
    fn map_paths(&self, f: impl Fn(&Path) -> PathBuf) -> DatasetName {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist | DatasetName::Cifar10(None) => {
                self.clone()
            }
            DatasetName::Idx(dir) => DatasetName::Idx(f(dir)),
            DatasetName::Folder(dir) => DatasetName::Folder(f(dir)),
            DatasetName::Npy { images, labels } => DatasetName::Npy {
                images: f(images),
                labels: labels.as_deref().map(&f),
            },
            DatasetName::Npz(file) => DatasetName::Npz(f(file)),
            DatasetName::Cifar10(Some(dir)) => DatasetName::Cifar10(Some(f(dir))),
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetName::Mnist => write!(f, "mnist"),
            DatasetName::FashionMnist => write!(f, "fashion-mnist"),
            DatasetName::Idx(dir) => write!(f, "idx:{}", dir.display()),
            DatasetName::Folder(dir) => write!(f, "folder:{}", dir.display()),
            DatasetName::Npy {
                images,
                labels: None,
            } => write!(f, "npy:{}", images.display()),
            DatasetName::Npy {
                images,
                labels: Some(labels),
            } => write!(f, "npy:{},{}", images.display(), labels.display()),
            DatasetName::Npz(file) => write!(f, "npz:{}", file.display()),
            DatasetName::Cifar10(None) => write!(f, "cifar10"),
            DatasetName::Cifar10(Some(dir)) => write!(f, "cifar10:{}", dir.display()),
        }
    }
}

impl FromStr for DatasetName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let path = |p: &str| (!p.is_empty()).then(|| PathBuf::from(p));
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let parsed = match (kind, s.contains(':')) {
            ("mnist", false) => Some(DatasetName::Mnist),
            ("fashion-mnist", false) => Some(DatasetName::FashionMnist),
            ("cifar10", false) => Some(DatasetName::Cifar10(None)),
            ("cifar10", true) => path(rest).map(|d| DatasetName::Cifar10(Some(d))),
            ("idx", true) => path(rest).map(DatasetName::Idx),
            ("folder", true) => path(rest).map(DatasetName::Folder),
            ("npz", true) => path(rest).map(DatasetName::Npz),
            ("npy", true) => match rest.split_once(',') {
                Some((images, labels)) => {
                    path(images)
                        .zip(path(labels))
                        .map(|(i, l)| DatasetName::Npy {
                            images: i,
                            labels: Some(l),
                        })
                }
                None => path(rest).map(|images| DatasetName::Npy {
                    images,
                    labels: None,
                }),
            },
            _ => None,
        };
        parsed.ok_or_else(|| {
            format!(
                "unknown dataset '{s}': expected mnist, fashion-mnist, cifar10, idx:DIR, folder:DIR, npy:IMAGES.npy[,LABELS.npy], npz:FILE.npz or cifar10:DIR"
            )
        })
    }
}

impl serde::Serialize for DatasetName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for DatasetName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The places genlab looks for data, in order, and where it downloads to.
#[derive(Debug, Clone, Default)]
pub struct DataSources {
    /// `--data-dir`: the directory itself or its `<name>/` subdirectory.
    pub data_dir: Option<PathBuf>,
    /// `$GENLAB_DATA`: its `<name>/` subdirectory.
    pub genlab_data: Option<PathBuf>,
    /// The user cache (`~/.cache/genlab`, XDG rules); downloads go here.
    pub cache: Option<PathBuf>,
    /// System-wide datasets (`/usr/share/datasets`).
    pub system: Option<PathBuf>,
    /// Base URLs to download from; `None` means the dataset's public mirrors.
    /// `$GENLAB_MIRRORS` (comma-separated) overrides them.
    pub mirrors: Option<Vec<String>>,
    /// Never download (only look).
    pub offline: bool,
}

impl DataSources {
    /// The standard places, from the environment.
    pub fn from_env(data_dir: Option<PathBuf>) -> Self {
        let nonempty = |v: String| (!v.trim().is_empty()).then_some(v);
        DataSources {
            data_dir,
            genlab_data: env_dir("GENLAB_DATA"),
            cache: dirs::cache_dir().map(|d| d.join("genlab")),
            system: Some(PathBuf::from("/usr/share/datasets")),
            mirrors: std::env::var("GENLAB_MIRRORS")
                .ok()
                .and_then(nonempty)
                .map(|v| v.split(',').map(|m| m.trim().to_string()).collect()),
            offline: std::env::var("GENLAB_OFFLINE").is_ok_and(|v| v == "1"),
        }
    }

    /// Directories to look in for `name`, in order, each with a label saying why.
    pub fn candidates(&self, name: &DatasetName) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        let Some(sub) = name.dir_name() else {
            match name {
                DatasetName::Idx(dir) => out.push(("idx:DIR".to_string(), dir.clone())),
                DatasetName::Cifar10(Some(dir)) => {
                    out.push(("cifar10:DIR".to_string(), dir.clone()))
                }
                _ => {}
            }
            return out;
        };
        if let Some(d) = &self.data_dir {
            out.push(("--data-dir".into(), d.join(sub)));
            out.push(("--data-dir".into(), d.clone()));
        }
        if let Some(d) = &self.genlab_data {
            out.push(("$GENLAB_DATA".into(), d.join(sub)));
        }
        if let Some(d) = &self.cache {
            out.push(("user cache".into(), d.join(sub)));
        }
        if let Some(d) = &self.system {
            out.push(("system datasets".into(), d.join(sub)));
        }
        out
    }

    /// The first candidate directory that holds every file of the dataset.
    pub fn find(&self, name: &DatasetName) -> Option<PathBuf> {
        self.candidates(name)
            .into_iter()
            .map(|(_, dir)| dir)
            .find(|dir| name.complete_in(dir))
    }
}

/// A directory named by environment variable `var` (None if unset or empty).
/// A relative path is taken from the directory the user's shell was in
/// (`$PWD`), so it means the same to the CLI and to `cargo test`, which runs
/// each test binary from its crate's directory; without a usable `$PWD`,
/// from the current directory.
pub fn env_dir(var: &str) -> Option<PathBuf> {
    let raw = std::env::var_os(var).filter(|v| !v.to_string_lossy().trim().is_empty())?;
    let path = PathBuf::from(raw);
    if path.is_absolute() {
        return Some(path);
    }
    let shell_dir = std::env::var_os("PWD")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir());
    let base = shell_dir.or_else(|| std::env::current_dir().ok())?;
    Some(base.join(path))
}

/// Whether `dir` holds the four IDX files (raw or gzipped).
pub fn has_all_files(dir: &Path) -> bool {
    IDX_FILES.iter().all(|f| find_file(dir, f).is_some())
}

/// CIFAR-10's training batches' file names, in order.
pub const CIFAR10_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// CIFAR-10's test batch's file name.
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";

/// The directory holding CIFAR-10's batches: `dir` itself or its
/// `cifar-10-batches-bin/` (as the archive unpacks).
pub fn cifar10_batches_dir(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join("cifar-10-batches-bin")]
        .into_iter()
        .find(|d| cifar10_files(d).iter().all(|f| f.is_file()))
}

/// The batch files in `batches`, which a cache of them depends on.
pub fn cifar10_files(batches: &Path) -> Vec<PathBuf> {
    CIFAR10_TRAIN_FILES
        .iter()
        .chain([&CIFAR10_TEST_FILE])
        .map(|f| batches.join(f))
        .collect()
}
