//! The Python package as users get it: `pip wheel bindings/python` builds
//! libdam with the package's build backend (setuptools-rust, into this same
//! target/, so nothing but the already built crate is reused), the wheel goes
//! into a fresh venv, and the whole pytest suite, the Ray tests included, runs
//! against that installed copy with no DAM_LIBRARY: the bundled library is the
//! one loaded, not the checkout's.
//!
//! Needs the set-up's `.venv` (or `$DAM_PYTHON`) with the packages of
//! scripts/requirements-test.txt (pytest, numpy, pillow, ray, pyarrow), and
//! the network or pip's cache for the build backend the first time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use dam::GgmlType;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The folder of `python`'s own packages (where a .pth file is read).
fn site_packages(python: &Path) -> PathBuf {
    let out = run_ok(Command::new(python).args([
        "-c",
        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
    ]));
    PathBuf::from(out.trim())
}

#[test]
fn wheel_installs_and_passes_the_suite() {
    let python = common::python("pytest, numpy, PIL, ray, pyarrow");
    let work = root().join("target/python-pkg");
    let _ = std::fs::remove_dir_all(&work);
    let wheels = work.join("wheel");

    // The wheel, built as `pip install` builds it (cargo run by the backend).
    run_ok(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "--disable-pip-version-check",
                "-w",
            ])
            .arg(&wheels)
            .arg(root().join("bindings/python"))
            .current_dir(root()),
    );
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("pip wheel made no .whl");

    // A fresh venv holding only the wheel; the test packages come from the
    // set-up's venv through a .pth file (no second download of Ray).
    let venv = work.join("venv");
    run_ok(
        Command::new(&python)
            .args(["-m", "venv", "--without-pip"])
            .arg(&venv),
    );
    let fresh = venv.join("bin/python");
    std::fs::write(
        site_packages(&fresh).join("dam_test_deps.pth"),
        format!("{}\n", site_packages(&python).display()),
    )
    .unwrap();
    run_ok(
        Command::new(&python)
            .args(["-m", "pip", "--python"])
            .arg(&fresh)
            .args([
                "install",
                "-q",
                "--no-deps",
                "--no-index",
                "--disable-pip-version-check",
            ])
            .arg(&wheel),
    );

    // The suite against the installed package, from a folder without the source.
    let (llm, vision) = common::converted("tiny", GgmlType::F32);
    let stdout = run_ok(
        Command::new(&fresh)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(root().join("bindings/python/tests"))
            .current_dir(&work)
            .env_remove("DAM_LIBRARY")
            .env("DAM_TEST_INSTALLED", "1")
            .env("DAM_CLI", env!("CARGO_BIN_EXE_dam"))
            .env("DAM_TEST_LLM", &llm)
            .env("DAM_TEST_VISION", &vision)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    assert!(
        stdout.contains(" passed") && !stdout.contains("skipped"),
        "{stdout}"
    );
}
