//! The local executor: a sweep's unfinished runs on this machine, `jobs` at
//! a time, each a child process (`genlab sweep FILE --task I`) with
//! `cores / jobs` threads and its output in `logs/<run>.log`.
//!
//! Children run in process groups of their own, so a Ctrl-C at the terminal
//! reaches only this process, which passes one SIGTERM to each child: every
//! task writes its checkpoint and stops, and the next `genlab sweep` resumes
//! it. A second Ctrl-C stops them at once (the last epoch's checkpoint stays).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Sweep;
use super::manifest::{self, Manifest, RunState};
use crate::run::RunLock;

/// How the local executor runs.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Runs at a time.
    pub jobs: usize,
    /// The genlab program the tasks run.
    pub exe: PathBuf,
    /// Draw progress bars.
    pub interactive: bool,
}

/// What a local sweep did.
#[derive(Debug, Clone, Default)]
pub struct LocalSummary {
    /// Runs finished before this call (skipped).
    pub skipped: usize,
    /// Runs finished by this call.
    pub finished: Vec<String>,
    /// (run, error, log) of every task that failed.
    pub failed: Vec<(String, String, PathBuf)>,
    /// Runs left resumable by an interruption.
    pub interrupted: Vec<String>,
    pub seconds: f64,
}

struct Active {
    index: usize,
    child: Child,
    bar: ProgressBar,
    started: Instant,
}

/// The threads each of `jobs` concurrent runs gets on this machine.
pub fn threads_per_job(jobs: usize) -> Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if jobs == 0 {
        crate::usage_bail!("--jobs 0: run at least one job at a time");
    }
    if jobs > cores {
        crate::usage_bail!(
            "--jobs {jobs}: this machine has {cores} cores, and each run needs one; give --jobs {cores} or fewer"
        );
    }
    Ok(cores / jobs)
}

/// The last non-empty line of a log, read from its last 4 KiB only (the
/// progress display asks five times a second).
fn last_line(log: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut tail = Vec::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let len = f.metadata().map_or(0, |m| m.len());
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
        let _ = f.take(4096).read_to_end(&mut tail);
    }
    let text = String::from_utf8_lossy(&tail);
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(70).collect()
}

fn epochs_done(run: &Path) -> u64 {
    std::fs::read(run.join("metrics.jsonl"))
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .unwrap_or(0)
}

fn spawn(sweep: &Sweep, index: usize, threads: usize, exe: &Path) -> Result<Child> {
    let log_path = sweep.log_path(index);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let stamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    writeln!(
        log,
        "=== genlab sweep task {index} ({}), {threads} threads, started {stamp}",
        sweep.runs[index].name
    )?;
    let mut command = Command::new(exe);
    command
        .arg("sweep")
        .arg(sweep.dir.join(super::SWEEP_FILE))
        .arg("--out")
        .arg(&sweep.dir)
        .arg("--task")
        .arg(index.to_string())
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    if let Some(d) = &sweep.data_dir {
        command.arg("--data-dir").arg(d);
    }
    // SAFETY: prctl is async-signal-safe; it makes the child get SIGTERM (a
    // graceful stop) if this process dies without stopping it.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    crate::interrupt::adopt(child.id());
    Ok(child)
}

