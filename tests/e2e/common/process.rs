//! Child processes owned by a test: killed when dropped, their output kept in a
//! temp file and printed when the test fails, readiness awaited with a deadline.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long any process gets to become ready. Generous: the machine may be
/// compiling or running other tests on both cores at the same time (a test provider
/// once took over 30 s to announce itself while the 13 Redis tests started their stacks
/// at once on 2 cores). Only a failure waits this long.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The repository root (where `Cargo.toml` and `tests/` are).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A port that was free a moment ago on 127.0.0.1, handed to a child process
/// that binds it itself.
///
/// Ports come from below the kernel's ephemeral range, never from a `:0` bind:
/// an ephemeral port released here can be given to the next `:0` listener (an
/// upstream of the same test, say) before the child binds it. Each port is
/// handed out once per test binary (every end-to-end test is in one), so parallel tests
/// never share one.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

    let (low, high) = non_ephemeral_range();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let span = u32::from(high - low);
    let start = std::process::id().wrapping_mul(7919) % span;
    for offset in 0..span {
        let port = low + ((start + offset) % span) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// A port range outside `net.ipv4.ip_local_port_range` (below it when there is
/// room, as with Linux's default 32768-60999; otherwise above it).
fn non_ephemeral_range() -> (u16, u16) {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = ephemeral.split_whitespace().filter_map(|n| n.parse::<u16>().ok());
    let (first, last) = (bounds.next().unwrap_or(32768), bounds.next().unwrap_or(60999));
    if first > 12_000 {
        (10_000, first)
    } else if last < 63_000 {
        (last + 1, 65_535)
    } else {
        (1_024, first.max(1_025))
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics naming `what`
/// after `timeout`. The way to wait for anything that has no ready signal.
#[track_caller]
pub fn eventually<'a, T, F, Fut>(what: &'a str, timeout: Duration, mut check: F) -> impl Future<Output = T> + 'a
where
    F: FnMut() -> Fut + 'a,
    Fut: Future<Output = Option<T>> + 'a,
    T: 'a,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("{caller}: timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A child process of the test. Killed (SIGKILL) when dropped; when the drop
/// happens during a panic (a failing test), its captured output is printed.
pub struct ChildProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    /// Holds the log file; removed with the process.
    _dir: tempfile::TempDir,
}

/// A fresh temp dir holding `<name>.log`, opened for writing.
fn log_file(name: &str) -> (tempfile::TempDir, PathBuf, std::fs::File) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("portcullis-e2e-{name}-"))
        .tempdir()
        .expect("create temp dir for a process log");
    let log_path = dir.path().join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).expect("create process log");
    (dir, log_path, log)
}

impl ChildProcess {
    /// Spawns `cmd` with stdout and stderr appended to a log file.
    pub fn spawn(name: &str, mut cmd: Command) -> ChildProcess {
        let (dir, log_path, log) = log_file(name);
        let log2 = log.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        ChildProcess {
            name: name.to_owned(),
            child,
            log_path,
            _dir: dir,
        }
    }

    /// Spawns a node peer that announces readiness with one stdout line
    /// `<marker> <url>`, waits for that line (with a deadline) and returns the URL.
    /// The rest of stdout and all of stderr go to the log.
    ///
    /// A peer that is still silent at the deadline is killed and started once more
    /// (announced on stderr with its log): once, in a clean-clone CI run, the test
    /// provider printed nothing for 90 s, which no rerun reproduced. A peer that exits,
    /// or stays silent twice, fails the test.
    pub async fn spawn_announcing(name: &str, mut cmd: Command, marker: &str) -> (ChildProcess, String) {
        match Self::try_spawn_announcing(name, &mut cmd, marker).await {
            Ok(started) => started,
            Err(mut silent) => {
                // Straight to the process's stderr: libtest keeps what `eprintln!` prints
                // from a test that passes, and the CI log should show every retry.
                let _ = writeln!(
                    std::io::stderr(),
                    "{name}: did not print {marker} within {READY_TIMEOUT:?}; starting it once more\n{}",
                    silent.log_tail()
                );
                silent.kill().await;
                match Self::try_spawn_announcing(name, &mut cmd, marker).await {
                    Ok(started) => started,
                    Err(mut silent) => silent.fail(&format!("did not print {marker} within {READY_TIMEOUT:?}, twice")),
                }
            }
        }
    }

    /// One start of [`Self::spawn_announcing`]; `Err` with the process if it stayed silent.
    async fn try_spawn_announcing(
        name: &str,
        cmd: &mut Command,
        marker: &str,
    ) -> Result<(ChildProcess, String), ChildProcess> {
        let (dir, log_path, log) = log_file(name);
        let log2 = log.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut proc = ChildProcess {
            name: name.to_owned(),
            child,
            log_path,
            _dir: dir,
        };

        let mut lines = BufReader::new(stdout).lines();
        let prefix = format!("{marker} ");
        let wait = async {
            while let Some(line) = lines.next_line().await.ok().flatten() {
                if let Some(url) = line.strip_prefix(&prefix) {
                    return Some(url.trim().to_owned());
                }
            }
            None
        };
        let url = match tokio::time::timeout(READY_TIMEOUT, wait).await {
            Ok(Some(url)) => url,
            Ok(None) => proc.fail(&format!("exited before printing {marker}")),
            Err(_) => return Err(proc),
        };
        // Keep draining stdout so the peer never blocks on a full pipe; the task
        // ends when the process does (EOF).
        let mut rest = lines.into_inner();
        let mut sink = tokio::fs::File::from_std(log2);
        tokio::spawn(async move {
            // Errors here only lose log lines of a process that is going away.
            let _ = tokio::io::copy(&mut rest, &mut sink).await;
            let _ = sink.flush().await;
        });
        Ok((proc, url))
    }

    /// Panics with `why`; the log is printed when `self` drops during the unwind.
    #[track_caller]
    pub fn fail(&mut self, why: &str) -> ! {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited with {status}"),
            Ok(None) => "still running".to_owned(),
            Err(e) => format!("state unknown: {e}"),
        };
        panic!("{}: {why} ({status})", self.name);
    }

    /// `Some(description)` when the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// The last lines of the captured output, framed for printing.
    pub fn log_tail(&self) -> String {
        const MAX_LINES: usize = 200;
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(log unreadable: {e})"));
        let lines: Vec<&str> = text.lines().collect();
        let skip = lines.len().saturating_sub(MAX_LINES);
        let mut out = format!(
            "----- {} log ({} lines, last {}) -----\n",
            self.name,
            lines.len(),
            lines.len() - skip
        );
        for line in &lines[skip..] {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&format!("----- end of {} log -----", self.name));
        out
    }

    /// The operating-system process id (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is still running")
    }

    /// Sends signal `name` (`TERM`, `HUP`, `INT`…) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.pid();
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed: {status}");
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait for child"))
    }

    /// The whole captured output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Kills the process and waits until it is gone (its port is then free).
    pub async fn kill(&mut self) {
        // An error means the process is already gone, which is what we want.
        let _ = self.child.kill().await;
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        // kill_on_drop(true) sends SIGKILL when `child` drops right after this.
    }
}

/// A tokio `Command` for `node <script>` with the repository root as working directory.
pub fn node(script: &str) -> Command {
    let path = repo_root().join(script);
    assert!(
        path.exists(),
        "{} is missing: the node peers land on main (git merge main), then run `bash tests/setup.sh`",
        path.display()
    );
    let mut cmd = Command::new("node");
    cmd.arg(path).current_dir(repo_root());
    cmd
}
