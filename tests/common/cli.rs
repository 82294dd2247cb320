//! Running the `dam` binary from tests.

use std::ffi::OsString;
use std::process::Command;

/// The outcome of one run of the binary.
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub cmd: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

pub fn dam(args: &[OsString]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_dam"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("cannot run the dam binary");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        cmd: args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Runs a command that must succeed and returns its stdout.
pub fn ok(args: &[OsString]) -> String {
    let o = dam(args);
    assert!(
        o.ok(),
        "dam {} failed ({:?}):\nstderr: {}\nstdout: {}",
        o.cmd,
        o.code,
        o.stderr,
        o.stdout
    );
    assert!(
        !o.stderr.contains("panicked"),
        "dam {}: {}",
        o.cmd,
        o.stderr
    );
    o.stdout
}
