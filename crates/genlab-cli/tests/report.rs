//! `genlab reproduce` and `genlab report`: a quick reproduction of one preset
//! per family, its report checked as XML, file by file, over HTTP, and in
//! headless Chromium.

mod browser;
mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::genlab;

fn run(args: &[&str]) -> std::process::Output {
    genlab(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "genlab {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One quick reproduction shared by the tests of this file: an RBM, a VAE and the GAN.
fn reproduction() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("quick");
        let out = ok(&[
            "reproduce",
            "--quick",
            "--only",
            "rbm-20,vae-2,gan",
            "--out",
            dir.to_str().unwrap(),
        ]);
        for preset in ["rbm-20", "vae-2", "gan"] {
            assert!(
                out.contains(&format!("{preset}: training into")),
                "{preset}: {out}"
            );
        }
        dir
    })
}

/// Every `src` and `href` of a page, after checking that it is well-formed XML
/// (every element closed and properly nested, attributes quoted).
fn references(html: &str) -> (Vec<String>, BTreeSet<String>) {
    let mut reader = quick_xml::Reader::from_str(html);
    reader.config_mut().check_end_names = true;
    let mut refs = Vec::new();
    let mut ids = BTreeSet::new();
    let mut depth = 0i64;
    loop {
        let event = reader.read_event().unwrap_or_else(|e| {
            panic!(
                "index.html is not well-formed at byte {}: {e}",
                reader.buffer_position()
            )
        });
        let element = match &event {
            quick_xml::events::Event::Start(e) => {
                depth += 1;
                Some(e.clone())
            }
            quick_xml::events::Event::Empty(e) => Some(e.clone()),
            quick_xml::events::Event::End(_) => {
                depth -= 1;
                None
            }
            quick_xml::events::Event::Eof => break,
            _ => None,
        };
        if let Some(e) = element {
            for a in e.attributes() {
                let a = a.expect("well-formed attribute");
                let value = a
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .unwrap()
                    .into_owned();
                match a.key.into_inner() {
                    "src" | "href" => refs.push(value),
                    "id" => {
                        assert!(ids.insert(value.clone()), "duplicate id {value}");
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(depth, 0, "unclosed elements at the end of index.html");
    (refs, ids)
}

#[test]
fn reproduce_writes_a_complete_self_contained_report() {
    let dir = reproduction();
    let report = dir.join("report");
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    let (refs, ids) = references(&html);
    let mut images = 0;
    for r in &refs {
        if let Some(anchor) = r.strip_prefix('#') {
            assert!(ids.contains(anchor), "link to missing #{anchor}");
            continue;
        }
        assert!(
            !r.contains("://") && !r.starts_with("//") && !r.starts_with('/'),
            "{r}: the report must not reach outside its directory"
        );
        let file = report.join(r);
        assert!(
            file.is_file(),
            "{r} is referenced but {} is missing",
            file.display()
        );
        if r.ends_with(".png") {
            images += 1;
            image::open(&file).unwrap_or_else(|e| panic!("{r} does not decode: {e}"));
        }
    }
    // Per run: curves, samples, epochs; the VAE's latent figures; inpainting for RBM and VAE; filters.
    assert!(images >= 25, "only {images} pictures referenced");
    for must in [
        "runs/rbm-20/filters.png",
        "runs/rbm-20/inpaint_50.png",
        "runs/vae-2/manifold.png",
        "runs/vae-2/latent_scatter.png",
        "runs/vae-2/reconstructions.png",
        "runs/vae-2/inpaint_80.png",
        "runs/gan/evolution.png",
        "runs/gan/loss.png",
        "runs/vae-2/eval.json",
        "runs/gan/config.toml",
    ] {
        assert!(refs.iter().any(|r| r == must), "{must} not in the report");
    }
    // The comparison: every run, the SPEC's figure, the reference row; no network, no script.
    for text in [
        "id=\"run-rbm-20\"",
        "id=\"run-vae-2\"",
        "id=\"run-gan\"",
        "val loss 38.33, train 37.97",
        "d 1.2-1.4, g 0.9-1.3",
        "real training images (10,000)",
        "image-rendering: pixelated",
        "class=\"px\"",
        "name=\"viewport\"",
    ] {
        assert!(html.contains(text), "{text} not in index.html");
    }
    for banned in ["<script", "http://", "https://", "@import", "url("] {
        assert!(!html.contains(banned), "index.html contains {banned}");
    }
    assert!(dir.join("compare.md").is_file() && dir.join("compare.csv").is_file());
}

#[test]
fn a_second_reproduce_reuses_everything() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let quick = |only: &str| {
        ok(&[
            "reproduce",
            "--quick",
            "--only",
            only,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let first = quick("vae-2");
    assert!(first.contains("vae-2: training into"), "{first}");
    let weights = std::fs::read(out.join("vae-2/weights.safetensors")).unwrap();
    let eval = std::fs::read(out.join("vae-2/eval.json")).unwrap();
    let second = quick("vae-2,gan");
    assert!(second.contains("vae-2: finished run reused"), "{second}");
    assert!(second.contains("vae-2: evaluation reused"), "{second}");
    assert!(!second.contains("vae-2: training into"), "{second}");
    assert!(second.contains("gan: training into"), "{second}");
    assert_eq!(
        std::fs::read(out.join("vae-2/weights.safetensors")).unwrap(),
        weights
    );
    assert_eq!(std::fs::read(out.join("vae-2/eval.json")).unwrap(), eval);
    // A third picks only the GAN; the report still shows every finished run.
    quick("gan");
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(html.contains("id=\"run-vae-2\"") && html.contains("id=\"run-gan\""));

    // The full reproduction in the same directory is refused, not mixed in.
    let full = run(&[
        "reproduce",
        "--only",
        "vae-2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(full.status.code(), Some(2));
    let err = String::from_utf8_lossy(&full.stderr);
    assert!(
        err.contains("other settings") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn a_reproduction_made_before_the_marker_is_still_taken_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    copy_dir(reproduction(), &old);
    std::fs::remove_file(old.join("reproduction.toml")).unwrap();
    let weights = std::fs::read(old.join("gan/weights.safetensors")).unwrap();
    let again = ok(&[
        "reproduce",
        "--quick",
        "--only",
        "gan",
        "--out",
        old.to_str().unwrap(),
    ]);
    assert!(again.contains("gan: finished run reused"), "{again}");
    assert_eq!(
        std::fs::read(old.join("gan/weights.safetensors")).unwrap(),
        weights
    );
    assert!(old.join("reproduction.toml").is_file());

    // One file of the user's beside it and the same directory is refused whole.
    std::fs::remove_file(old.join("reproduction.toml")).unwrap();
    std::fs::write(old.join("notes.txt"), "mine").unwrap();
    let compare = std::fs::read(old.join("compare.md")).unwrap();
    let refused = run(&[
        "reproduce",
        "--quick",
        "--only",
        "gan",
        "--out",
        old.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("(it holds notes.txt)"), "{err}");
    assert_eq!(std::fs::read(old.join("compare.md")).unwrap(), compare);
    assert!(!old.join("reproduction.toml").exists());
}

#[test]
fn an_interrupted_reproduce_continues_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let interrupted = dir.path().join("interrupted");
    let args = [
        "reproduce",
        "--quick",
        "--only",
        "rbm-500",
        "--out",
        interrupted.to_str().unwrap(),
    ];
    let child = genlab(&args).spawn().unwrap();
    let config = interrupted.join("rbm-500/config.toml");
    for _ in 0..400 {
        if config.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let first = child.wait_with_output().unwrap();
    let second = ok(&args);
    // Ctrl-C is seen between batches; after training has finished it would
    // not stop the run, so 130 means training was cut short.
    if first.status.code() == Some(130) {
        assert!(
            second.contains("rbm-500: resuming the interrupted run"),
            "{second}"
        );
    } else {
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
    }
    // Same weights as a reproduction that was never interrupted.
    let straight = dir.path().join("straight");
    ok(&[
        "reproduce",
        "--quick",
        "--only",
        "rbm-500",
        "--out",
        straight.to_str().unwrap(),
    ]);
    let weights = |d: &Path| std::fs::read(d.join("rbm-500/weights.safetensors")).unwrap();
    assert!(
        weights(&interrupted) == weights(&straight),
        "resumed weights differ"
    );
}

#[test]
fn report_errors_are_one_line_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let missing = run(&["report", dir.path().join("nope").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("no such run directory") && err.lines().count() == 1,
        "{err}"
    );

    // A directory of the user's is not replaced by a report.
    let mine = dir.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep").unwrap();
    let run_dir = reproduction().join("vae-2");
    let refused = run(&[
        "report",
        run_dir.to_str().unwrap(),
        "--out",
        mine.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a genlab report"));
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep"
    );

    // An earlier report is replaced whole.
    let out = dir.path().join("report");
    ok(&[
        "report",
        run_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&[
        "report",
        reproduction().join("gan").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(out.join("runs/gan/loss.png").is_file());
    assert!(
        !out.join("runs/vae-2").exists(),
        "stale files of the old report remain"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".genlab-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let nothing = run(&["report"]);
    assert_eq!(nothing.status.code(), Some(2));
}

fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    // HTTP/1.0: the whole body, never chunked.
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, bytes[split + 4..].to_vec())
}

#[test]
fn report_serve_serves_the_report_and_nothing_else() {
    let report = reproduction().join("report");
    /// Stops the server even when an assertion fails first.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_genlab"))
        .args([
            "report",
            "--serve",
            "--port",
            "0",
            "--out",
            report.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut server = Server(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (status, body) = http_get(&addr, "/");
    assert_eq!(status, 200);
    assert_eq!(body, std::fs::read(report.join("index.html")).unwrap());
    let (status, body) = http_get(&addr, "/runs/vae-2/manifold.png");
    assert_eq!(status, 200);
    assert!(image::load_from_memory(&body).is_ok());
    assert_eq!(http_get(&addr, "/../config.toml").0, 404);
    assert_eq!(http_get(&addr, "/runs/../../vae-2/config.toml").0, 404);
    assert_eq!(http_get(&addr, "/missing.png").0, 404);
    // Over HTTP too, the page loads without an error.
    if let Some(binary) = browser::chromium() {
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-served.png");
        let page = browser::check_page(&binary, url, &shot, None);
        assert!(page.problems.is_empty(), "{:#?}", page.problems);
        assert!(page.images > 0 && page.broken_images.is_empty(), "{page:?}");
    }
    // Ctrl-C stops it cleanly.
    let _ = Command::new("kill")
        .args(["-INT", &server.0.id().to_string()])
        .status();
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// The browser, or None with a one-line note (CI installs it and sets
/// GENLAB_REQUIRE_OPTIONAL=1, which makes a missing one a failure).
fn browser_or_skip() -> Option<PathBuf> {
    match browser::chromium() {
        Some(b) => Some(b),
        None if std::env::var_os("GENLAB_REQUIRE_BROWSER").is_some()
            || std::env::var_os("GENLAB_REQUIRE_OPTIONAL").is_some_and(|v| v == "1") =>
        {
            panic!(
                "GENLAB_REQUIRE_OPTIONAL (or GENLAB_REQUIRE_BROWSER) is set but no chromium was found (apt-get install chromium)"
            )
        }
        None => {
            eprintln!(
                "SKIPPED: no chromium on PATH (apt-get install chromium, or set GENLAB_CHROMIUM)"
            );
            None
        }
    }
}

#[test]
fn report_opens_in_headless_chromium_without_errors() {
    let Some(binary) = browser_or_skip() else {
        return;
    };
    // GENLAB_REPORT_UNDER_TEST checks another report (a full reproduction's) the same way.
    let report = std::env::var_os("GENLAB_REPORT_UNDER_TEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| reproduction().join("report"));
    let index = report.join("index.html").canonicalize().unwrap();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let shot = std::env::var_os("GENLAB_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| out.join("report.png"));
    let full = out.join("report-full-page.png");
    let page = browser::check_page(
        &binary,
        &format!("file://{}", index.display()),
        &shot,
        Some(&full),
    );
    eprintln!("screenshots: {} and {}", shot.display(), full.display());
    assert!(page.problems.is_empty(), "{:#?}", page.problems);
    assert!(page.images >= 25, "{page:?}");
    assert!(page.broken_images.is_empty(), "{:?}", page.broken_images);
    assert!(
        page.overflow_desktop <= 0,
        "wider than a laptop screen: {page:?}"
    );
    assert!(page.overflow_phone <= 0, "wider than a phone: {page:?}");
    assert_eq!(page.blurry_grids, 0, "{page:?}");
    let png = image::open(&shot).unwrap();
    assert_eq!((png.width(), png.height()), (1280, 1000));
}

#[test]
fn the_browser_check_catches_a_missing_image_and_a_console_error() {
    let Some(binary) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("report");
    let src = reproduction().join("report");
    copy_dir(&src, &copy);
    std::fs::remove_file(copy.join("runs/vae-2/manifold.png")).unwrap();
    let html = std::fs::read_to_string(copy.join("index.html")).unwrap();
    std::fs::write(
        copy.join("index.html"),
        html.replace(
            "</body>",
            "<script>console.error('planted')</script></body>",
        ),
    )
    .unwrap();
    let page = browser::check_page(
        &binary,
        &format!(
            "file://{}",
            copy.join("index.html").canonicalize().unwrap().display()
        ),
        &dir.path().join("shot.png"),
        None,
    );
    assert!(
        page.broken_images
            .iter()
            .any(|s| s.contains("manifold.png")),
        "{page:?}"
    );
    assert!(
        page.problems.iter().any(|p| p.contains("failed load")),
        "{:#?}",
        page.problems
    );
    assert!(
        page.problems.iter().any(|p| p.contains("planted")),
        "{:#?}",
        page.problems
    );
}

fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(src).unwrap().flatten() {
        let to = dest.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}
