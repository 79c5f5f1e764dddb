//! The bytes of a split's images: a vector in memory, or a range of genlab's
//! memory-mapped image cache (see [`super::cache`]), behind one slice type.
//!
//! A mapped range keeps the process's resident memory bounded by what
//! training touches lately, not by the dataset: the pages read since the
//! last release are handed back to the kernel (they stay in its page cache,
//! so reading them again is a minor fault) once they pass
//! [`RELEASE_EVERY`] bytes.

use std::ops::{Deref, Range};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Touched bytes of a mapping after which its pages are released.
pub const RELEASE_EVERY: usize = 32 << 20;

/// Conservatively, the memory one image read from a mapping costs: each
/// touches at least one page.
const PAGE: usize = 4096;

enum Backing {
    Owned(Vec<u8>),
    Mapped {
        map: memmap2::Mmap,
        /// Bytes of pages touched since the last release.
        touched: AtomicUsize,
    },
}

/// Image bytes, owned or mapped; cloning shares them.
#[derive(Clone)]
pub struct ImageBytes {
    backing: Arc<Backing>,
    range: Range<usize>,
}

impl ImageBytes {
    /// Several ranges of one mapping, sharing it.
    pub fn mapped_ranges(map: memmap2::Mmap, ranges: &[Range<usize>]) -> Vec<ImageBytes> {
        let backing = Arc::new(Backing::Mapped {
            map,
            touched: AtomicUsize::new(0),
        });
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

    /// Records that `images` images were just read; past [`RELEASE_EVERY`]
    /// bytes the mapping's resident pages are given back.
    pub fn note_reads(&self, images: usize) {
        if let Backing::Mapped { map, touched } = &*self.backing {
            let before = touched.fetch_add(images * PAGE, Ordering::Relaxed);
            if before + images * PAGE >= RELEASE_EVERY {
                touched.store(0, Ordering::Relaxed);
                release(map);
            }
        }
    }
}

#[cfg(unix)]
fn release(map: &memmap2::Mmap) {
    // SAFETY: the mapping is private and read-only, of a file genlab
    // replaces only by rename and never writes in place, so a page dropped
    // here reads back with the same bytes.
    let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
}

#[cfg(not(unix))]
fn release(_: &memmap2::Mmap) {}

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
    fn mapped_ranges_read_the_file_and_survive_a_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let data: Vec<u8> = (0..3 * PAGE).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let map = unsafe { memmap2::Mmap::map(&std::fs::File::open(&path).unwrap()) }.unwrap();
        let parts = ImageBytes::mapped_ranges(map, &[0..PAGE, PAGE..3 * PAGE]);
        assert!(parts[0].is_mapped());
        assert_eq!(&*parts[1], &data[PAGE..]);
        parts[1].note_reads(RELEASE_EVERY / PAGE + 1);
        assert_eq!(&*parts[1], &data[PAGE..]);
        assert_eq!(parts[0].clone().into_vec(), data[..PAGE].to_vec());
    }
}
