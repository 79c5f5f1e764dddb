//! NumPy sources: `npy:IMAGES.npy[,LABELS.npy]` and `npz:FILE.npz`.
//!
//! Images are arrays of `[N, H, W]` (grey), `[N, H, W, C]` with C = 1 or 3,
//! or `[N, D]` with D a square (grey S x S images flattened row by row, as
//! Quick, Draw!'s bitmaps are), in C order. Unsigned bytes are taken as
//! they are; floats in [0, 1] are scaled by 255 and floats in [0, 255] taken
//! as they are, both rounded; other integers must lie in 0-255. Labels are
//! integers 0-255, one per image. An archive holds `x_train` and `x_test`
//! (with `y_train` and `y_test` where labelled), or `images` (with
//! `labels`), or a single array; without a test array the images are split
//! by `data.test_fraction`.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use npyz::{DType, NpyFile, TypeChar};

use super::ImageShape;
use super::locate::DatasetName;
use super::prepare::ImageOptions;
use super::split::{Dataset, Split, numbered_classes, seeded_split};

/// An array's shape and its values: bytes as they are (the usual image
/// dtype, kept at one byte a value), anything else as f64 (exact for every
/// type accepted).
struct Array {
    shape: Vec<usize>,
    values: Values,
}

enum Values {
    Bytes(Vec<u8>),
    Numbers(Vec<f64>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Bytes(v) => v.len(),
            Values::Numbers(v) => v.len(),
        }
    }

    /// Every value as f64, in order.
    fn iter(&self) -> Box<dyn Iterator<Item = f64> + '_> {
        match self {
            Values::Bytes(v) => Box::new(v.iter().map(|&b| b as f64)),
            Values::Numbers(v) => Box::new(v.iter().copied()),
        }
    }
}

/// Reads one array of plain integers or floats; `what` names it in errors.
fn read_array<R: Read>(npy: NpyFile<R>, what: &str) -> Result<Array> {
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == npyz::Order::Fortran {
        bail!(
            "{what}: stored in Fortran order; save it in C order (np.save(f, np.ascontiguousarray(a)))"
        );
    }
    let DType::Plain(ty) = npy.dtype() else {
        bail!("{what}: a structured array; give a plain array of numbers");
    };
    let bad = || {
        anyhow::anyhow!(
            "{what}: dtype {} is not an image or label type; use uint8, an integer type or float32/float64",
            ty
        )
    };
    let err = |e: std::io::Error| anyhow::anyhow!("{what}: cannot read its values: {e}");
    macro_rules! as_f64 {
        ($t:ty) => {
            npy.into_vec::<$t>()
                .map_err(err)?
                .into_iter()
                .map(|v| v as f64)
                .collect()
        };
    }
    let count: usize = shape.iter().product();
    if let (TypeChar::Uint, 1) = (ty.type_char(), ty.size_field()) {
        let bytes = npy.into_vec::<u8>().map_err(err)?;
        if bytes.len() != count {
            bail!(
                "{what}: {} values for the shape {shape:?}; the file is truncated",
                bytes.len()
            );
        }
        return Ok(Array {
            shape,
            values: Values::Bytes(bytes),
        });
    }
    let values: Vec<f64> = match (ty.type_char(), ty.size_field()) {
        (TypeChar::Uint, 2) => as_f64!(u16),
        (TypeChar::Uint, 4) => as_f64!(u32),
        (TypeChar::Uint, 8) => as_f64!(u64),
        (TypeChar::Int, 1) => as_f64!(i8),
        (TypeChar::Int, 2) => as_f64!(i16),
        (TypeChar::Int, 4) => as_f64!(i32),
        (TypeChar::Int, 8) => as_f64!(i64),
        (TypeChar::Float, 4) => as_f64!(f32),
        (TypeChar::Float, 8) => as_f64!(f64),
        _ => return Err(bad()),
    };
    let is_float = ty.type_char() == TypeChar::Float;
    if values.len() != count {
        bail!(
            "{what}: {} values for the shape {shape:?}; the file is truncated",
            values.len()
        );
    }
    Ok(Array {
        shape,
        values: Values::Numbers(if is_float {
            scale_floats(values, what)?
        } else {
            values
        }),
    })
}

