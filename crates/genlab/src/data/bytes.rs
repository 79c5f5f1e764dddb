//! The bytes of a split's images: a vector in memory, or a range of genlab's
//! memory-mapped image cache (see [`super::cache`]), behind one slice type.
//!
//! Batches read a mapped cache by position ([`ImageBytes::read_into`]), not
//! through the mapping: the bytes then stay in the kernel's page cache
//! instead of this process's resident memory, which so follows the batch,
//! not the dataset. (A touched page of a mapping counts as resident until it
//! is unmapped, and kernels with large page-cache folios map up to 2 MiB per
//! touch, so random batches through the mapping would make the whole
//! dataset resident within an epoch.) The mapping serves the rest: figures,
//! statistics and evaluation, which read what they need once.

use std::ops::{Deref, Range};
use std::sync::Arc;

enum Backing {
    Owned(Vec<u8>),
    Mapped {
        map: memmap2::Mmap,
        /// The mapped file, for positional reads.
        file: std::fs::File,
    },
}

/// Image bytes, owned or mapped; cloning shares them.
#[derive(Clone)]
pub struct ImageBytes {
    backing: Arc<Backing>,
    range: Range<usize>,
}

impl ImageBytes {
    /// Several ranges of `file`'s mapping `map`, sharing it.
    pub fn mapped_ranges(
        map: memmap2::Mmap,
        file: std::fs::File,
        ranges: &[Range<usize>],
    ) -> Vec<ImageBytes> {
        let backing = Arc::new(Backing::Mapped { map, file });
        ranges
            .iter()
            .map(|r| ImageBytes {
                backing: backing.clone(),
                range: r.clone(),
            })
            .collect()
    }

    /// Whether the bytes are a mapped file's.
    pub fn is_mapped(&self) -> bool {
        matches!(*self.backing, Backing::Mapped { .. })
    }

    /// Keeps the first `n` bytes.
    pub fn truncate(&mut self, n: usize) {
        self.range.end = self.range.start + n.min(self.range.len());
    }

    /// Keeps the first `at` bytes and returns the rest (no copy).
    pub fn split_off(&mut self, at: usize) -> ImageBytes {
        let at = self.range.start + at.min(self.range.len());
        let rest = ImageBytes {
            backing: self.backing.clone(),
            range: at..self.range.end,
        };
        self.range.end = at;
        rest
    }

    /// The bytes as a vector (moved out when this holds a whole vector alone).
    pub fn into_vec(self) -> Vec<u8> {
        let whole = self.range.start == 0
            && matches!(&*self.backing, Backing::Owned(v) if v.len() == self.range.end);
        if whole {
            let range = self.range.clone();
            match Arc::try_unwrap(self.backing) {
                Ok(Backing::Owned(v)) => return v,
                Ok(Backing::Mapped { .. }) => unreachable!("checked above"),
                Err(shared) => return shared_slice(&shared, range).to_vec(),
            }
        }
        self.to_vec()
    }

    /// Copies the bytes at `at..at + out.len()` of this range into `out`:
    /// for a mapped file by a positional read (see the module's comment).
    pub fn read_into(&self, at: usize, out: &mut [u8]) {
        let range = self.range.start + at..self.range.start + at + out.len();
        assert!(range.end <= self.range.end, "read past the image bytes");
        match &*self.backing {
            Backing::Owned(v) => out.copy_from_slice(&v[range]),
            Backing::Mapped { map, file } => {
                if !read_at(file, range.start as u64, out) {
                    // The mapping holds the same bytes; it only costs memory.
                    out.copy_from_slice(&map[range]);
                }
            }
        }
    }
}

#[cfg(unix)]
fn read_at(file: &std::fs::File, offset: u64, out: &mut [u8]) -> bool {
    std::os::unix::fs::FileExt::read_exact_at(file, out, offset).is_ok()
}

#[cfg(not(unix))]
fn read_at(_: &std::fs::File, _: u64, _: &mut [u8]) -> bool {
    false
}

fn shared_slice(backing: &Backing, range: Range<usize>) -> &[u8] {
    match backing {
        Backing::Owned(v) => &v[range],
        Backing::Mapped { map, .. } => &map[range],
    }
}

impl Deref for ImageBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        shared_slice(&self.backing, self.range.clone())
    }
}

impl From<Vec<u8>> for ImageBytes {
    fn from(v: Vec<u8>) -> Self {
        let range = 0..v.len();
        ImageBytes {
            backing: Arc::new(Backing::Owned(v)),
            range,
        }
    }
}

impl Default for ImageBytes {
    fn default() -> Self {
        Vec::new().into()
    }
}

impl PartialEq for ImageBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for ImageBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "ImageBytes({} bytes, {kind})", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_bytes_split_truncate_and_come_back_without_a_copy() {
        let mut b = ImageBytes::from((0..10).collect::<Vec<u8>>());
        let rest = b.split_off(6);
        assert_eq!(&*rest, &[6, 7, 8, 9]);
        assert_eq!(&*b, &[0, 1, 2, 3, 4, 5]);
        drop(rest);
        b.truncate(3);
        assert_eq!(&*b, &[0, 1, 2]);
        assert_eq!(b.into_vec(), vec![0, 1, 2]);
        let whole = ImageBytes::from(vec![1u8, 2]);
        let whole_ptr = whole.as_ptr();
        let back = whole.into_vec();
        assert_eq!(back.as_ptr(), whole_ptr, "moved out, not copied");
    }

    #[test]
    fn mapped_ranges_read_the_file_through_the_map_and_by_position() {
        const PAGE: usize = 4096;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let data: Vec<u8> = (0..3 * PAGE).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let parts = ImageBytes::mapped_ranges(map, file, &[0..PAGE, PAGE..3 * PAGE]);
        assert!(parts[0].is_mapped());
        assert_eq!(&*parts[1], &data[PAGE..]);
        let mut out = vec![0u8; 100];
        parts[1].read_into(PAGE + 7, &mut out);
        assert_eq!(out, data[2 * PAGE + 7..2 * PAGE + 107]);
        let owned = ImageBytes::from(data.clone());
        owned.read_into(5, &mut out);
        assert_eq!(out, data[5..105]);
        assert_eq!(parts[0].clone().into_vec(), data[..PAGE].to_vec());
    }
}
