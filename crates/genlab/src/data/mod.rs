//! Datasets: reading IDX files, finding (or downloading) them, and the views
//! the models train on.

pub mod batches;
pub mod corrupt;
pub mod dataset;
pub mod download;
pub mod idx;
pub mod locate;

pub use batches::{EpochOrder, PixelView};
pub use corrupt::remove_nonzero_fraction;
pub use dataset::{Dataset, Split};
pub use locate::{DataSources, DatasetName};

/// Side length of every image genlab handles.
pub const SIDE: usize = 28;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;
/// Number of classes.
pub const CLASSES: usize = 10;
