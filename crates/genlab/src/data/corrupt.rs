//! Corruption for inpainting: remove a fraction of each digit's ink.

use rand::seq::index::sample;

use crate::rng::GenRng;

/// Sets `round(p * nonzero)` of the image's non-zero pixels, chosen uniformly,
/// to 0. Returns the corrupted image and the mask of removed pixels.
pub fn remove_nonzero_fraction(image: &[f32], p: f32, rng: &mut GenRng) -> (Vec<f32>, Vec<bool>) {
    assert!((0.0..1.0).contains(&p), "fraction must be in [0, 1)");
    let nonzero: Vec<usize> = (0..image.len()).filter(|&i| image[i] != 0.0).collect();
    let remove = (p * nonzero.len() as f32).round() as usize;
    let mut corrupted = image.to_vec();
    let mut mask = vec![false; image.len()];
    for k in sample(rng, nonzero.len(), remove) {
        let i = nonzero[k];
        corrupted[i] = 0.0;
        mask[i] = true;
    }
    (corrupted, mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, stream};

    #[test]
    fn removes_the_stated_fraction_of_nonzero_pixels_only() {
        let image: Vec<f32> = (0..784)
            .map(|i| if i % 3 == 0 { 0.7 } else { 0.0 })
            .collect();
        let nonzero = image.iter().filter(|&&x| x != 0.0).count();
        let mut rng = stream(3, Purpose::Corrupt, 0);
        let (c, mask) = remove_nonzero_fraction(&image, 0.5, &mut rng);
        let removed = mask.iter().filter(|&&m| m).count();
        assert_eq!(removed, (0.5 * nonzero as f32).round() as usize);
        for i in 0..784 {
            if mask[i] {
                assert_eq!(image[i], 0.7);
                assert_eq!(c[i], 0.0);
            } else {
                assert_eq!(c[i], image[i]);
            }
        }
        let (c2, mask2) = remove_nonzero_fraction(&image, 0.5, &mut stream(3, Purpose::Corrupt, 0));
        assert_eq!((c, mask), (c2, mask2));
    }
}
