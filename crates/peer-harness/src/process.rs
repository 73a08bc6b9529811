//! Processes, binaries, ports and logs: the plumbing shared by Kamailio and SIPp.
//!
//! Every long-running peer is started in a process group of its own, under a small `sh`
//! supervisor that holds the read end of a pipe whose write end only this process holds.
//! When the pipe closes — the owning value is dropped, or the test process dies, even by
//! `SIGKILL` — the supervisor sends `SIGTERM` to the peer, waits a bounded time, then
//! `SIGKILL`s the whole group. So no peer outlives the test that started it.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{HarnessError, Result, INSTALL_HINT};

/// Finds `program`: the environment variable `env_var` (a path) first, then `PATH`, then
/// `/usr/sbin`, `/usr/bin`, `/sbin`, `/bin` (Kamailio lives in `/usr/sbin`, which is not on
/// every user's `PATH`). A missing program is [`HarnessError::MissingBinary`] with the
/// install line.
pub fn find_binary(program: &str, env_var: &str) -> Result<PathBuf> {
    let mut searched = Vec::new();
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        searched.push(format!("${env_var}={}", p.display()));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    for d in &dirs {
        let p = d.join(program);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    searched.push("PATH, /usr/sbin, /usr/bin, /sbin, /bin".into());
    Err(HarnessError::MissingBinary {
        program: program.into(),
        searched: searched.join(", "),
        hint: INSTALL_HINT.into(),
    })
}

/// Checks an explicitly given program path.
pub(crate) fn check_binary(path: &Path) -> Result<PathBuf> {
    if is_executable(path) {
        Ok(path.to_path_buf())
    } else {
        Err(HarnessError::MissingBinary {
            program: path.display().to_string(),
            searched: path.display().to_string(),
            hint: INSTALL_HINT.into(),
        })
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A token unique in this process and very likely across processes (for Call-IDs, tags,
/// branches and file names).
pub fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u64(n);
    h.write_u32(std::process::id());
    format!("{:016x}{n:x}", h.finish())
}

/// Ports handed out by [`free_tcp_ports`] in this process, never handed out twice (tests of
/// one binary run in parallel threads and would otherwise race for the same port).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago: each is bound (port 0),
/// read back and released, all held together so they differ, and none is handed out twice
/// in this process. Another process may still take one before the peer binds it; the
/// harness detects that ([`HarnessError::PortInUse`]) and retries with new ports.
pub fn free_tcp_ports(n: usize) -> Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    let mut attempts = 0;
    while ports.len() < n {
        attempts += 1;
        if attempts > n * 50 {
            return Err(HarnessError::io(
                "choosing free ports",
                std::io::Error::other("no free port found"),
            ));
        }
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| HarnessError::io("binding a probe socket", e))?;
        let port = l
            .local_addr()
            .map_err(|e| HarnessError::io("reading a probe socket's port", e))?
            .port();
        if used.insert(port) {
            ports.push(port);
        }
        held.push(l);
    }
    drop(held);
    Ok(ports)
}

/// Whether something listens on TCP `port` (any local address), from `/proc/net/tcp{,6}`:
/// a check without connecting (a probe connection would disturb peers such as SIPp).
pub fn is_listening(port: u16) -> bool {
    !listening_sockets(port).is_empty()
}

/// The sockets listening on TCP `port` (any local address), as their `/proc/<pid>/fd`
/// links read (`socket:[inode]`).
fn listening_sockets(port: u16) -> Vec<String> {
    let needle = format!(":{port:04X}");
    let mut sockets = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(s) = std::fs::read_to_string(f) else {
            continue;
        };
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
        for line in s.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" && cols[1].ends_with(&needle) {
                sockets.push(format!("socket:[{}]", cols[9]));
            }
        }
    }
    sockets
}

/// Whether process `pid` listens on TCP `port`: one of the listening sockets on the port
/// is among its open files. A free port chosen for a peer can be taken by another
/// listener (a platform of a test running beside it binding port 0) before the peer binds
/// it; a bare [`is_listening`] would then take that listener for the peer, and the test
/// would talk to the wrong process.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let sockets = listening_sockets(port);
    if sockets.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str()))
    })
}

/// The last `lines` lines of a text file (at most the last 64 KiB are read).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

const SUPERVISOR: &str = r#"exec 3<&0
"$@" </dev/null 3<&- &
k=$!
(
  read _x <&3
  kill -TERM "$k" 2>/dev/null
  i=0
  while kill -0 "$k" 2>/dev/null && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL 0
) &
wait "$k"
st=$?
echo "peer-harness: $1 exited with status $st" >&2
kill -KILL 0
"#;

