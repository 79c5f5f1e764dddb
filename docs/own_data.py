"""Writes the real datasets the README's "Your own data" figures are trained on,
from files that ship inside scikit-learn (no download):

- OUT/digits.npy, OUT/digits_labels.npy: scikit-learn's 1,797 8x8 handwritten
  digits (UCI optdigits), grey levels 0..16 scaled to 0..255 as uint8;
- OUT/patches/{china,flower}/NNNNN.png: 16x16 colour patches cut on an 8-pixel
  grid from the two sample photographs (china.jpg, flower.jpg), one class
  folder per photograph.

Usage: python3 docs/own_data.py OUT   (needs scikit-learn, numpy and Pillow)
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

PATCH = 16
STRIDE = 8


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    np.save(out / "digits.npy", images)
    np.save(out / "digits_labels.npy", digits.target.astype(np.int64))
    print(f"digits: {images.shape} uint8, labels {np.bincount(digits.target).tolist()}")

    photos = load_sample_images()
    for name, photo in zip(photos.filenames, photos.images):
        label = Path(name).stem
        folder = out / "patches" / label
        folder.mkdir(parents=True, exist_ok=True)
        count = 0
        height, width, _ = photo.shape
        for top in range(0, height - PATCH + 1, STRIDE):
            for left in range(0, width - PATCH + 1, STRIDE):
                patch = photo[top : top + PATCH, left : left + PATCH]
                Image.fromarray(patch).save(folder / f"{count:05}.png")
                count += 1
        print(f"patches/{label}: {count} of {PATCH}x{PATCH}x3 from {photo.shape}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 docs/own_data.py OUT")
    main(Path(sys.argv[1]))
