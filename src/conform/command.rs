//! Running a peer's command: a template with `{image}` and `{raw}`, run
//! by the shell with a time limit, its output kept (the end of it) for the
//! report.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ConformError;

/// How much of each output stream is kept: the last 16 KiB.
const KEEP: usize = 16 * 1024;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The command exited with this status.
    Exited(i32),
    /// The command was ended by this signal.
    Killed(i32),
    /// The command ran past its time limit and was killed.
    TimedOut,
    /// The command could not be started.
    NotStarted(String),
    /// The run was stopped (with what it started) because the user
    /// interrupted the whole conformance run.
    Interrupted,
}

impl Status {
    /// Exited 0.
    pub fn success(&self) -> bool {
        *self == Status::Exited(0)
    }

    /// Whether the shell could not run the command at all: exit 126 (not
    /// executable) or 127 (not found), or it never started. Such a run is
    /// no refusal.
    pub fn did_not_run(&self) -> bool {
        matches!(self, Status::Exited(126 | 127) | Status::NotStarted(_))
    }

    /// The exit status, when the command exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            Status::Exited(c) => Some(*c),
            _ => None,
        }
    }

    /// In words: `exit 1`, `killed by signal 11`, `timed out`, ...
    pub fn describe(&self) -> String {
        match self {
            Status::Exited(c) => format!("exit {c}"),
            Status::Killed(s) => format!("killed by signal {s}"),
            Status::TimedOut => "timed out".into(),
            Status::NotStarted(why) => format!("could not start: {why}"),
            Status::Interrupted => "interrupted".into(),
        }
    }
}

/// What one run of a peer did.
#[derive(Debug, Clone)]
pub struct Run {
    /// How it ended.
    pub status: Status,
    /// The end of what it wrote to standard error.
    pub stderr: String,
    /// The end of what it wrote to standard output.
    pub stdout: String,
    /// How long it took.
    pub elapsed: Duration,
}

impl Run {
    /// A run that did its work in this process and exited 0.
    pub fn done(elapsed: Duration) -> Run {
        Run {
            status: Status::Exited(0),
            stderr: String::new(),
            stdout: String::new(),
            elapsed,
        }
    }

    /// A run that failed in this process with `message` (exit 1).
    pub fn failed(message: impl Into<String>, elapsed: Duration) -> Run {
        Run {
            status: Status::Exited(1),
            stderr: message.into(),
            stdout: String::new(),
            elapsed,
        }
    }

    /// The same run with the scratch directory `dir` taken out of what
    /// the command said (`DIR/case/x.vhd` becomes `x.vhd`), so that
    /// reports of two runs compare equal.
    #[must_use]
    pub fn without_dir(mut self, dir: &Path) -> Run {
        let mut prefixes: Vec<String> = Vec::new();
        for d in [Some(dir.to_path_buf()), dir.canonicalize().ok()]
            .into_iter()
            .flatten()
        {
            let d = d.display().to_string();
            for sub in ["case/", "out/", ""] {
                prefixes.push(format!("{d}/{sub}"));
            }
        }
        for p in &prefixes {
            self.stderr = self.stderr.replace(p.as_str(), "");
            self.stdout = self.stdout.replace(p.as_str(), "");
        }
        self
    }

    /// The line that best says what went wrong: the last non-empty line of
    /// standard error, else of standard output.
    pub fn last_words(&self) -> Option<&str> {
        fn last(text: &str) -> Option<&str> {
            text.lines().map(str::trim).rfind(|l| !l.is_empty())
        }
        last(&self.stderr).or_else(|| last(&self.stdout))
    }
}

/// What a report says about a peer, reader or writer.
pub trait Peer {
    /// The peer's name, for reports.
    fn name(&self) -> String;
    /// Its command template, for reports (none for vhdref in this process).
    fn command(&self) -> Option<String>;
}