/// Floats in [0, 1] become 0-255; floats already on that scale stay.
fn scale_floats(values: Vec<f64>, what: &str) -> Result<Vec<f64>> {
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        bail!("{what}: holds {v}; every value must be a finite number");
    }
    let max = values.iter().copied().fold(0.0f64, f64::max);
    let scale = if max <= 1.0 { 255.0 } else { 1.0 };
    Ok(values.into_iter().map(|v| (v * scale).round()).collect())
}

/// An image array as byte images in the models' layout.
fn images_of(a: Array, what: &str) -> Result<(ImageShape, Vec<u8>)> {
    let shape = match a.shape[..] {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c] => (n, h, w, c),
        [n, d] => {
            let side = (d as f64).sqrt().round() as usize;
            if side * side != d {
                bail!(
                    "{what}: shape [{n}, {d}]: a flattened image needs a square length (784 for 28x28); give [N, H, W] or [N, H, W, C] instead"
                );
            }
            (n, side, side, 1)
        }
        _ => bail!(
            "{what}: shape {:?} has rank {}; images are [N, H, W], [N, H, W, C] or [N, H*W]",
            a.shape,
            a.shape.len()
        ),
    };
    let (n, h, w, c) = shape;
    if n == 0 || h == 0 || w == 0 {
        bail!("{what}: shape {:?} holds no images", a.shape);
    }
    if c != 1 && c != 3 {
        bail!(
            "{what}: {c} channels; images need 1 (grey) or 3 (RGB) (drop an alpha channel with a[..., :3])"
        );
    }
    let bytes = match a.values {
        Values::Bytes(b) => b,
        Values::Numbers(v) => {
            if let Some(x) = v.iter().find(|x| !(0.0..=255.0).contains(*x)) {
                bail!("{what}: holds the value {x}, outside 0-255 (or 0-1 for floats)");
            }
            v.into_iter().map(|x| x as u8).collect()
        }
    };
    let plane = h * w;
    // NumPy's [N, H, W, C] is channel-last; the models read channel-major.
    let pixels = if c == 1 {
        bytes
    } else {
        let mut pixels = vec![0u8; bytes.len()];
        for (img, out) in bytes
            .chunks_exact(plane * c)
            .zip(pixels.chunks_exact_mut(plane * c))
        {
            for (i, px) in img.chunks_exact(c).enumerate() {
                for (ch, &v) in px.iter().enumerate() {
                    out[ch * plane + i] = v;
                }
            }
        }
        pixels
    };
    Ok((
        ImageShape {
            channels: c,
            height: h,
            width: w,
        },
        pixels,
    ))
}

/// A label array for `n` images.
fn labels_of(a: Array, n: usize, what: &str) -> Result<Vec<u8>> {
    if a.shape.len() != 1 && !(a.shape.len() == 2 && a.shape[1] == 1) {
        bail!(
            "{what}: shape {:?}; labels are one integer per image, shape [N]",
            a.shape
        );
    }
    if a.values.len() != n {
        bail!(
            "{what}: {} labels for {n} images; give one label per image",
            a.values.len()
        );
    }
    a.values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if v.fract() == 0.0 && (0.0..=255.0).contains(&v) {
                Ok(v as u8)
            } else {
                bail!("{what}: label {v} at index {i} is not a class 0-255")
            }
        })
        .collect()
}

fn open_npy(path: &Path) -> Result<NpyFile<std::io::BufReader<std::fs::File>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    NpyFile::new(std::io::BufReader::new(file))
        .map_err(|e| anyhow::anyhow!("{}: not a NumPy .npy file ({e})", path.display()))
}

/// The labelled or unlabelled split of one image array and its labels.
fn split_of(images: Array, labels: Option<Array>, what: &str, labels_what: &str) -> Result<Split> {
    let (shape, pixels) = images_of(images, what)?;
    let n = pixels.len() / shape.pixels();
    let labels = labels.map(|l| labels_of(l, n, labels_what)).transpose()?;
    Ok(Split::new(shape, pixels, labels))
}

