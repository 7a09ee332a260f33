//! `nudge check`: run inside the pod (`kubectl exec POD -c nudge -- nudge check`) with the
//! sidecar's own flags and environment, it explains what the sidecar would do and what would
//! not work: the watched paths and what they are, the pod's mounts that can never update
//! (subPath mounts of ConfigMaps/Secrets, found in /proc/self/mountinfo), and the process that
//! would be signalled with whether nudge may signal it (same UID, or CAP_KILL). Read-only: it
//! sends no signal and changes nothing.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::action::ReloadAction;
use crate::config::Settings;
use crate::run::target_of;
use crate::snapshot::DATA_LINK;
use crate::target::{self, Process};

/// Bit of CAP_KILL in the capability masks of /proc/PID/status.
const CAP_KILL: u32 = 5;
/// Kubelet volume plugins whose content the kubelet rewrites (and a subPath mount freezes).
const KUBELET_VOLUME_KINDS: &[(&str, &str)] = &[
    ("kubernetes.io~configmap", "ConfigMap"),
    ("kubernetes.io~secret", "Secret"),
    ("kubernetes.io~projected", "projected"),
    ("kubernetes.io~downward-api", "downward API"),
];

/// What `nudge check` found: the report to print and how many things would not work.
#[derive(Debug, Default)]
pub struct Report {
    /// The human-readable report, one finding per line.
    pub text: String,
    /// Findings that would make the sidecar not work; non-zero means exit 1.
    pub problems: usize,
}

impl Report {
    fn line(&mut self, text: impl AsRef<str>) {
        self.text.push_str(text.as_ref());
        self.text.push('\n');
    }

    fn problem(&mut self, text: impl AsRef<str>) {
        self.problems += 1;
        self.line(format!("  PROBLEM: {}", text.as_ref()));
    }
}

/// One line of /proc/self/mountinfo, the fields `nudge check` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The path inside the mounted filesystem that is mounted (field 4).
    pub root: String,
    /// Where it is mounted (field 5).
    pub mount_point: PathBuf,
}

