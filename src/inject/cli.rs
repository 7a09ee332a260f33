//! The `nudge inject` and `nudge uninject` subcommands: the only part of [`crate::inject`] that
//! does I/O. Reads files or stdin, writes the YAML to stdout or `-o FILE` (atomically, via a
//! temporary file and a rename), the report to stderr. Exit codes: 0 done, 1 warnings with
//! `--strict`, 2 bad input or I/O error. On 1 and 2 nothing is written to stdout or `-o`.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::error::DocumentError;
use super::{Options, Placement, Rewrite, DEFAULT_IMAGE};

/// Flags of `nudge inject`.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectArgs {
    #[command(flatten)]
    input: Input,

    /// Sidecar image, unless a workload's nudge.dev/image annotation names another.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,

    /// Where the sidecar goes: `native` (an initContainers entry with restartPolicy: Always,
    /// Kubernetes 1.29+) or `regular` (in containers, for older clusters).
    #[arg(long, value_enum, value_name = "KIND", default_value = "native")]
    pub sidecar: Placement,

    /// Fail (exit 1, no output) when any warning is reported: things that will never reload.
    #[arg(long)]
    pub strict: bool,
}

/// Flags of `nudge uninject`.
#[derive(Debug, Clone, clap::Args)]
pub struct UninjectArgs {
    #[command(flatten)]
    input: Input,
}

/// Input files and output file, shared by both subcommands.
#[derive(Debug, Clone, clap::Args)]
struct Input {
    /// Manifests to read (`-` is stdin; none means stdin). Multi-document YAML and `List`s.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Manifest to read, like kubectl's -f (repeatable; `-` is stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    filenames: Vec<PathBuf>,

    /// Write the YAML to FILE instead of stdout (replaced only when everything succeeded).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An input could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The input, `<stdin>` for stdin.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A document is invalid.
    #[error("{path}: {source}")]
    Document {
        /// The input, `<stdin>` for stdin.
        path: String,
        /// Where and what.
        #[source]
        source: DocumentError,
    },
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The output, `<stdout>` for stdout.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `--strict` and there were warnings.
    #[error("{count} warning(s) and --strict: nothing written")]
    Strict {
        /// How many warnings.
        count: usize,
    },
}

impl CliError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Strict { .. } => 1,
            _ => 2,
        }
    }
}

/// Runs `nudge inject`; returns the process exit code.
pub fn inject(args: &InjectArgs) -> ExitCode {
    let options = Options {
        image: args.image.clone(),
        placement: args.sidecar,
    };
    finish(run(&args.input, args.strict, |text| {
        super::inject(text, &options)
    }))
}

/// Runs `nudge uninject`; returns the process exit code.
pub fn uninject(args: &UninjectArgs) -> ExitCode {
    finish(run(&args.input, false, super::uninject))
}

fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Write { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nudge: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(
    input: &Input,
    strict: bool,
    rewrite: impl Fn(&str) -> Result<Rewrite, DocumentError>,
) -> Result<(), CliError> {
    let mut paths: Vec<&Path> = input
        .files
        .iter()
        .chain(&input.filenames)
        .map(PathBuf::as_path)
        .collect();
    if paths.is_empty() {
        paths.push(Path::new("-"));
    }
    let mut output = String::new();
    let mut report = String::new();
    let mut warnings = 0;
    for path in paths {
        let name = display_name(path);
        let text = read(path).map_err(|source| CliError::Read {
            path: name.clone(),
            source,
        })?;
        let rewritten = rewrite(&text).map_err(|source| CliError::Document {
            path: name.clone(),
            source,
        })?;
        for entry in &rewritten.reports {
            report.push_str(&format!("{entry}\n"));
            for warning in &entry.warnings {
                report.push_str(&format!("warning: {}: {warning}\n", entry.object));
                warnings += 1;
            }
        }
        if !rewritten.output.is_empty() {
            super::stream::push_document(&mut output, &rewritten.output);
        }
    }
    // The report goes out even when --strict then refuses, so the user sees why.
    eprint!("{report}");
    if strict && warnings > 0 {
        return Err(CliError::Strict { count: warnings });
    }
    match &input.output {
        Some(path) => write_atomically(path, &output).map_err(|source| CliError::Write {
            path: path.display().to_string(),
            source,
        }),
        None => {
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(output.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|source| CliError::Write {
                    path: "<stdout>".to_owned(),
                    source,
                })
        }
    }
}

fn display_name(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

fn read(path: &Path) -> io::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        io::stdin().lock().read_to_string(&mut text)?;
        return Ok(text);
    }
    fs::read_to_string(path)
}

/// Writes `text` to a temporary file beside `path`, then renames it over `path`.
fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(".nudge-tmp");
    let temporary = path.with_file_name(temporary_name);
    let result = fs::write(&temporary, text).and_then(|()| fs::rename(&temporary, path));
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}
