//! `vane-embedder`, the binary's name before the sidecar and the offline tools were split: kept
//! for one release so that scripts keep working. It says what to call instead, then runs
//! `vane-sidecar` (serving) or `vane` (train, eval, eval-pii, eval-cache, read) from its own
//! directory with the same arguments.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

const OFFLINE: [&str; 5] = ["train", "eval", "eval-pii", "eval-cache", "read"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let binary = if args.first().is_some_and(|a| OFFLINE.contains(&a.as_str())) { "vane" } else { "vane-sidecar" };
    eprintln!("vane-embedder is deprecated and will be removed in the next release: run `{binary}` instead");
    let path = match std::env::current_exe() {
        Ok(me) => me.with_file_name(binary),
        Err(e) => {
            eprintln!("cannot find {binary}: {e}");
            return ExitCode::from(2);
        }
    };
    let e = Command::new(&path).args(&args).exec();
    eprintln!("cannot run {}: {e} (build it with `cargo build -p vane-sidecar -p vane-tools`)", path.display());
    ExitCode::from(2)
}