/// A peer run as a command: its name and its [`CommandTemplate`]. The same
/// value serves as a [`Reader`](super::Reader) (`CMD {image} {raw}` reads
/// `{image}` and writes `{raw}`) and as a [`Writer`](super::Writer)
/// (it reads `{raw}` and writes `{image}`): the placeholders keep their
/// names whatever the direction.
#[derive(Debug, Clone)]
pub struct PeerCommand {
    name: String,
    template: CommandTemplate,
}

impl PeerCommand {
    /// The peer `name` run as `template`.
    pub fn new(name: impl Into<String>, template: CommandTemplate) -> Self {
        PeerCommand {
            name: name.into(),
            template,
        }
    }

    /// Its command template.
    pub fn template(&self) -> &CommandTemplate {
        &self.template
    }
}

impl Peer for PeerCommand {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn command(&self) -> Option<String> {
        Some(self.template.as_str().to_string())
    }
}

/// A peer command line with the placeholders `{image}` and `{raw}`, run by
/// `sh -c` with both replaced by shell-quoted absolute paths.
#[derive(Debug, Clone)]
pub struct CommandTemplate {
    template: String,
    timeout: Duration,
    env: Vec<(OsString, OsString)>,
    stop: Option<Arc<AtomicBool>>,
}

impl CommandTemplate {
    /// The template `template`, which must name both `{image}` and
    /// `{raw}`; each run may take `timeout`.
    pub fn new(template: &str, timeout: Duration) -> Result<CommandTemplate, ConformError> {
        let missing: Vec<&str> = ["{image}", "{raw}"]
            .into_iter()
            .filter(|p| !template.contains(p))
            .collect();
        if !missing.is_empty() {
            return Err(ConformError::Usage(format!(
                "the command {template:?} must contain {} (they are replaced by the paths of each case)",
                missing.join(" and ")
            )));
        }
        Ok(CommandTemplate {
            template: template.to_string(),
            timeout,
            env: Vec::new(),
            stop: None,
        })
    }

    /// Ends a run early, killing the command and everything it started,
    /// as soon as `flag` is set (by a signal handler, for instance): the
    /// run then reports [`Status::Interrupted`].
    #[must_use]
    pub fn stop_on(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Sets an environment variable for every run.
    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The template as given.
    pub fn as_str(&self) -> &str {
        &self.template
    }

    /// The first word of the template without its directory: a default
    /// name for the peer (`scripts/conform/read-qemu.sh ...` gives
    /// `read-qemu.sh`).
    pub fn program_name(&self) -> String {
        let first = self
            .template
            .split_whitespace()
            .next()
            .unwrap_or("peer")
            .trim_matches(['"', '\'']);
        Path::new(first)
            .file_name()
            .map_or_else(|| first.to_string(), |n| n.to_string_lossy().into_owned())
    }

    /// The shell command line for one case.
    pub fn line(&self, image: &Path, raw: &Path) -> Result<String, ConformError> {
        Ok(self
            .template
            .replace("{image}", &quote(image)?)
            .replace("{raw}", &quote(raw)?))
    }

    /// Runs the command for one case and waits for it (at most the time
    /// limit; then it and everything it started are killed).
    pub fn run(&self, image: &Path, raw: &Path) -> Run {
        let start = Instant::now();
        let line = match self.line(image, raw) {
            Ok(l) => l,
            Err(e) => {
                return Run {
                    status: Status::NotStarted(e.to_string()),
                    stderr: String::new(),
                    stdout: String::new(),
                    elapsed: start.elapsed(),
                };
            }
        };
        let mut cmd = shell(&line);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt as _;
            // Its own process group, so a time-out kills what it started too.
            cmd.process_group(0);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Run {
                    status: Status::NotStarted(e.to_string()),
                    stderr: String::new(),
                    stdout: String::new(),
                    elapsed: start.elapsed(),
                };
            }
        };
        let out = Collector::start(child.stdout.take());
        let err = Collector::start(child.stderr.take());
        let status = wait_with_timeout(&mut child, self.timeout, self.stop.as_deref());
        Run {
            status,
            stderr: err.finish(),
            stdout: out.finish(),
            elapsed: start.elapsed(),
        }
    }
}

