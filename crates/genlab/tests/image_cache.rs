//! The decoded-image cache (reused, rebuilt when its source or the options
//! change, rebuilt when damaged, the same bytes as a fresh decode) and
//! CIFAR-10's download over loopback.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use genlab::data::download::{download_cifar10, sha256_hex};
use genlab::data::{DataSources, Dataset, DatasetName, ImageOptions};

fn sources(cache: &Path) -> DataSources {
    DataSources {
        cache: Some(cache.to_path_buf()),
        offline: true,
        ..Default::default()
    }
}

/// `n` 6x5 colour PNGs in class folders `a` and `b`, pixel values from `k`.
fn folder(dir: &Path, n: usize, k: u8) {
    for class in ["a", "b"] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..n {
            let img = image::RgbImage::from_fn(6, 5, |x, y| {
                image::Rgb([
                    k.wrapping_add((x * 40 + y) as u8),
                    i as u8 * 9,
                    y as u8 * 50,
                ])
            });
            img.save(dir.join(class).join(format!("{i:03}.png")))
                .unwrap();
        }
    }
}

fn load(dir: &Path, cache: &Path, opts: &ImageOptions) -> Dataset {
    Dataset::load_with(
        &DatasetName::Folder(dir.to_path_buf()),
        &sources(cache),
        opts,
        false,
    )
    .unwrap()
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(".genlab-cache"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_folder_is_decoded_once_then_mapped_and_rebuilt_when_it_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, user_cache) = (tmp.path().join("imgs"), tmp.path().join("user"));
    folder(&dir, 10, 0);
    let opts = ImageOptions::default();
    let first = load(&dir, &user_cache, &opts);
    let files = cache_files(&dir);
    assert_eq!(files.len(), 1, "one cache file beside the data: {files:?}");
    assert_eq!(first.cache.as_deref(), Some(files[0].as_path()));
    assert!(first.train.pixels.is_mapped() && first.test.pixels.is_mapped());
    assert_eq!(first.train.len() + first.test.len(), 20);
    assert_eq!(first.classes, ["a", "b"]);
    let stamp = std::fs::metadata(&files[0]).unwrap().modified().unwrap();

    // Reused as it is: same file, not rewritten, same images and labels.
    let again = load(&dir, &user_cache, &opts);
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        stamp
    );
    assert_eq!(again.train.pixels, first.train.pixels);
    assert_eq!(again.test.labels, first.test.labels);

    // Another spelling of the same directory shares the cache.
    let respelled = load(&dir.join("..").join("imgs"), &user_cache, &opts);
    assert_eq!(cache_files(&dir), files, "one cache for both spellings");
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        stamp
    );
    assert_eq!(respelled.train.pixels, first.train.pixels);

    // The same bytes as a decode without any cache (the cache dir made a file).
    let bare = tmp.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.file_name() != ".genlab-cache" {
            let to = bare.join(e.file_name());
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        }
    }
    std::fs::write(bare.join(".genlab-cache"), b"not a directory").unwrap();
    let uncached = Dataset::load_with(
        &DatasetName::Folder(bare.clone()),
        &DataSources {
            cache: None,
            offline: true,
            ..Default::default()
        },
        &opts,
        false,
    )
    .unwrap();
    assert!(uncached.cache.is_none() && !uncached.train.pixels.is_mapped());
    assert_eq!(uncached.train.pixels, first.train.pixels);
    assert_eq!(uncached.test.pixels, first.test.pixels);

    // One image changed: rebuilt in place with the new pixels.
    folder(&dir, 1, 100);
    let changed = load(&dir, &user_cache, &opts);
    assert_eq!(cache_files(&dir), files);
    assert_ne!(changed.train.pixels, first.train.pixels);
    // One image more: rebuilt, and counted.
    image::RgbImage::from_pixel(6, 5, image::Rgb([1, 2, 3]))
        .save(dir.join("b").join("extra.png"))
        .unwrap();
    let grown = load(&dir, &user_cache, &opts);
    assert_eq!(grown.train.len() + grown.test.len(), 21);

    // Other options: a cache file of their own beside the first.
    let grey = ImageOptions {
        grey: true,
        ..ImageOptions::default()
    };
    let g = load(&dir, &user_cache, &grey);
    assert_eq!(g.image.channels, 1);
    assert_eq!(cache_files(&dir).len(), 2);

    // A damaged cache file (cut short, or another file's bytes) is rebuilt.
    // Damage in place would pull the pages from under a mapping of it, so
    // none is held while the file is written.
    let expected = grown.train.pixels.to_vec();
    drop(grown);
    for damage in [&b"genlab images"[..], &[0u8; 5000][..]] {
        std::fs::write(&files[0], damage).unwrap();
        let healed = load(&dir, &user_cache, &opts);
        assert_eq!(*healed.train.pixels, expected[..]);
        drop(healed);
        assert!(std::fs::metadata(&files[0]).unwrap().len() > 4096);
    }
}

