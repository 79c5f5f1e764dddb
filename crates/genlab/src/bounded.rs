//! Reading inputs with a bound: a file is read up to the size its kind can
//! have (a configuration, an evaluator network) or its header claims (IDX,
//! safetensors), and refused past it, so that `/dev/zero` or a decompression
//! bomb is an error, not an exhausted machine.

use std::io::Read;
use std::path::Path;

use anyhow::Result;

/// The largest configuration file genlab reads.
pub const CONFIG_LIMIT: u64 = 1 << 20;
/// The largest evaluator network genlab reads (the shipped ones are about 0.5 MB).
pub const EVALUATOR_LIMIT: u64 = 64 << 20;
/// The largest single data file (IDX, decompressed) or checkpoint genlab reads.
pub const DATA_LIMIT: u64 = 8 << 30;

/// Reads at most `limit` bytes from `reader`; more is an error naming `what`.
pub fn read_up_to(reader: impl Read, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        crate::usage_bail!(
            "{what} is longer than {} bytes, more than such a file can be; is it the right file?",
            limit
        );
    }
    Ok(out)
}

/// Reads the file at `path`, refusing one longer than `limit` bytes.
pub fn read_file(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))?;
    read_up_to(file, limit, &format!("{what} {}", path.display()))
}

/// Reads a text file of at most `limit` bytes.
pub fn read_text(path: &Path, limit: u64, what: &str) -> Result<String> {
    let bytes = read_file(path, limit, what)?;
    String::from_utf8(bytes).map_err(|_| {
        crate::error::usage(anyhow::anyhow!(
            "{what} {} is not UTF-8 text",
            path.display()
        ))
    })
}

/// Memory the system can give this process now (MemAvailable), in bytes;
/// None where /proc/meminfo cannot be read.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Refuses work that needs more memory than the machine has available, before
/// anything is allocated or written. `what` says what needs it, `fix` which
/// keys or options to lower.
pub fn check_memory(bytes: f64, what: &str, fix: &str) -> Result<()> {
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if bytes > available as f64 {
        crate::usage_bail!(
            "{what} needs about {:.1} GiB of memory and this machine has {:.1} GiB available; lower {fix}",
            bytes / (1u64 << 30) as f64,
            available as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

/// Refuses a work size above its stated limit, naming the option.
pub fn check_count(option: &str, value: usize, max: usize, unit: &str) -> Result<()> {
    if value > max {
        crate::usage_bail!(
            "{option} {value}: at most {max} {unit} (genlab's limit, so that a mistyped size cannot run for days or exhaust memory)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_input_is_refused_at_the_limit() {
        let err = read_up_to(std::io::repeat(0), 1000, "config file x").unwrap_err();
        assert!(crate::error::is_usage(&err));
        assert!(err.to_string().contains("longer than 1000 bytes"), "{err}");
        assert_eq!(read_up_to(&[1u8; 1000][..], 1000, "x").unwrap().len(), 1000);
    }
}
