//! Downloading MNIST, Fashion-MNIST and CIFAR-10 into the user cache when no
//! local copy exists.
//!
//! IDX files are verified by the SHA-256 of their *decompressed* bytes, so
//! any mirror's compression passes; CIFAR-10 by the SHA-256 of its archive.
//! Nothing unverified is written.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::idx::decompress_if_gzip;
use super::locate::{DatasetName, IDX_FILES};
use crate::atomic::write_atomic;

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads every missing file of `name` into `dest` from the first mirror that
/// serves a verified copy. Returns the notes of failed attempts (for the final
/// error message) as the error.
pub fn download_dataset(
    name: &DatasetName,
    mirrors: &[String],
    dest: &Path,
    show_progress: bool,
) -> Result<()> {
    let hashes = name.known_sha256().ok_or_else(|| {
        anyhow!("{name} cannot be downloaded: genlab only downloads mnist and fashion-mnist")
    })?;
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(600)))
            .build(),
    );
    for (file, expected) in IDX_FILES.iter().zip(hashes) {
        if super::idx::find_file(dest, file).is_some() {
            continue;
        }
        let mut attempts = Vec::new();
        let mut done = false;
        for mirror in mirrors {
            let url = format!("{mirror}{file}.gz");
            match fetch(&agent, &url, show_progress) {
                Err(e) => attempts.push(format!("{url}: {e}")),
                Ok(gz) => {
                    let raw = decompress_if_gzip(file, gz.clone()).map_err(|e| anyhow!("{e}"));
                    let actual = raw.as_ref().map(|r| sha256_hex(r));
                    match actual {
                        Ok(actual) if actual == expected => {
                            write_atomic(&dest.join(format!("{file}.gz")), &gz)?;
                            done = true;
                            break;
                        }
                        Ok(actual) => {
                            eprintln!(
                                "genlab: discarded {file}.gz from {url}: SHA-256 of the decompressed bytes is {actual}, expected {expected}"
                            );
                            attempts.push(format!("{url}: checksum mismatch (discarded)"));
                        }
                        Err(e) => {
                            eprintln!("genlab: discarded {file}.gz from {url}: {e}");
                            attempts.push(format!("{url}: {e} (discarded)"));
                        }
                    }
                }
            }
        }
        if !done {
            bail!("{}", attempts.join("; "));
        }
    }
    Ok(())
}

/// The SHA-256 of `cifar-10-binary.tar.gz` (170,052,171 bytes) as its
/// authors serve it.
pub const CIFAR10_ARCHIVE_SHA256: &str =
    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd";
/// The archive's name under each mirror.
pub const CIFAR10_ARCHIVE: &str = "cifar-10-binary.tar.gz";
/// Where its authors serve it.
pub const CIFAR10_MIRRORS: [&str; 1] = ["https://www.cs.toronto.edu/~kriz/"];

/// Downloads CIFAR-10's binary archive from the first mirror whose copy has
/// the SHA-256 `expected`, and unpacks its six batch files into
/// `dest/cifar-10-batches-bin/` (each written atomically). Returns the
/// failed attempts as the error.
pub fn download_cifar10(
    mirrors: &[String],
    dest: &Path,
    expected: &str,
    show_progress: bool,
) -> Result<()> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(1800)))
            .build(),
    );
    let mut attempts = Vec::new();
    for mirror in mirrors {
        let url = format!("{mirror}{CIFAR10_ARCHIVE}");
        let archive = match fetch(&agent, &url, show_progress) {
            Ok(a) => a,
            Err(e) => {
                attempts.push(format!("{url}: {e}"));
                continue;
            }
        };
        let actual = sha256_hex(&archive);
        if actual != expected {
            eprintln!(
                "genlab: discarded {CIFAR10_ARCHIVE} from {url}: its SHA-256 is {actual}, expected {expected}"
            );
            attempts.push(format!("{url}: checksum mismatch (discarded)"));
            continue;
        }
        return unpack_cifar10(&archive, &dest.join("cifar-10-batches-bin"))
            .map_err(|e| anyhow!("{url}: {e}"));
    }
    bail!("{}", attempts.join("; "))
}

/// Writes the batch files of a verified archive into `dir`.
fn unpack_cifar10(archive: &[u8], dir: &Path) -> Result<()> {
    use super::locate::{CIFAR10_TEST_FILE as TEST_FILE, CIFAR10_TRAIN_FILES as TRAIN_FILES};
    let wanted: Vec<&str> = TRAIN_FILES.iter().copied().chain([TEST_FILE]).collect();
    let mut found = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(&name) = wanted.iter().find(|w| **w == name) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            write_atomic(&dir.join(name), &bytes)?;
            found.push(name);
        }
    }
    if let Some(missing) = wanted.iter().find(|w| !found.contains(w)) {
        bail!("the archive holds no {missing}");
    }
    Ok(())
}

/// GETs `url` into memory with a progress bar. Never touches the disk: only a
/// verified file is written.
fn fetch(agent: &ureq::Agent, url: &str, show_progress: bool) -> Result<Vec<u8>> {
    let response = agent.get(url).call()?;
    let body = response.into_body();
    let len = body.content_length();
    let bar = if show_progress {
        let bar = ProgressBar::new(len.unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut reader = body.into_with_config().limit(512 * 1024 * 1024).reader();
    let mut out = Vec::with_capacity(len.unwrap_or(1 << 20) as usize);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}