/// Reads an `npy:` or `npz:` source.
pub fn read_arrays(name: &DatasetName, opts: &ImageOptions) -> Result<Dataset> {
    let (train, test, dir) = match name {
        DatasetName::Npy { images, labels } => {
            let what = images.display().to_string();
            let image_array = read_array(open_npy(images)?, &what)?;
            let label_array = match labels {
                Some(l) => Some(read_array(open_npy(l)?, &l.display().to_string())?),
                None => None,
            };
            let labels_what = labels
                .as_ref()
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            let all = split_of(image_array, label_array, &what, &labels_what)?;
            let (train, test) = seeded_split(all, opts.test_fraction, &what)?;
            (train, test, images.parent().map(Path::to_path_buf))
        }
        DatasetName::Npz(path) => {
            let (train, test) = read_npz(path, opts)?;
            (train, test, path.parent().map(Path::to_path_buf))
        }
        _ => unreachable!("read_arrays is called for npy: and npz: sources"),
    };
    if train.shape != test.shape {
        bail!(
            "{name}: the training images are {} and the test images {}; both need one shape",
            train.shape.to_meta(),
            test.shape.to_meta()
        );
    }
    let classes = train
        .labels
        .iter()
        .chain(&test.labels)
        .flatten()
        .max()
        .map_or(0, |&m| m as usize + 1);
    Ok(Dataset {
        name: name.clone(),
        dir: dir.unwrap_or_default(),
        image: train.shape,
        classes: numbered_classes(classes),
        train,
        test,
        validation: None,
        cache: None,
    })
}

/// The arrays of a NumPy archive (see the module's documentation).
fn read_npz(path: &Path, opts: &ImageOptions) -> Result<(Split, Split)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| anyhow::anyhow!("{}: not a NumPy .npz archive ({e})", path.display()))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|f| {
            f.ok()
                .and_then(|f| f.strip_suffix(".npy").map(String::from))
        })
        .collect();
    let mut array = |name: &str| -> Result<Option<Array>> {
        if !names.iter().any(|n| n == name) {
            return Ok(None);
        }
        let what = format!("{}: array {name}", path.display());
        let entry = zip
            .by_name(&format!("{name}.npy"))
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        let npy =
            NpyFile::new(entry).map_err(|e| anyhow::anyhow!("{what}: not a .npy array ({e})"))?;
        read_array(npy, &what).map(Some)
    };
    let what = |n: &str| format!("{}: array {n}", path.display());
    if let Some(x_train) = array("x_train")? {
        let Some(x_test) = array("x_test")? else {
            bail!(
                "{}: has x_train but no x_test; add the test images, or name the one array images",
                path.display()
            );
        };
        let (y_train, y_test) = (array("y_train")?, array("y_test")?);
        if y_train.is_some() != y_test.is_some() {
            bail!(
                "{}: labels for one split only; give both y_train and y_test or neither",
                path.display()
            );
        }
        let train = split_of(x_train, y_train, &what("x_train"), &what("y_train"))?;
        let test = split_of(x_test, y_test, &what("x_test"), &what("y_test"))?;
        return Ok((train, test));
    }
    let (image_name, label_name) = if names.iter().any(|n| n == "images") {
        ("images".to_string(), "labels".to_string())
    } else if names.len() == 1 {
        (names[0].clone(), String::new())
    } else {
        bail!(
            "{}: holds {}; name the arrays x_train, x_test (and y_train, y_test), or images (and labels)",
            path.display(),
            if names.is_empty() {
                "no arrays".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    let images = array(&image_name)?.expect("listed");
    let labels = if label_name.is_empty() {
        None
    } else {
        array(&label_name)?
    };
    let all = split_of(images, labels, &what(&image_name), &what(&label_name))?;
    seeded_split(all, opts.test_fraction, &path.display().to_string())
}
