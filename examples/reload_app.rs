//! A tiny app that reloads its configuration on SIGHUP, like nginx or Prometheus do. nudge's
//! demo and integration tests use it as "the app".
//!
//! ```text
//! reload_app --config DIR [--log FILE] [--handler-after DURATION_MS]
//! ```
//! At start-up and on every SIGHUP it reads every file of DIR (through `..data` when it is a
//! kubelet volume), prints one line, and appends `reload <n> <unix-ns-received> <content>` to
//! FILE (after a `ready <pid>` line once its handler is installed). With `--handler-after`, it installs its SIGHUP handler only after that many
//! milliseconds, like an app that is slow to start (a SIGHUP before then would kill it).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::signal::unix::{signal, SignalKind};

struct Options {
    config: PathBuf,
    log: Option<PathBuf>,
    handler_after: Duration,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        config: PathBuf::new(),
        log: None,
        handler_after: Duration::ZERO,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--config" => options.config = value.into(),
            "--log" => options.log = Some(value.into()),
            "--handler-after" => {
                let ms = value
                    .parse()
                    .map_err(|_| format!("--handler-after: not a number: {value}"))?;
                options.handler_after = Duration::from_millis(ms);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if options.config.as_os_str().is_empty() {
        return Err("--config DIR is required".into());
    }
    Ok(options)
}

/// All files of the config, `name=content` joined by `;`, read through `..data` if present.
fn read_config(dir: &Path) -> String {
    let data = dir.join("..data");
    let root = if data.exists() {
        data
    } else {
        dir.to_path_buf()
    };
    let mut entries: Vec<_> = fs::read_dir(&root)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    entries
        .iter()
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".."))
        })
        .map(|p| {
            let content = fs::read_to_string(p).unwrap_or_default();
            format!(
                "{}={}",
                p.file_name().unwrap_or_default().to_string_lossy(),
                content.trim()
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn record(options: &Options, n: u64) {
    let received = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let config = read_config(&options.config);
    println!("reload_app: reload {n}: {config}");
    append(options, &format!("reload {n} {received} {config}\n"));
}

fn append(options: &Options, line: &str) {
    if let Some(log) = &options.log {
        let appended = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            eprintln!("reload_app: cannot write {}: {e}", log.display());
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("reload_app: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "reload_app: started as pid {}: {}",
        std::process::id(),
        read_config(&options.config)
    );
    tokio::time::sleep(options.handler_after).await;
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reload_app: cannot handle SIGHUP: {e}");
            std::process::exit(1);
        }
    };
    append(&options, &format!("ready {}\n", std::process::id()));
    let mut n = 0;
    while hangups.recv().await.is_some() {
        n += 1;
        record(&options, n);
    }
}
