//! Datasets: reading IDX files, finding (or downloading) them, and the views
//! the models train on.

pub mod arrays;
pub mod batches;
pub mod bytes;
pub mod cache;
pub mod cifar;
pub mod corrupt;
pub mod dataset;
pub mod download;
pub mod folder;
pub mod idx;
pub mod locate;
pub mod prepare;
pub mod split;

pub use batches::{EpochOrder, PixelView};
pub use corrupt::remove_nonzero_fraction;
pub use locate::{DataSources, DatasetName};
pub use prepare::{ImageOptions, ResizeFilter};
pub use split::{Dataset, Split};

/// Side length of the images of the IDX datasets genlab reads (MNIST and
/// Fashion-MNIST, and IDX files of their shape).
pub const SIDE: usize = 28;
/// Pixels per image of those datasets.
pub const PIXELS: usize = SIDE * SIDE;

/// The shape of a dataset's images, which networks are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    /// MNIST's and Fashion-MNIST's: one channel of 28 x 28.
    pub const MNIST: ImageShape = ImageShape {
        channels: 1,
        height: SIDE,
        width: SIDE,
    };

    /// Values per image.
    pub fn pixels(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// `[channels, height, width]`, a network's input shape for images.
    pub fn dims(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// The shape written into checkpoints: `CxHxW`.
    pub fn to_meta(&self) -> String {
        format!("{}x{}x{}", self.channels, self.height, self.width)
    }

    /// Reads [`ImageShape::to_meta`]'s form.
    pub fn from_meta(s: &str) -> Option<ImageShape> {
        let v: Vec<usize> = s
            .split('x')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        match v[..] {
            [channels, height, width] if channels * height * width > 0 => Some(ImageShape {
                channels,
                height,
                width,
            }),
            _ => None,
        }
    }
}

/// The checkpoint metadata key of the image shape a network was built for.
pub const IMAGE_META: &str = "genlab.image";