#[test]
fn an_unwritable_place_beside_the_data_falls_back_to_the_user_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, user_cache) = (tmp.path().join("imgs"), tmp.path().join("user"));
    folder(&dir, 4, 7);
    // A file where the cache directory would go: it cannot be created there.
    std::fs::write(dir.join(".genlab-cache"), b"mine").unwrap();
    let d = load(&dir, &user_cache, &ImageOptions::default());
    let path = d.cache.expect("cached in the user cache");
    assert!(
        path.starts_with(user_cache.join("images")),
        "{}",
        path.display()
    );
    assert_eq!(std::fs::read(dir.join(".genlab-cache")).unwrap(), b"mine");
    let again = load(&dir, &user_cache, &ImageOptions::default());
    assert_eq!(again.cache.as_deref(), Some(path.as_path()));
    assert_eq!(again.train.pixels, d.train.pixels);
}

/// A CIFAR-10 archive of `n` records per batch, as its authors lay it out.
fn cifar_archive(n: usize) -> Vec<u8> {
    use genlab::data::cifar::{TEST_FILE, TRAIN_FILES};
    let names = TRAIN_FILES.iter().chain([&TEST_FILE]);
    let mut tar = tar::Builder::new(Vec::new());
    for (b, name) in names.enumerate() {
        let mut body = Vec::new();
        for i in 0..n {
            body.push(((b + i) % 10) as u8);
            body.extend((0..3072).map(|p| ((p + i * 7 + b) % 256) as u8));
        }
        let mut head = tar::Header::new_gnu();
        head.set_size(body.len() as u64);
        head.set_mode(0o644);
        head.set_cksum();
        tar.append_data(&mut head, format!("cifar-10-batches-bin/{name}"), &body[..])
            .unwrap();
    }
    let mut readme = tar::Header::new_gnu();
    readme.set_size(5);
    readme.set_cksum();
    tar.append_data(
        &mut readme,
        "cifar-10-batches-bin/readme.html",
        &b"hello"[..],
    )
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

#[test]
fn cifar10_downloads_only_an_archive_of_the_right_checksum() {
    let archive = cifar_archive(3);
    let good = sha256_hex(&archive);
    let server = common::LoopbackServer::start(vec![(
        "cifar-10-binary.tar.gz".to_string(),
        archive.clone(),
    )]);
    let tmp = tempfile::tempdir().unwrap();

    let wrong = "0".repeat(64);
    let dest = tmp.path().join("bad");
    let err =
        download_cifar10(std::slice::from_ref(&server.base), &dest, &wrong, false).unwrap_err();
    assert!(format!("{err}").contains("checksum mismatch"), "{err}");
    assert!(!dest.exists(), "nothing written for an unverified archive");

    let dest = tmp.path().join("cifar10");
    download_cifar10(
        &["http://127.0.0.1:9/".to_string(), server.base.clone()],
        &dest,
        &good,
        false,
    )
    .unwrap();
    let batches = dest.join("cifar-10-batches-bin");
    assert!(!batches.join("readme.html").exists());
    let d = Dataset::load(
        &DatasetName::Cifar10(Some(dest.clone())),
        &sources(&tmp.path().join("user")),
        false,
    )
    .unwrap();
    assert_eq!((d.train.len(), d.test.len()), (15, 3));
    assert_eq!(d.image.to_meta(), "3x32x32");
    assert_eq!(d.train.labels.as_deref().unwrap()[..3], [0, 1, 2]);
    // Records are stored channel-major, as the models read them.
    assert_eq!(d.train.image(1)[..2], [7, 8]);
    assert!(d.cache.unwrap().starts_with(batches.join(".genlab-cache")));
}
