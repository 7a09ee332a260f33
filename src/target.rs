//! Finding the app's process. `/proc` is scanned afresh for every reload (the app may have
//! restarted under a new PID), the chosen process is pinned with a pidfd, and its identity
//! (start time) is checked again through that pidfd's PID so a reused PID is never signalled.
//!
//! Selectors: a process name (`comm`), a regex on the full command line, a pid file, or, with
//! none given, the main process of the one other container in the shared PID namespace.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use regex_lite::Regex;

/// Linux truncates `comm` to 15 bytes.
const COMM_LEN: usize = 15;
/// `PF_KTHREAD` in /proc/PID/stat `flags`: kernel threads are never targets.
const PF_KTHREAD: u64 = 0x0020_0000;

/// How the user chose the target process.
#[derive(Debug, Clone)]
pub enum Selector {
    /// Exact process name (`comm`, as `ps -o comm` shows it).
    Name(String),
    /// Regular expression matched against the full command line.
    CommandLine(Regex),
    /// A file holding the PID, read for every reload.
    PidFile(PathBuf),
    /// The main process of the one other container of the pod (no selector given).
    OtherContainer,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Name(name) => write!(f, "process named {name:?}"),
            Selector::CommandLine(re) => {
                write!(f, "process whose command line matches {:?}", re.as_str())
            }
            Selector::PidFile(path) => write!(f, "process in pid file {}", path.display()),
            Selector::OtherContainer => f.write_str("main process of the other container"),
        }
    }
}

/// One process as seen in /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// PID in nudge's PID namespace.
    pub pid: i32,
    /// Parent PID; 0 for a container's first process in a shared PID namespace.
    pub ppid: i32,
    /// Process name (`comm`).
    pub comm: String,
    /// Start time in clock ticks since boot: with the PID, it identifies the process.
    pub start_time: u64,
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.comm)
    }
}

