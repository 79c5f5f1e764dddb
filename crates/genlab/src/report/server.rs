//! `genlab report --serve`: the report directory over HTTP on 127.0.0.1,
//! read-only, with nothing outside the directory reachable.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Serves the report directory `root` on 127.0.0.1:`port` until Ctrl-C.
/// `on_ready` gets the address actually bound (port 0 picks a free one).
///
/// A few lines over `std::net` rather than a server crate: with tiny_http,
/// headless Chromium at times never finished loading a report (a request on
/// a kept-alive connection went unanswered). Here every response carries its
/// length and closes its connection, which every browser handles.
pub fn serve(root: &Path, port: u16, on_ready: impl FnOnce(&str)) -> Result<()> {
    if !root.join("index.html").is_file() {
        crate::usage_bail!(
            "{} holds no report (no index.html); write one with `genlab report RUN... --out {}`",
            root.display(),
            root.display()
        );
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
        crate::error::usage(anyhow::anyhow!(
            "cannot listen on 127.0.0.1:{port} ({e}); choose another --port"
        ))
    })?;
    listener.set_nonblocking(true)?;
    on_ready(&format!("http://{}/", listener.local_addr()?));
    let root = root
        .canonicalize()
        .with_context(|| format!("cannot open {}", root.display()))?;
    while !crate::interrupt::requested() {
        match listener.accept() {
            Ok((stream, _)) => {
                let root = root.clone();
                // A client that goes away mid-answer is not our error.
                std::thread::spawn(move || {
                    let _ = answer(&root, stream);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e).context("accepting a connection"),
        }
    }
    Ok(())
}

/// Reads one GET (or HEAD) request from `stream` and answers it.
fn answer(root: &Path, mut stream: std::net::TcpStream) -> std::io::Result<()> {
    use std::io::{Read, Write};
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let found = resolve_request(root, target).and_then(|p| Some((std::fs::read(&p).ok()?, p)));
    let (status, content_type, body) = match found {
        _ if method != "GET" && method != "HEAD" => {
            ("405 Method Not Allowed", "text/plain", b"GET only".to_vec())
        }
        Some((bytes, path)) => ("200 OK", content_type(&path), bytes),
        None => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    stream.flush()
}

/// Maps a request path to a file under `root`, refusing anything outside it.
fn resolve_request(root: &Path, url: &str) -> Option<PathBuf> {
    let path = url.split(['?', '#']).next().unwrap_or("/");
    let mut file = root.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == ".." || part == "." || part.contains('\\') || part.starts_with('.') {
            return None;
        }
        file.push(part);
    }
    if file.is_dir() {
        file.push("index.html");
    }
    let canonical = file.canonicalize().ok()?;
    (canonical.starts_with(root) && canonical.is_file()).then_some(canonical)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("css") => "text/css",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_cannot_leave_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("report");
        std::fs::create_dir_all(root.join("runs")).unwrap();
        std::fs::write(root.join("index.html"), "x").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(resolve_request(&root, "/"), Some(root.join("index.html")));
        assert_eq!(
            resolve_request(&root, "/index.html?x=1"),
            Some(root.join("index.html"))
        );
        assert_eq!(resolve_request(&root, "/../secret"), None);
        assert_eq!(resolve_request(&root, "/runs/../../secret"), None);
        assert_eq!(resolve_request(&root, "/missing.png"), None);
    }
}