/// Runs every unfinished run of `sweep` on this machine.
pub fn run_local(
    sweep: &Sweep,
    opts: &LocalOptions,
    say: &mut dyn FnMut(&str),
) -> Result<LocalSummary> {
    let start = Instant::now();
    let threads = threads_per_job(opts.jobs)?;
    sweep.prepare()?;
    let _lock = RunLock::acquire(&sweep.dir, "running the sweep")?;
    let _graceful = crate::interrupt::graceful();
    let total = sweep.runs.len();
    let mut summary = LocalSummary::default();
    let mut queue: Vec<usize> = Vec::new();
    for k in 0..total {
        if sweep.is_finished(k) {
            summary.skipped += 1;
        } else if manifest::is_busy(&sweep.run_dir(k)) {
            say(&format!(
                "{}: another genlab is working on it; left alone",
                sweep.runs[k].name
            ));
        } else {
            queue.push(k);
        }
    }
    queue.reverse();
    say(&format!(
        "sweep {}: {total} runs, {} finished already, {} to run, {} at a time with {threads} thread{} each; logs in {}",
        sweep.dir.display(),
        summary.skipped,
        queue.len(),
        opts.jobs,
        if threads == 1 { "" } else { "s" },
        sweep.dir.join(super::LOGS_DIR).display()
    ));
    let multi = MultiProgress::with_draw_target(if opts.interactive {
        ProgressDrawTarget::stdout()
    } else {
        ProgressDrawTarget::hidden()
    });
    let overall = multi.add(ProgressBar::new(total as u64));
    overall.set_style(
        ProgressStyle::with_template("sweep [{bar:30}] {pos}/{len} runs  {elapsed_precise}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    overall.set_position(summary.skipped as u64);
    // {wide_msg} takes what the terminal's width leaves, so lines never wrap.
    let name_width = sweep.runs.iter().map(|r| r.name.len()).max().unwrap_or(10);
    let run_style = ProgressStyle::with_template(&format!(
        "  {{prefix:{name_width}}} [{{bar:20}}] {{pos}}/{{len}} epochs  {{wide_msg}}"
    ))
    .expect("valid template")
    .progress_chars("=> ");
    let mut line = |text: &str| {
        if opts.interactive {
            multi.suspend(|| println!("{text}"));
        } else {
            say(text);
        }
    };
    let mut active: Vec<Active> = Vec::new();
    let mut forwarded = false;
    let width = total.to_string().len();
    loop {
        let stopping = crate::interrupt::requested();
        if stopping && !forwarded {
            line(
                "stopping: every running task writes a checkpoint and stops (Ctrl-C again to stop at once)",
            );
            crate::interrupt::forward();
            forwarded = true;
        }
        while !stopping && active.len() < opts.jobs {
            let Some(k) = queue.pop() else { break };
            let child = spawn(sweep, k, threads, &opts.exe)?;
            let bar = multi.insert_before(&overall, ProgressBar::new(sweep.runs[k].epochs as u64));
            bar.set_style(run_style.clone());
            bar.set_prefix(sweep.runs[k].name.clone());
            line(&format!(
                "[{:>width$}/{total}] {}: started (log {})",
                k + 1,
                sweep.runs[k].name,
                sweep.log_path(k).display()
            ));
            active.push(Active {
                index: k,
                child,
                bar,
                started: Instant::now(),
            });
        }
        if active.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut still = Vec::new();
        for mut a in active {
            let k = a.index;
            let name = sweep.runs[k].name.clone();
            match a.child.try_wait()? {
                None => {
                    a.bar.set_position(epochs_done(&sweep.run_dir(k)));
                    a.bar.set_message(last_line(&sweep.log_path(k)));
                    still.push(a);
                }
                Some(status) => {
                    crate::interrupt::release(a.child.id());
                    a.bar.finish_and_clear();
                    multi.remove(&a.bar);
                    let seconds = a.started.elapsed().as_secs_f64();
                    let head = format!("[{:>width$}/{total}] {name}", k + 1);
                    if status.success() && sweep.is_finished(k) {
                        overall.inc(1);
                        line(&format!("{head}: finished in {seconds:.0} s"));
                        summary.finished.push(name);
                    } else if status.code() == Some(130) || crate::interrupt::requested() {
                        line(&format!("{head}: stopped with a checkpoint; resumable"));
                        summary.interrupted.push(name);
                    } else {
                        let recorded = Manifest::read(&sweep.dir)
                            .ok()
                            .and_then(|m| m.run.into_iter().find(|r| r.index == k))
                            .filter(|r| r.state == RunState::Failed)
                            .and_then(|r| r.error)
                            .unwrap_or_else(|| last_line(&sweep.log_path(k)));
                        line(&format!(
                            "{head}: failed ({status}): {recorded}; log {}",
                            sweep.log_path(k).display()
                        ));
                        summary.failed.push((name, recorded, sweep.log_path(k)));
                    }
                }
            }
        }
        active = still;
    }
    overall.finish_and_clear();
    summary.seconds = start.elapsed().as_secs_f64();
    // Runs never started because of the stop stay pending.
    if crate::interrupt::requested() {
        let left = summary.interrupted.len() + queue.len();
        return Err(anyhow::Error::new(crate::interrupt::Stopped).context(format!(
            "sweep stopped: {} finished, {left} left to run (interrupted ones resume from their checkpoints); run `genlab sweep {}` again to go on",
            summary.skipped + summary.finished.len(),
            sweep.file.display()
        )));
    }
    Ok(summary)
}