/// Why no usable target was found.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Nothing matched the selector (yet).
    #[error("no {selector} is running{hint}")]
    NotFound {
        /// The selector, in words.
        selector: String,
        /// What the user can check.
        hint: &'static str,
    },
    /// Several containers' main processes qualify and no selector says which.
    #[error("several containers' main processes found: {candidates}; choose one with RELOAD_PROCESS=<name> or RELOAD_PROCESS_REGEX=<regex>")]
    Ambiguous {
        /// The candidates, listed.
        candidates: String,
    },
    /// The pid file exists but does not hold a PID.
    #[error("pid file {path} does not hold a process ID (found {content:?})")]
    BadPidFile {
        /// The pid file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// /proc could not be read.
    #[error("cannot read {path}: {source}")]
    Proc {
        /// What was being read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

const NAMESPACE_HINT: &str =
    " in nudge's PID namespace; does the pod set shareProcessNamespace: true?";

/// Finds the processes to signal. Name and regex matches skip workers (a match whose parent
/// also matches), so a master and its workers yield the master alone.
pub fn find(selector: &Selector, proc_root: &Path) -> Result<Vec<Process>, TargetError> {
    match selector {
        Selector::PidFile(path) => from_pid_file(path, proc_root).map(|p| vec![p]),
        Selector::OtherContainer => other_container_main(proc_root).map(|p| vec![p]),
        Selector::Name(name) => {
            let wanted = truncate_comm(name);
            topmost_matches(selector, proc_root, |p, _| p.comm == wanted)
        }
        Selector::CommandLine(re) => topmost_matches(selector, proc_root, |_, dir| {
            read_cmdline(dir).is_some_and(|cmdline| re.is_match(&cmdline))
        }),
    }
}

fn truncate_comm(name: &str) -> &str {
    let mut end = name.len().min(COMM_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn topmost_matches(
    selector: &Selector,
    proc_root: &Path,
    matches: impl Fn(&Process, &Path) -> bool,
) -> Result<Vec<Process>, TargetError> {
    let own_pid = std::process::id() as i32;
    let matched: Vec<Process> = scan(proc_root)?
        .filter(|(p, _)| p.pid != own_pid)
        .filter(|(p, dir)| matches(p, dir))
        .map(|(p, _)| p)
        .collect();
    let pids: HashSet<i32> = matched.iter().map(|p| p.pid).collect();
    let topmost: Vec<Process> = matched
        .into_iter()
        .filter(|p| !pids.contains(&p.ppid))
        .collect();
    if topmost.is_empty() {
        return Err(TargetError::NotFound {
            selector: selector.to_string(),
            hint: NAMESPACE_HINT,
        });
    }
    Ok(topmost)
}

fn from_pid_file(path: &Path, proc_root: &Path) -> Result<Process, TargetError> {
    let not_found = |hint| TargetError::NotFound {
        selector: Selector::PidFile(path.into()).to_string(),
        hint,
    };
    let content = match fs::read_to_string(path) {
        Ok(content) => content,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_found(" (the pid file does not exist yet)"))
        }
        Err(source) => {
            return Err(TargetError::Proc {
                path: path.into(),
                source,
            })
        }
    };
    let pid: i32 = content
        .trim()
        .parse()
        .map_err(|_| TargetError::BadPidFile {
            path: path.into(),
            content: content.trim().chars().take(40).collect(),
        })?;
    read_process(&proc_root.join(pid.to_string()))
        .map(|(p, _)| p)
        .ok_or_else(|| not_found(" (the PID it names has exited)"))
}

/// The main process of the one other container: PPID-0 processes grouped by cgroup (one group
/// per container), the oldest of each group, PID 1 (pause) and nudge's own container excluded.
fn other_container_main(proc_root: &Path) -> Result<Process, TargetError> {
    let own_cgroup = read_cgroup(&proc_root.join("self"));
    let mut oldest_by_cgroup: BTreeMap<String, Process> = BTreeMap::new();
    for (process, dir) in scan(proc_root)? {
        if process.ppid != 0 || process.pid == 1 {
            continue;
        }
        let Some(cgroup) = read_cgroup(&dir) else {
            continue;
        };
        if Some(&cgroup) == own_cgroup.as_ref() {
            continue;
        }
        let slot = oldest_by_cgroup
            .entry(cgroup)
            .or_insert_with(|| process.clone());
        if (process.start_time, process.pid) < (slot.start_time, slot.pid) {
            *slot = process;
        }
    }
    let mut mains = oldest_by_cgroup.into_iter();
    match (mains.next(), mains.next()) {
        (Some((_, main)), None) => Ok(main),
        (None, _) => Err(TargetError::NotFound {
            selector: Selector::OtherContainer.to_string(),
            hint: " (only PID 1 and nudge's own container are visible); set shareProcessNamespace: true on the pod, or name the process with RELOAD_PROCESS",
        }),
        (Some(first), Some(second)) => {
            let candidates = [first, second]
                .into_iter()
                .chain(mains)
                .map(|(cgroup, p)| format!("{p} in cgroup {}", container_of(&cgroup)))
                .collect::<Vec<_>>()
                .join(", ");
            Err(TargetError::Ambiguous { candidates })
        }
    }
}

/// Every live user-space process under `proc_root`, with its /proc directory.
fn scan(proc_root: &Path) -> Result<impl Iterator<Item = (Process, PathBuf)>, TargetError> {
    let entries = fs::read_dir(proc_root).map_err(|source| TargetError::Proc {
        path: proc_root.into(),
        source,
    })?;
    Ok(entries.filter_map(|entry| {
        let entry = entry.ok()?;
        let name = entry.file_name();
        name.to_str()?
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then_some(())?;
        read_process(&entry.path())
    }))
}

/// Reads one process from its /proc directory; `None` if it is gone, a zombie or a kernel thread.
pub fn read_process(dir: &Path) -> Option<(Process, PathBuf)> {
    let mut buf = [0u8; 1024];
    let stat = read_small(&dir.join("stat"), &mut buf).ok()?;
    let process = parse_stat(std::str::from_utf8(stat).ok()?)?;
    Some((process, dir.to_path_buf()))
}

/// Reads a small /proc file into `buf` with as few system calls as possible: procfs reports
/// size 0, so `fs::read` would grow its buffer over several reads; this is open, one read,
/// close. procfs answers a read with all of a file that fits the buffer, so a read that does
/// not fill it has reached the end: asking again for the zero-length end would add a system
/// call per process to every scan. Longer content is truncated, which is fine for the fields
/// read here (stat, status, cgroup; cmdline beyond 4 KiB).
fn read_small<'b>(path: &Path, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
    use std::io::Read;
    let len = fs::File::open(path)?.read(buf)?;
    Ok(&buf[..len])
}

/// Parses /proc/PID/stat. `comm` may hold spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_stat(stat: &str) -> Option<Process> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let pid = stat[..open].trim().parse().ok()?;
    let comm = stat.get(open + 1..close)?.to_owned();
    // Fields after comm, numbered from 3 (state) as in proc(5).
    let rest: Vec<&str> = stat.get(close + 1..)?.split_ascii_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    if matches!(field(3)?, "Z" | "X" | "x") {
        return None;
    }
    let flags: u64 = field(9)?.parse().ok()?;
    if flags & PF_KTHREAD != 0 {
        return None;
    }
    Some(Process {
        pid,
        ppid: field(4)?.parse().ok()?,
        comm,
        start_time: field(22)?.parse().ok()?,
    })
}

fn read_cmdline(dir: &Path) -> Option<String> {
    let mut buf = [0u8; 4096];
    let raw = read_small(&dir.join("cmdline"), &mut buf).ok()?;
    let text = String::from_utf8_lossy(raw);
    Some(text.trim_end_matches('\0').replace('\0', " "))
}

/// The process's cgroup membership (all lines of /proc/PID/cgroup: the v2 `0::` line and any
/// v1 controller lines), used as the identity of its container.
fn read_cgroup(dir: &Path) -> Option<String> {
    let mut buf = [0u8; 2048];
    let text = std::str::from_utf8(read_small(&dir.join("cgroup"), &mut buf).ok()?).ok()?;
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    lines.sort_unstable();
    Some(lines.join(";"))
}

