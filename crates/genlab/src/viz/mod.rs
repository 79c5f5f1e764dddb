//! Pictures every model uses: image grids (PNG) and line plots (PNG and SVG).

pub mod grid;
pub mod plot;

pub use grid::{GridOptions, grid_image, save_grid, save_png};
pub use plot::{Series, line_plot};
pub mod latent;

pub use latent::{latent_scatter, manifold_plot};
