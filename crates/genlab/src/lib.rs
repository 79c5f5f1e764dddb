//! genlab: train, sample, inspect and evaluate classic deep generative models
//! (binary RBM, MLP and convolutional VAEs, MLP GAN) on MNIST-style images.
//!
//! One module per concern: [`data`] (IDX files, finding and downloading
//! datasets, views and batches), [`models`] (one file per model family with its
//! configuration and training loop), [`run`] (run directories, metrics,
//! checkpoints), [`viz`] (image grids and plots), [`report`] (the static
//! HTML report), [`reproduce`] (every seed preset trained, evaluated and
//! reported), [`config`] and [`presets`] (resolving a run's configuration),
//! [`device`] (backend choice).

pub mod atomic;
pub mod bench_util;
pub mod bounded;
pub mod config;
pub mod cpu;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod inspect;
pub mod interrupt;
pub mod models;
pub mod nn;
pub mod pipeline;
pub mod presets;
pub mod progress;
pub mod report;
pub mod reproduce;
pub mod rng;
pub mod run;
pub mod sweep;
pub mod viz;
