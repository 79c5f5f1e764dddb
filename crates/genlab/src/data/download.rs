//! Downloading MNIST / Fashion-MNIST into the user cache when no local copy exists.
//!
//! Files are verified by the SHA-256 of their *decompressed* IDX bytes, so any
//! mirror's compression passes; a file that does not match is deleted.

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
    let mut reader = body.into_with_config().limit(256 * 1024 * 1024).reader();
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
