//! Checkpoints as safetensors: named f32 tensors plus string metadata (the
//! training state: epoch, RNG state, ...). Written atomically.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::atomic::write_atomic;

/// A dense f32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl TensorData {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape and data disagree"
        );
        TensorData { shape, data }
    }
}

struct F32View<'a>(&'a TensorData);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.0.data.len() * 4
    }
}

/// Rewrites the JSON header of serialised safetensors with its keys sorted:
/// the crate writes the metadata in hash-map order, which changes from
/// process to process, and the same weights should give the same bytes (and
/// the same SHA-256). The sorted header has the same length, so the data
/// offsets stay valid.
fn canonical_header(bytes: &mut [u8]) {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return;
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return;
    };
    let text = String::from_utf8_lossy(header);
    let trimmed = text.trim_end();
    let Ok(value) = serde_json::from_str::<serde_json::Value>(trimmed) else {
        return;
    };
    // serde_json's map is a BTreeMap: to_string writes keys sorted.
    let Ok(sorted) = serde_json::to_string(&value) else {
        return;
    };
    if sorted.len() == trimmed.len() {
        bytes[8..8 + sorted.len()].copy_from_slice(sorted.as_bytes());
    }
}

/// Reads a safetensors stream only as far as its header says it goes: the
/// 8-byte header length, the JSON header, then the data up to the last
/// tensor's end offset (one byte more is read to catch trailing data).
fn read_claimed(mut file: impl std::io::Read) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| {
        anyhow!("not a valid safetensors file (shorter than its 8-byte header length)")
    })?;
    let header_len = u64::from_le_bytes(len);
    if header_len > 100 << 20 {
        bail!("not a valid safetensors file (it claims a {header_len}-byte header)");
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|_| anyhow!("not a valid safetensors file (truncated header)"))?;
    let value: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| anyhow!("not a valid safetensors file (header: {e})"))?;
    let data_len = value
        .as_object()
        .map(|o| {
            o.values()
                .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    if data_len > crate::bounded::DATA_LIMIT {
        bail!(
            "its header claims {data_len} bytes of tensors, more than genlab reads ({} bytes)",
            crate::bounded::DATA_LIMIT
        );
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + data_len as usize);
    bytes.extend_from_slice(&len);
    bytes.extend_from_slice(&header);
    file.take(data_len + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Named tensors and metadata, saved as one safetensors file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    pub tensors: BTreeMap<String, TensorData>,
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    pub fn insert(&mut self, name: &str, tensor: TensorData) {
        self.tensors.insert(name.to_string(), tensor);
    }

    pub fn set_meta(&mut self, key: &str, value: impl Into<String>) {
        self.metadata.insert(key.to_string(), value.into());
    }

    /// The image shape the checkpoint's networks were built for
    /// (checkpoints written before genlab recorded it hold MNIST-shaped
    /// networks).
    pub fn image_shape(&self) -> Result<crate::data::ImageShape> {
        use crate::data::{IMAGE_META, ImageShape};
        match self.metadata.get(IMAGE_META) {
            None => Ok(ImageShape::MNIST),
            Some(s) => ImageShape::from_meta(s)
                .ok_or_else(|| anyhow!("checkpoint entry {IMAGE_META} = '{s}' is not CxHxW")),
        }
    }

    /// The metadata value `key`, or an error naming the checkpoint.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata.get(key).map(String::as_str).ok_or_else(|| {
            anyhow!("checkpoint has no '{key}' entry; it was not written by this genlab")
        })
    }

    /// Tensor `name`, checked against the expected shape.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<&TensorData> {
        let t = self.tensors.get(name).ok_or_else(|| {
            anyhow!(
                "checkpoint has no tensor '{name}' (it has: {})",
                self.names().join(", ")
            )
        })?;
        if t.shape != shape {
            bail!(
                "checkpoint tensor '{name}' has shape {:?}, the configuration expects {:?}",
                t.shape,
                shape
            );
        }
        Ok(t)
    }

    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let views: Vec<(String, F32View<'_>)> = self
            .tensors
            .iter()
            .map(|(k, v)| (k.clone(), F32View(v)))
            .collect();
        let meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        let mut bytes =
            safetensors::serialize(views, Some(meta)).context("serialising safetensors")?;
        canonical_header(&mut bytes);
        Ok(bytes)
    }

    /// Writes the checkpoint atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Reads a checkpoint; every tensor must be f32.
    pub fn load(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("{}: no such checkpoint", path.display())
            } else {
                anyhow!("{}: cannot read: {e}", path.display())
            }
        })?;
        let bytes = read_claimed(file).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Self::from_bytes(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow!("not a valid safetensors file ({e})"))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| anyhow!("not a valid safetensors file ({e})"))?;
        let mut out = Checkpoint::default();
        if let Some(meta) = header.metadata() {
            out.metadata = meta.clone().into_iter().collect();
        }
        for (name, view) in tensors.tensors() {
            if view.dtype() != Dtype::F32 {
                bail!("tensor '{name}' is {:?}, genlab expects F32", view.dtype());
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            out.tensors
                .insert(name, TensorData::new(view.shape().to_vec(), data));
        }
        Ok(out)
    }
}