/// A peer process in its own process group under the supervisor described in the module
/// doc. Dropping it stops the peer (bounded: about 3 s of grace, then `SIGKILL`).
#[derive(Debug)]
pub(crate) struct Supervised {
    child: Child,
    stdin: Option<ChildStdin>,
    name: String,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Supervised {
    /// Starts `program args` with stdout and stderr appended to `log`, in `cwd`.
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: &[OsString],
        cwd: &Path,
        log: &Path,
    ) -> Result<Supervised> {
        use std::os::unix::process::CommandExt;
        let out = File::create(log)
            .map_err(|e| HarnessError::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log file", e))?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg("peer-harness-supervisor")
            .arg(program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            // A group of its own: the supervisor's `kill 0` must never reach the test runner.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| HarnessError::io(format!("starting {}", program.display()), e))?;
        let stdin = child.stdin.take();
        Ok(Supervised {
            child,
            stdin,
            name: name.into(),
            log: log.to_path_buf(),
            exited: None,
        })
    }

    /// The process group id (the supervisor's pid).
    pub(crate) fn pgid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the supervised program has ended (the supervisor ends with it).
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// Closes the pipe: the supervisor starts stopping the peer. [`stop`](Self::stop)
    /// completes it.
    pub(crate) fn begin_stop(&mut self) {
        drop(self.stdin.take());
    }

    /// Stops the group: closes the pipe (the supervisor terminates the peer), waits up to
    /// `grace`, then kills the group outright. Idempotent.
    pub(crate) fn stop(&mut self, grace: Duration) {
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        loop {
            if self.try_wait().is_some() {
                // The supervisor ends with `kill -KILL 0`, so its group should be empty; a
                // member left behind (the supervisor killed from outside before it got
                // there) would outlive the test. While a member lives its group id cannot
                // be reused, so killing the group then reaches only what is left of ours.
                if !processes_in_group(self.pgid()).is_empty() {
                    kill_group(self.pgid());
                }
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The supervisor did not finish in time: kill the whole group ourselves.
        kill_group(self.pgid());
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
        if self.exited.is_none() {
            eprintln!("peer-harness: could not reap {}", self.name);
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Sends `SIGKILL` to process group `pgid`, through the shell's `kill` (the crate has no
/// unsafe code for `kill(2)`). In the POSIX form: dash, Debian's `/bin/sh`, refuses
/// `kill -KILL -- -PGID` ("Illegal number"), which left groups running.
fn kill_group(pgid: u32) {
    let _ = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("kill -s KILL -- -{pgid} 2>/dev/null"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Pids of the processes in process group `pgid` (from `/proc`), zombies excluded.
pub fn processes_in_group(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let _ppid = f.next();
        let pgrp = f.next().and_then(|s| s.parse::<u32>().ok());
        if pgrp == Some(pgid) && state != "Z" && state != "X" {
            out.push(pid);
        }
    }
    out
}

/// A loopback socket address.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pid in group `pgid` running `cmdline` (NUL-separated), once it shows up.
    fn pid_running(pgid: u32, cmdline: &[u8]) -> Option<u32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let found = processes_in_group(pgid)
                .into_iter()
                .find(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == cmdline));
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    #[test]
    fn stop_kills_what_a_supervisor_killed_from_outside_left_in_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sup = Supervised::spawn(
            "sleeper",
            Path::new("/bin/sleep"),
            &["600".into()],
            dir.path(),
            &dir.path().join("log"),
        )
        .expect("spawn");
        let pgid = sup.pgid();
        let peer = pid_running(pgid, b"/bin/sleep\x00600\x00").expect("the peer started");
        // The supervisor's shells (the main one and the one that waits on the pipe) die
        // without their `kill -KILL 0`: the peer is left alone in the group.
        for p in processes_in_group(pgid).into_iter().filter(|&p| p != peer) {
            Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .status()
                .expect("kill");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while sup.try_wait().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(sup.try_wait().is_some(), "the supervisor was killed");
        assert!(
            processes_in_group(pgid).contains(&peer),
            "the peer outlived the supervisor"
        );
        sup.stop(Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(5);
        while processes_in_group(pgid).contains(&peer) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !processes_in_group(pgid).contains(&peer),
            "stop killed the peer left behind"
        );
    }

    #[test]
    fn stop_kills_the_group_of_a_peer_that_ignores_sigterm_when_grace_runs_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Ignored signals stay ignored across exec: this sleep ignores SIGTERM, so the
        // supervisor's own SIGKILL would come only after its three seconds.
        let mut sup = Supervised::spawn(
            "stubborn",
            Path::new("/bin/sh"),
            &["-c".into(), "trap '' TERM; exec /bin/sleep 601".into()],
            dir.path(),
            &dir.path().join("log"),
        )
        .expect("spawn");
        let pgid = sup.pgid();
        let peer = pid_running(pgid, b"/bin/sleep\x00601\x00").expect("the peer started");
        let started = Instant::now();
        sup.stop(Duration::from_millis(200));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // SIGKILL is delivered at once, but the kernel may take a moment to reap the
        // peer: wait for it with a generous deadline (the elapsed time is checked above).
        let deadline = Instant::now() + Duration::from_secs(5);
        while processes_in_group(pgid).contains(&peer) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !processes_in_group(pgid).contains(&peer),
            "stop killed the group itself when the grace ran out"
        );
    }
}