#[cfg(unix)]
fn shell(line: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(line);
    c
}

#[cfg(not(unix))]
fn shell(line: &str) -> Command {
    let mut c = Command::new("cmd");
    c.arg("/C").arg(line);
    c
}

/// `path` in single quotes for `sh`, absolute.
fn quote(path: &Path) -> Result<String, ConformError> {
    let absolute = std::path::absolute(path).map_err(|e| ConformError::Io {
        path: path.to_path_buf(),
        message: format!("cannot make the path absolute: {e}"),
    })?;
    let text = absolute.to_str().ok_or_else(|| ConformError::Io {
        path: absolute.clone(),
        message: "the path is not UTF-8; set TMPDIR to a plain directory".into(),
    })?;
    Ok(format!("'{}'", text.replace('\'', r"'\''")))
}

/// Waits for `child` for at most `timeout`; past it, kills its process
/// group and reports [`Status::TimedOut`]. When `stop` is set meanwhile,
/// kills the group at once and reports [`Status::Interrupted`].
fn wait_with_timeout(child: &mut Child, timeout: Duration, stop: Option<&AtomicBool>) -> Status {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                // What the command started may still run; it has no say
                // in the verdict, and must not outlive the case.
                kill_group(child);
                return exit_status(status);
            }
            Ok(None) => {}
            Err(e) => {
                kill_group(child);
                let _ = child.wait();
                return Status::NotStarted(format!("waiting for it failed: {e}"));
            }
        }
        if Instant::now() >= deadline {
            kill_group(child);
            let _ = child.wait();
            return Status::TimedOut;
        }
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            kill_group(child);
            let _ = child.wait();
            return Status::Interrupted;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn exit_status(status: std::process::ExitStatus) -> Status {
    if let Some(code) = status.code() {
        return Status::Exited(code);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return Status::Killed(signal);
        }
    }
    Status::Exited(-1)
}

/// Kills the process group the child leads (it was started as one).
#[cfg(target_os = "linux")]
fn kill_group(child: &mut Child) {
    let pid = rustix::process::Pid::from_child(child);
    // The group is gone when everything in it has exited: nothing to do.
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

#[cfg(not(target_os = "linux"))]
fn kill_group(child: &mut Child) {
    let _ = child.kill();
}

/// Reads one output stream of a child on a thread, keeping its end.
struct Collector {
    kept: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    fn start(stream: Option<impl Read + Send + 'static>) -> Collector {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let thread = stream.map(|mut s| {
            let kept = Arc::clone(&kept);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut k = kept
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    k.extend_from_slice(&buf[..n]);
                    if k.len() > 2 * KEEP {
                        let cut = k.len() - KEEP;
                        k.drain(..cut);
                    }
                }
            })
        });
        Collector { kept, thread }
    }

    /// What was kept. Waits up to a second for the stream to close (a
    /// process that escaped the group may hold it open forever).
    fn finish(mut self) -> String {
        if let Some(t) = self.thread.take() {
            let until = Instant::now() + Duration::from_secs(1);
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        let k = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = k.len().saturating_sub(KEEP);
        String::from_utf8_lossy(&k[start..]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_needs_both_placeholders() {
        let t = Duration::from_secs(1);
        assert!(CommandTemplate::new("cp {image} {raw}", t).is_ok());
        let e = CommandTemplate::new("cp {image} out", t).unwrap_err();
        assert!(e.to_string().contains("{raw}"), "{e}");
    }

    #[test]
    fn paths_are_single_quoted_for_the_shell() {
        assert_eq!(quote(Path::new("/a b/c")).unwrap(), "'/a b/c'");
        assert_eq!(quote(Path::new("/it's")).unwrap(), r"'/it'\''s'");
    }

    #[test]
    fn the_program_name_is_the_first_word_without_its_directory() {
        let t = CommandTemplate::new(
            "scripts/conform/read-qemu.sh {image} {raw}",
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(t.program_name(), "read-qemu.sh");
    }
}
