//! Generates the C header from `src/capi/` with cbindgen.
//!
//! The header is always written to `$OUT_DIR/dam.h`. The committed copy,
//! `include/dam.h`, is rewritten only when `DAM_BLESS=1` is set; otherwise a
//! stale committed copy gives a build warning here and a failure in
//! `tests/capi.rs` (`header_is_current`), which compares the two files. A
//! cbindgen failure never breaks the build of the engine: it is reported as
//! a warning and the header in `$OUT_DIR` becomes an `#error` line, which the
//! same test reports. See `include/ABI.md`.

use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = root.join("src/capi/mod.rs");
    let config_path = root.join("include/cbindgen.toml");
    let committed = root.join("include/dam.h");
    let generated = out_dir.join("dam.h");
    // A folder: cargo watches every file under it.
    let src_dir = root.join("src/capi");
    for p in [&src_dir, &config_path, &committed] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DAM_BLESS");
    // With `dynamic-backends`, llama-cpp-sys-2 installs the ggml backend
    // modules in its own folder: the default place to load them from.
    if let Ok(dir) = std::env::var("DEP_LLAMA_BACKENDS_DIR") {
        println!("cargo:rustc-env=DAM_BUILD_BACKENDS_DIR={dir}");
    }

    let text = match generate(&src, &config_path) {
        Ok(t) => t,
        Err(e) => {
            println!("cargo:warning=dam: cannot generate the C header: {e}");
            format!(
                "#error \"dam.h could not be generated: {}\"\n",
                e.replace('"', "'")
            )
        }
    };
    write_if_changed(&generated, &text);
    let bless = std::env::var("DAM_BLESS").is_ok_and(|v| v == "1");
    let current = std::fs::read_to_string(&committed).ok();
    if bless {
        write_if_changed(&committed, &text);
    } else if current.as_deref() != Some(text.as_str()) {
        println!(
            "cargo:warning=dam: include/dam.h differs from the header generated from src/capi/; \
             review the change, then run `DAM_BLESS=1 cargo build --release` to update it"
        );
    }
}

fn generate(src: &Path, config_path: &Path) -> Result<String, String> {
    let config = cbindgen::Config::from_file(config_path)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(src)
        .generate()
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    bindings.write(&mut buf);
    String::from_utf8(buf).map_err(|e| e.to_string())
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return;
    }
    if let Err(e) = std::fs::write(path, text) {
        println!("cargo:warning=dam: cannot write {}: {e}", path.display());
    }
}
