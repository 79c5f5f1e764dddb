//! A VAE run's figures: loss curves, reconstructions, samples,
//! interpolation, the latent scatter and, for 2-D latents, the manifold.

use super::*;

/// Loss curves from the metrics log.
pub fn plot_metrics(run: &RunDir) -> Result<()> {
    let log = run.metrics();
    let s = |key: &str, name: &str| log.named_series(key, name);
    line_plot(
        &run.images().join("loss"),
        "VAE loss per image (reconstruction + KL)",
        "epoch",
        "loss",
        &[s("loss", "train")?, s("val_loss", "validation")?],
    )?;
    line_plot(
        &run.images().join("loss_parts"),
        "Loss terms per image",
        "epoch",
        "nats / squared error",
        &[
            s("recon", "train reconstruction")?,
            s("val_recon", "validation reconstruction")?,
            s("kl", "train KL")?,
            s("val_kl", "validation KL")?,
        ],
    )
}

/// The two leading principal directions of `rows` (n x d), as d-vectors.
fn principal_axes(rows: &[f32], d: usize) -> [Vec<f64>; 2] {
    let n = rows.len() / d;
    let mean: Vec<f64> = (0..d)
        .map(|j| {
            rows.iter()
                .skip(j)
                .step_by(d)
                .map(|&v| v as f64)
                .sum::<f64>()
                / n as f64
        })
        .collect();
    let mut cov = nalgebra::DMatrix::<f64>::zeros(d, d);
    for r in rows.chunks_exact(d) {
        for a in 0..d {
            for b in 0..d {
                cov[(a, b)] += (r[a] as f64 - mean[a]) * (r[b] as f64 - mean[b]);
            }
        }
    }
    let eig = nalgebra::SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let axis =
        |k: usize| -> Vec<f64> { eig.eigenvectors.column(order[k]).iter().copied().collect() };
    [axis(0), axis(1.min(d - 1))]
}

/// Values per latent dimension in the traversal figure, from -3 to 3.
pub const TRAVERSAL_STEPS: usize = 11;
/// The most latent dimensions the traversal figure shows, a row each.
pub const TRAVERSAL_DIMS: usize = 16;

/// The most test images the latent scatter shows.
const SCATTER_IMAGES: usize = 10_000;

/// Every end-of-training picture: loss curves, reconstructions, prior
/// samples, an interpolation strip, latent traversals, the latent scatter
/// and (2-D latents) the manifold.
pub fn write_figures(
    run: &RunDir,
    vae: &Vae,
    config: &VaeConfig,
    test: &Split,
    seed: u64,
) -> Result<()> {
    plot_metrics(run)?;
    let images = run.images();
    let l = vae.net.latent;
    let image = vae.net.image;
    let per = image.pixels();

    // Reconstructions: the first 10 test digits above their reconstructions (posterior means).
    let originals = crate::data::batches::first_rows(test, 10);
    let (mean, _) = vae.encode(&originals)?;
    let recon = vae.decode(&mean)?;
    let mut tiles = originals.clone();
    tiles.extend(&recon);
    save_grid(
        &images.join("reconstructions.png"),
        &tiles,
        image,
        2,
        originals.len() / per,
    )?;

    // Prior samples.
    let z = fixed_noise(seed, 4, 64 * l);
    save_grid(&images.join("samples.png"), &vae.decode(&z)?, image, 8, 8)?;

    // Interpolation between the posterior means of test digits 0 and 1, 12 steps.
    if mean.len() >= 2 * l {
        let steps = 12;
        let mut zs = Vec::with_capacity(steps * l);
        for s in 0..steps {
            let t = s as f32 / (steps - 1) as f32;
            zs.extend((0..l).map(|j| (1.0 - t) * mean[j] + t * mean[l + j]));
        }
        let mut strip = originals[..per].to_vec();
        strip.extend(vae.decode(&zs)?);
        strip.extend(&originals[per..2 * per]);
        save_grid(
            &images.join("interpolation.png"),
            &strip,
            image,
            1,
            steps + 2,
        )?;
    }

    // Latent traversals: test image 0's posterior mean with one dimension
    // at a time (a row each) set to each of TRAVERSAL_STEPS values over
    // [-3, 3], the prior's bulk; what each dimension encodes, if anything.
    if !mean.is_empty() {
        let dims = l.min(TRAVERSAL_DIMS);
        let mut zs = Vec::with_capacity(dims * TRAVERSAL_STEPS * l);
        for d in 0..dims {
            for s in 0..TRAVERSAL_STEPS {
                let mut z = mean[..l].to_vec();
                z[d] = -3.0 + 6.0 * s as f32 / (TRAVERSAL_STEPS - 1) as f32;
                zs.extend(z);
            }
        }
        save_grid(
            &images.join("traversal.png"),
            &vae.decode(&zs)?,
            image,
            dims,
            TRAVERSAL_STEPS,
        )?;
    }

    // Scatter of the test set's latent means by class: at most MNIST's
    // 10,000 test images, since more points only overdraw the plot and a
    // large test split would otherwise be converted whole.
    let shown = test.len().min(SCATTER_IMAGES);
    let all = crate::data::batches::first_rows(test, shown);
    let (means, _) = vae.encode(&all)?;
    let no_labels = vec![0u8; shown];
    let labels = match &test.labels {
        Some(labels) => &labels[..shown],
        None => &no_labels[..],
    };
    let (points, axes, title): (Vec<(f32, f32)>, (&str, &str), String) = if l == 2 {
        (
            means.chunks_exact(2).map(|m| (m[0], m[1])).collect(),
            ("z[0]", "z[1]"),
            format!("Latent means of {} test images", labels.len()),
        )
    } else {
        let [a, b] = principal_axes(&means, l);
        let proj = |m: &[f32], ax: &[f64]| {
            m.iter().zip(ax).map(|(&v, w)| v as f64 * w).sum::<f64>() as f32
        };
        (
            means
                .chunks_exact(l)
                .map(|m| (proj(m, &a), proj(m, &b)))
                .collect(),
            ("principal component 1", "principal component 2"),
            format!(
                "Latent means ({l}-D) of {} test images: first two principal components",
                labels.len()
            ),
        )
    };
    latent_scatter(
        &images.join("latent_scatter"),
        &points,
        labels,
        &title,
        axes,
    )?;

    if l == 2 {
        let n = config.manifold_size;
        let e = config.manifold_extent as f32;
        let at = |i: usize| {
            if n > 1 {
                -e + 2.0 * e * i as f32 / (n - 1) as f32
            } else {
                0.0
            }
        };
        let mut zs = Vec::with_capacity(n * n * 2);
        for row in 0..n {
            for col in 0..n {
                zs.push(at(col));
                zs.push(at(n - 1 - row));
            }
        }
        manifold_plot(
            &images.join("manifold.png"),
            &vae.decode(&zs)?,
            image,
            n,
            config.manifold_extent,
            &format!("Decoded images over z in [-{e}, {e}]^2"),
        )?;
    }
    Ok(())
}
