//! The Kotlin (JNI), C# (Mono) and Swift (clang module) bindings, built and
//! run against this build's libdam.so and the tiny fixture model: each
//! suite's program prints one line per case and "N passed, M failed".
//!
//! Needs cmake, a JDK, kotlinc, mcs, mono, gcc, nm and clang 16+: all
//! installed by the README's set-up line (`bash scripts/setup.sh`). A missing
//! one fails its test with a message naming that line; nothing skips.
//! Build outputs live in target/release/bindings: the JNI library builds
//! incrementally with CMake and the Kotlin jar is rebuilt only when a Kotlin
//! source is newer (kotlinc takes most of this file's time).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use dam::GgmlType;

const SETUP: &str = "install it with `bash scripts/setup.sh`";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// target/release/deps: `cargo test` rebuilds libdam.so there (the copy in
/// target/release is refreshed only by `cargo build`).
fn deps() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().to_path_buf()
}

fn libdam() -> PathBuf {
    let p = deps().join("libdam.so");
    assert!(p.is_file(), "{} missing", p.display());
    p
}

/// A folder of this suite's build outputs, kept between runs.
fn out(name: &str) -> PathBuf {
    let d = deps().parent().unwrap().join("bindings").join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Fails (never skips) when `tool` cannot run.
fn require(tool: &str, version_arg: &str) {
    let ok = Command::new(tool)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "`{tool}` is needed by this test: {SETUP}");
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} ({SETUP})"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The environment every suite reads: the model, the CLI, the fixture PNGs.
fn suite_env(cmd: &mut Command) -> &mut Command {
    let (llm, vision) = common::converted("tiny", GgmlType::F32);
    cmd.env("DAM_TEST_LLM", llm)
        .env("DAM_TEST_VISION", vision)
        .env("DAM_CLI", env!("CARGO_BIN_EXE_dam"))
        .env("DAM_TEST_CASES", common::fixtures().join("tiny/cases"))
}

/// Runs a suite's program and checks its "N passed, 0 failed" line.
fn passes(cmd: &mut Command) {
    let o = run(cmd);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let n: usize = last
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `N passed, 0 failed` line:\n{stdout}"));
    assert!(n >= 10 && !stdout.contains("FAIL"), "{stdout}");
}

fn newest(dir: &Path) -> SystemTime {
    let mut t = SystemTime::UNIX_EPOCH;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = if p.is_dir() {
            newest(&p)
        } else {
            p.metadata().unwrap().modified().unwrap()
        };
        t = t.max(m);
    }
    t
}

/// libdam_jni.so through bindings/kotlin/CMakeLists.txt, as Android's Gradle
/// plugin builds it (there with the NDK's toolchain).
fn build_jni() -> PathBuf {
    require("cmake", "--version");
    let build = out("kotlin-cmake");
    // A cache made for another checkout (a copied or moved target/) makes
    // CMake refuse the folder: start it afresh.
    let src = repo().join("bindings/kotlin");
    let cache = std::fs::read_to_string(build.join("CMakeCache.txt")).unwrap_or_default();
    if !cache.is_empty() && !cache.contains(&format!("={}\n", src.display())) {
        let _ = std::fs::remove_dir_all(&build);
        std::fs::create_dir_all(&build).unwrap();
    }
    run(Command::new("cmake")
        .arg("-S")
        .arg(repo().join("bindings/kotlin"))
        .arg("-B")
        .arg(&build)
        .arg(format!("-DDAM_LIBRARY={}", libdam().display()))
        .arg("-DCMAKE_BUILD_TYPE=Release"));
    run(Command::new("cmake").arg("--build").arg(&build));
    build.join("libdam_jni.so")
}

#[test]
fn kotlin_bindings() {
    require("java", "-version");
    require("kotlinc", "-version");
    require("nm", "--version");
    let jni = build_jni();
    let src = repo().join("bindings/kotlin/src");
    let jar = out("kotlin").join("dam-test.jar");
    let fresh = jar
        .metadata()
        .and_then(|m| m.modified())
        .is_ok_and(|t| t > newest(&src));
    if !fresh {
        run(Command::new("kotlinc")
            .arg(src.join("main/kotlin"))
            .arg(src.join("test/kotlin"))
            .args(["-include-runtime", "-nowarn", "-d"])
            .arg(&jar));
    }
    // -Xcheck:jni: the JVM checks every JNI call of dam_jni.c.
    passes(
        suite_env(Command::new("java").args(["-Xcheck:jni", "-cp"]))
            .arg(&jar)
            .arg(format!("-Ddam.jni.library={}", jni.display()))
            .arg("dev.dam.DamTestKt")
            .env("DAM_JNI_LIBRARY", &jni),
    );
}

