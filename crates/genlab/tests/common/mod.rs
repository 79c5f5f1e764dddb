#![allow(dead_code)]
//! Helpers shared by the integration tests.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flate2::Compression;
use flate2::write::GzEncoder;

/// The directory holding `mnist/` (and possibly others): `$GENLAB_DATA` (a
/// relative one taken from the shell's directory, as the CLI takes it), else
/// `../shared/data` beside the repository.
pub fn shared_data() -> PathBuf {
    genlab::data::locate::env_dir("GENLAB_DATA")
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// Whether a test that needs something optional (`what`, installed by `how`)
/// should skip: it prints one line and skips where it is missing, unless
/// `.ci/run`'s `GENLAB_REQUIRE_OPTIONAL=1` makes a missing one a failure.
pub fn skip_without(present: bool, what: &str, how: &str) -> bool {
    if present {
        return false;
    }
    if std::env::var_os("GENLAB_REQUIRE_OPTIONAL").is_some_and(|v| v == "1") {
        panic!("GENLAB_REQUIRE_OPTIONAL=1 but {what} is missing ({how})");
    }
    eprintln!("SKIPPED: {what} is missing ({how})");
    true
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A tiny HTTP server on 127.0.0.1 serving `files` (name -> body); 404 otherwise.
/// Stops when dropped.
pub struct LoopbackServer {
    pub base: String,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl LoopbackServer {
    pub fn start(files: Vec<(String, Vec<u8>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&buf);
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let name = path.trim_start_matches('/');
                match files.iter().find(|(n, _)| n == name) {
                    Some((_, body)) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(head.as_bytes());
                        let _ = stream.write_all(body);
                    }
                    None => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
            }
        });
        LoopbackServer {
            base: format!("http://127.0.0.1:{port}/"),
            stop,
            port,
        }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
