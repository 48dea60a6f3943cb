//! Child processes of the benchmark: bounded in time, and never left
//! running. Every process xtask starts is either waited for with a deadline
//! (and killed when it passes) or owned by a guard that stops it on drop,
//! on every exit path including errors and panics.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What a finished command printed.
#[derive(Debug)]
pub struct Finished {
    pub stdout: String,
    pub elapsed: Duration,
}

/// A started command whose output is being collected.
pub struct Running {
    child: Option<Child>,
    what: String,
    started: Instant,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
}

fn collect(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error ends the collection; what arrived is kept.
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

impl Running {
    /// Starts `cmd` with stdout and stderr captured.
    pub fn start(mut cmd: Command) -> Result<Running, String> {
        let what = describe(&cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start `{what}`: {e}"))?;
        // Both pipes are drained by threads, so a chatty child can never
        // block on a full pipe while we wait for it.
        let stdout = child.stdout.take().map(collect);
        let stderr = child.stderr.take().map(collect);
        Ok(Running {
            child: Some(child),
            what,
            started: Instant::now(),
            stdout,
            stderr,
        })
    }

    /// Waits until the command exits or `timeout` passes (then kills it and
    /// fails). A non-zero exit is an error that quotes its stderr.
    pub fn wait(mut self, timeout: Duration) -> Result<Finished, String> {
        let deadline = self.started + timeout;
        let Some(mut child) = self.child.take() else {
            return Err(format!("`{}` was already waited for", self.what));
        };
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "`{}` did not finish within {timeout:?}; killed",
                        self.what
                    ));
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("cannot wait for `{}`: {e}", self.what));
                }
            }
        };
        let elapsed = self.started.elapsed();
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !status.success() {
            return Err(format!(
                "`{}` failed ({status}): {}",
                self.what,
                last_lines(&stderr, 5)
            ));
        }
        Ok(Finished { stdout, elapsed })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `cmd` to completion within `timeout`.
pub fn run(cmd: Command, timeout: Duration) -> Result<Finished, String> {
    Running::start(cmd)?.wait(timeout)
}

pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// A running `kv-server`, stopped when dropped.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
}

/// Longest the server may take to print its address (recovery included).
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl Server {
    /// Starts `binary` on 127.0.0.1 with a free port and `data_dir`, plus
    /// `extra` flags, and waits for its `listening on ADDR` line. Its stderr
    /// goes on into `log`.
    pub fn start(
        binary: &Path,
        data_dir: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Result<Server, String> {
        Self::start_at(binary, "127.0.0.1:0", data_dir, extra, log)
    }

    /// As [`Server::start`], listening on `addr`.
    pub fn start_at(
        binary: &Path,
        addr: &str,
        data_dir: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Result<Server, String> {
        let mut cmd = Command::new(binary);
        cmd.arg("--addr")
            .arg(addr)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let what = describe(&cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start `{what}`: {e}"))?;
        // Appended to: a restarted server (the cluster's failover rounds)
        // keeps the log of its earlier runs; the bench clears the logs
        // when it starts.
        let mut log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let stderr = child.stderr.take();
        // From here on the guard owns the child: any early return stops it.
        let mut server = Server {
            child: Some(child),
            addr: String::new(),
        };
        let Some(stderr) = stderr else {
            return Err("kv-server's stderr was not captured".into());
        };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log_file, "{line}");
                if !sent && let Some(addr) = listening_addr(&line) {
                    sent = tx.send(addr).is_ok();
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                server.addr = addr;
                Ok(server)
            }
            Err(_) => {
                drop(server);
                let log_text = std::fs::read_to_string(log).unwrap_or_default();
                Err(format!(
                    "kv-server did not say `listening on` within {START_TIMEOUT:?}: {}",
                    last_lines(&log_text, 5)
                ))
            }
        }
    }

    /// Kills it with SIGKILL, as a crash, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's resident set size (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> Result<u64, String> {
        let pid = self.pid().ok_or("the server is stopped")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
        parse_vm_rss(&status).ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
    }

    /// Asks the server to shut down (SIGTERM) and waits for it; kills it if
    /// it takes longer than `timeout`. Fails unless it exited 0.
    pub fn stop(mut self, timeout: Duration) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        terminate(&child);
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("kv-server exited with {status}")),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("kv-server did not stop within {timeout:?}; killed"));
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error path: no need to be gentle, only certain.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends SIGTERM through kill(1): std can only SIGKILL, and a graceful stop
/// is what makes the server sync and exit 0.
pub fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The address in a `... listening on 127.0.0.1:PORT` log line.
pub fn listening_addr(line: &str) -> Option<String> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
        .collect();
    (!addr.is_empty()).then_some(addr)
}

/// VmRSS from the text of /proc/PID/status, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A directory removed when dropped (best effort).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `path` afresh, removing whatever was there.
    pub fn fresh(path: PathBuf) -> Result<TempDir, String> {
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        }
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_the_log_line() {
        let line = "2026-11-25T10:01:22.5Z  INFO kv_server: listening on 127.0.0.1:41571";
        assert_eq!(listening_addr(line).as_deref(), Some("127.0.0.1:41571"));
        assert_eq!(listening_addr("INFO opening the store"), None);
    }

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tkv-server\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn a_command_past_its_deadline_is_killed() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let started = Instant::now();
        let err = run(cmd, Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn output_and_failures_are_reported() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2"]);
        let done = run(cmd, Duration::from_secs(10)).unwrap();
        assert_eq!(done.stdout.trim(), "out");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo broken >&2; exit 3"]);
        let err = run(cmd, Duration::from_secs(10)).unwrap_err();
        assert!(err.contains("broken"), "{err}");
    }
}