/// c1 and v1's first three frames as binary PPM / PGM: what the C# test
/// reads without an image library.
fn pnm_cases(dir: &Path) {
    let cases = common::fixtures().join("tiny/cases");
    let mut files = vec![("c1_image", "c1.ppm"), ("c1_mask", "c1_mask.pgm")];
    let names: Vec<(String, String)> = (0..3)
        .flat_map(|k| {
            [
                (format!("v1_image_f{k}"), format!("v1_f{k}.ppm")),
                (format!("v1_mask_f{k}"), format!("v1_mask_f{k}.pgm")),
            ]
        })
        .collect();
    files.extend(names.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    for (png, pnm) in files {
        let img = image::open(cases.join(format!("{png}.png"))).unwrap();
        let (magic, w, h, bytes) = if pnm.ends_with(".ppm") {
            let i = img.to_rgb8();
            ("P6", i.width(), i.height(), i.into_raw())
        } else {
            let i = img.to_luma8();
            ("P5", i.width(), i.height(), i.into_raw())
        };
        let mut b = format!("{magic}\n{w} {h}\n255\n").into_bytes();
        b.extend_from_slice(&bytes);
        std::fs::write(dir.join(pnm), b).unwrap();
    }
}

#[test]
fn csharp_bindings() {
    require("mcs", "--version");
    require("mono", "--version");
    require("gcc", "--version");
    let dir = out("csharp");
    let cs = repo().join("bindings/csharp");
    // The C header's struct sizes and field offsets, for the layout test.
    let layout = dir.join("layout");
    run(Command::new("gcc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(repo().join("include"))
        .arg(cs.join("tests/layout.c"))
        .arg("-o")
        .arg(&layout));
    let sizes = run(&mut Command::new(&layout)).stdout;
    std::fs::write(dir.join("layout.txt"), sizes).unwrap();
    pnm_cases(&dir);
    let exe = dir.join("dam-tests.exe");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&cs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cs"))
        .collect();
    sources.push(cs.join("tests/DamTests.cs"));
    run(Command::new("mcs")
        .args(["-langversion:7", "-debug", "-warnaserror"])
        .arg(format!("-out:{}", exe.display()))
        .args(&sources));
    passes(
        suite_env(Command::new("mono").arg("--debug").arg(&exe))
            .env("LD_LIBRARY_PATH", deps())
            .env("DAM_TEST_PNM", &dir)
            .env("DAM_LAYOUT", dir.join("layout.txt")),
    );
}

/// The first clang >= 16 on PATH (setup.sh installs clang-16).
fn clang() -> String {
    for c in [
        "clang-20", "clang-19", "clang-18", "clang-17", "clang-16", "clang",
    ] {
        let v = Command::new(c).arg("-dumpversion").output();
        let major = v.ok().and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split('.')
                .next()?
                .trim()
                .parse::<u32>()
                .ok()
        });
        if major.is_some_and(|m| m >= 16) {
            return c.to_string();
        }
    }
    panic!("clang 16 or newer is needed by this test: {SETUP}");
}

#[test]
fn swift_module_map() {
    let dir = out("swift");
    let cache = dir.join("module-cache");
    let _ = std::fs::remove_dir_all(&cache);
    let exe = dir.join("check");
    let swift = repo().join("bindings/swift");
    run(Command::new(clang())
        .args(["-std=c99", "-Wall", "-Werror", "-fmodules"])
        .arg(format!("-fmodules-cache-path={}", cache.display()))
        .arg(format!(
            "-fmodule-map-file={}",
            swift.join("module.modulemap").display()
        ))
        .arg(swift.join("check.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(deps())
        .arg("-ldam"));
    // The header came in as the module CDam, not as a plain #include.
    let built = std::fs::read_dir(&cache)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .any(|f| {
            f.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("CDam-")
        });
    assert!(built, "no CDam module was built in {}", cache.display());
    let o = run(Command::new(&exe).env("LD_LIBRARY_PATH", deps()));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.starts_with("CDam "), "{stdout}");
}