/// Parses mountinfo text; lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let root = unescape(fields.nth(3)?);
            let mount_point = PathBuf::from(unescape(fields.next()?));
            Some(Mount { root, mount_point })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN` (octal).
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Which kind of kubelet volume a mount's source lies in, if any: a path through
/// `.../volumes/kubernetes.io~configmap/...`, or into a timestamped `..2026_...` generation
/// (Secrets live on their own tmpfs, so only the generation shows in `root`).
pub fn kubelet_source(root: &str) -> Option<&'static str> {
    KUBELET_VOLUME_KINDS
        .iter()
        .find(|(dir, _)| root.contains(&format!("/{dir}/")))
        .map(|(_, kind)| *kind)
        .or_else(|| {
            root.split('/')
                .any(|c| c.starts_with("..") && c[2..].starts_with(|ch: char| ch.is_ascii_digit()))
                .then_some("ConfigMap/Secret")
        })
}

/// A file mounted on its own that can never update: from a kubelet volume, or watched (or
/// inside a watched directory) without the `..data` link of a whole volume beside it.
fn frozen_reason(mount: &Mount, watched: &[PathBuf]) -> Option<String> {
    if !mount.mount_point.is_file() {
        return None;
    }
    if let Some(kind) = kubelet_source(&mount.root) {
        return Some(format!("subPath mount of a {kind} volume"));
    }
    let is_watched = watched.iter().any(|w| mount.mount_point.starts_with(w));
    let beside = mount.mount_point.parent().map(|p| p.join(DATA_LINK));
    let in_volume = beside.is_some_and(|d| d.symlink_metadata().is_ok());
    (is_watched && !in_volume).then(|| "single file bind-mounted on its own".to_owned())
}

/// Checks everything and returns the report; reads /proc and the watched paths only.
pub fn check(settings: &Settings) -> Report {
    let mut report = Report::default();
    check_watched(settings, &mut report);
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    check_mounts(&parse_mountinfo(&mountinfo), &settings.watch, &mut report);
    check_target(&settings.action, &mut report);
    match report.problems {
        0 => report.line("OK: the sidecar would work as configured."),
        n => report.line(format!(
            "{n} problem(s): the sidecar would not work as configured."
        )),
    }
    report
}

fn check_watched(settings: &Settings, report: &mut Report) {
    report.line("Watched paths:");
    for path in &settings.watch {
        let what = describe_path(path);
        report.line(format!(
            "  {}: {}",
            path.display(),
            what.unwrap_or("missing")
        ));
        if what.is_none() {
            report.problem(format!(
                "{} does not exist: is the volume mounted into this container?",
                path.display()
            ));
        }
    }
}

fn describe_path(path: &Path) -> Option<&'static str> {
    let meta = fs::metadata(path).ok()?;
    Some(if path.join(DATA_LINK).symlink_metadata().is_ok() {
        "kubelet volume (updates through ..data)"
    } else if meta.is_dir() {
        "plain directory"
    } else {
        "single file"
    })
}

fn check_mounts(mounts: &[Mount], watched: &[PathBuf], report: &mut Report) {
    report.line("Mounts that can never update:");
    let mut any = false;
    for mount in mounts {
        let Some(reason) = frozen_reason(mount, watched) else {
            continue;
        };
        any = true;
        let at = mount.mount_point.display();
        report.line(format!(
            "  {at}: {reason} (source {}); the kubelet never updates it",
            mount.root
        ));
        if watched.iter().any(|w| mount.mount_point.starts_with(w)) {
            report.problem(format!(
                "{at} is watched but can never change: mount the whole volume (no subPath) and point the app at the file inside it"
            ));
        }
    }
    if !any {
        report.line("  none");
    }
}

fn check_target(action: &ReloadAction, report: &mut Report) {
    report.line(format!("Action: {}", action.name()));
    let Some((selector, signal)) = target_of(action) else {
        return;
    };
    report.line(format!("Target ({selector}, signal {signal}):"));
    // Only a reload signal must be handled; restart's SIGTERM is meant to end the process.
    let must_handle = matches!(action, ReloadAction::Signal(_));
    match target::find(selector, Path::new("/proc")) {
        Ok(found) if found.is_empty() => report.problem("no process matches"),
        Ok(found) => {
            for process in &found {
                check_process(process, signal as i32, must_handle, report);
            }
        }
        Err(e) => report.problem(e.to_string()),
    }
}

fn check_process(process: &Process, signal: i32, must_handle: bool, report: &mut Report) {
    let dir = PathBuf::from(format!("/proc/{}", process.pid));
    let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
    let uids = uids(&status);
    let mut line = String::new();
    let _ = write!(line, "  {process}");
    if let Some((real, _, _)) = uids {
        let _ = write!(line, ", uid {real}");
    }
    report.line(line);
    match permission(uids) {
        Ok(why) => report.line(format!("  may signal it: {why}")),
        Err(why) => report.problem(format!("may not signal {process}: {why}")),
    }
    if let Some(state) = target::parse_status(&status).filter(|_| must_handle) {
        if !state.handles(signal) {
            report.problem(format!(
                "{process} neither catches nor ignores signal {signal}: its default action would terminate it, so nudge refuses to send it (--signal-unhandled)"
            ));
        }
    }
}

/// Whether nudge may signal a process with these (real, effective, saved) UIDs.
fn permission(target: Option<(u32, u32, u32)>) -> Result<String, String> {
    let own = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if cap_eff(&own).is_some_and(|caps| caps & (1 << CAP_KILL) != 0) {
        return Ok("CAP_KILL is in nudge's effective capabilities".to_owned());
    }
    let (Some((real, _, saved)), Some((my_real, my_eff, _))) = (target, uids(&own)) else {
        return Err("cannot read the UIDs".to_owned());
    };
    // kill(2): the sender's real or effective UID equals the target's real or saved UID.
    if [my_real, my_eff]
        .iter()
        .any(|me| *me == real || *me == saved)
    {
        return Ok(format!("same UID ({my_eff})"));
    }
    Err(format!(
        "nudge runs as UID {my_eff} without CAP_KILL and the target runs as UID {real}: run nudge with runAsUser: {real}, or add the capability KILL"
    ))
}

/// Real, effective and saved UID from a /proc/PID/status text.
fn uids(status: &str) -> Option<(u32, u32, u32)> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_ascii_whitespace().map(|v| v.parse::<u32>().ok());
    Some((ids.next()??, ids.next()??, ids.next()??))
}

/// The effective capability mask from a /proc/PID/status text.
fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_are_unescaped() {
        let text = "36 35 98:0 /var/lib/kubelet/pods/u/volumes/kubernetes.io~configmap/cfg/..2026_11_28_10_00_00.1/app.conf /etc/my\\040app/app.conf rw - ext4 /dev/sda rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts[0].mount_point, PathBuf::from("/etc/my app/app.conf"));
        assert_eq!(kubelet_source(&mounts[0].root), Some("ConfigMap"));
    }

    #[test]
    fn a_secret_subpath_is_recognised_by_its_generation_directory() {
        assert_eq!(
            kubelet_source("/..2026_11_28_10_00_00.123/tls.crt"),
            Some("ConfigMap/Secret")
        );
        assert_eq!(kubelet_source("/etc/hosts"), None);
        assert_eq!(kubelet_source("/..data/x"), None);
    }

    #[test]
    fn capabilities_and_uids_are_read_from_status() {
        let status = "Uid:\t101\t102\t103\t104\nCapEff:\t0000000000000020\n";
        assert_eq!(uids(status), Some((101, 102, 103)));
        assert_eq!(cap_eff(status), Some(1 << CAP_KILL));
    }
}