/// A readable container identity out of [`read_cgroup`]'s key: the cgroup v2 path, or the
/// first v1 path that is not the root.
fn container_of(cgroup: &str) -> &str {
    let paths = || {
        cgroup
            .split(';')
            .filter_map(|line| line.splitn(3, ':').nth(2))
    };
    let v2 = cgroup.split(';').find_map(|line| line.strip_prefix("0::"));
    v2.filter(|p| *p != "/")
        .or_else(|| paths().find(|p| *p != "/"))
        .unwrap_or("/")
}

/// The signal-relevant part of /proc/PID/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalState {
    /// Signals with a handler installed (bit n-1 for signal n).
    pub caught: u64,
    /// Signals set to be ignored.
    pub ignored: u64,
    /// Real UID of the process.
    pub uid: u32,
}

impl SignalState {
    /// Whether the process catches or ignores signal number `signal`.
    pub fn handles(&self, signal: i32) -> bool {
        let bit = 1u64 << (signal - 1);
        (self.caught | self.ignored) & bit != 0
    }
}

/// Parses `SigCgt`, `SigIgn` and `Uid` out of /proc/PID/status.
pub fn parse_status(status: &str) -> Option<SignalState> {
    let value = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    Some(SignalState {
        caught: u64::from_str_radix(value("SigCgt:")?, 16).ok()?,
        ignored: u64::from_str_radix(value("SigIgn:")?, 16).ok()?,
        uid: value("Uid:")?
            .split_ascii_whitespace()
            .next()?
            .parse()
            .ok()?,
    })
}

/// A process pinned by a pidfd: signals sent through it can only reach that very process.
#[derive(Debug)]
pub struct PinnedProcess {
    /// The process as found by the scan.
    pub process: Process,
    pidfd: OwnedFd,
    proc_dir: PathBuf,
}

impl PinnedProcess {
    /// Opens a pidfd for `process` and checks that the PID still names the same process (same
    /// start time). `Ok(None)` means it exited or its PID was reused meanwhile.
    pub fn pin(process: &Process, proc_root: &Path) -> io::Result<Option<PinnedProcess>> {
        let Some(pid) = rustix::process::Pid::from_raw(process.pid) else {
            return Ok(None);
        };
        let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let proc_dir = proc_root.join(process.pid.to_string());
        match read_process(&proc_dir) {
            Some((now, _)) if now.start_time == process.start_time => Ok(Some(PinnedProcess {
                process: process.clone(),
                pidfd,
                proc_dir,
            })),
            _ => Ok(None),
        }
    }

    /// Reads the process's current signal dispositions and UID.
    pub fn signal_state(&self) -> io::Result<SignalState> {
        let mut buf = [0u8; 4096];
        let status = read_small(&self.proc_dir.join("status"), &mut buf)?;
        parse_status(&String::from_utf8_lossy(status)).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/PID/status")
        })
    }

    /// Sends `signal` through the pidfd.
    pub fn send(&self, signal: nix::sys::signal::Signal) -> io::Result<()> {
        let signal = rustix::process::Signal::from_named_raw(signal as i32)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "unsupported signal"))?;
        rustix::process::pidfd_send_signal(&self.pidfd, signal).map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parentheses_in_comm() {
        let stat = "42 (we (ird) name) S 0 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        let p = parse_stat(stat).expect("parses");
        assert_eq!(
            (p.pid, p.ppid, p.comm.as_str(), p.start_time),
            (42, 0, "we (ird) name", 777)
        );
    }

    #[test]
    fn zombies_and_kernel_threads_are_not_processes() {
        assert!(parse_stat("5 (x) Z 1 5 5 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 9").is_none());
        assert!(
            parse_stat("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 9").is_none()
        );
    }

    #[test]
    fn status_gives_caught_ignored_and_uid() {
        let status = "Name:\tnginx\nUid:\t101\t101\t101\t101\nSigIgn:\t0000000000001000\nSigCgt:\t0000000180004a03\n";
        let s = parse_status(status).expect("parses");
        assert!(s.handles(1), "SIGHUP caught");
        assert!(s.handles(13), "SIGPIPE ignored");
        assert!(!s.handles(3), "SIGQUIT neither");
        assert_eq!(s.uid, 101);
    }

    #[test]
    fn container_identity_prefers_the_v2_path() {
        assert_eq!(container_of("0::/pod/app;4:memory:/x"), "/pod/app");
        assert_eq!(
            container_of("0::/;4:memory:/kubepods/pod1/c1;8:pids:/"),
            "/kubepods/pod1/c1"
        );
        assert_eq!(container_of("0::/"), "/");
    }

    #[test]
    fn long_names_match_the_truncated_comm() {
        assert_eq!(
            truncate_comm("prometheus-config-reloader"),
            "prometheus-conf"
        );
        assert_eq!(truncate_comm("nginx"), "nginx");
    }
}
