//! Times dam's preprocessing of one image + mask file pair the way a
//! `describe` call does it (caller's view -> mask -> box, focal window ->
//! the two views), `DAM_PREP_ITERS` times (default 50) on `DAM_PREP_THREADS`
//! threads (default 2). For CPU time, run it under `perf stat -e task-clock`
//! or `/usr/bin/time -v` (user + sys / iterations):
//!
//! ```sh
//! cargo build --release --example preprocess_time
//! target/release/examples/preprocess_time \
//!     tests/fixtures/geom/cases/c1_image.png tests/fixtures/geom/cases/c1_mask.png
//! ```
//! Decoding the files is outside the loop.

use std::time::Instant;

use dam::image::{load_mask, load_rgb};
use dam::preprocess::region_views;
use dam::Region;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() -> dam::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, mask] = args.as_slice() else {
        eprintln!("usage: preprocess_time IMAGE MASK");
        std::process::exit(2);
    };
    let (iters, threads) = (env("DAM_PREP_ITERS", 50), env("DAM_PREP_THREADS", 2));
    let size = env("DAM_PREP_SIZE", 384) as u32;
    let rgb = load_rgb(image)?;
    let mask = load_mask(mask)?;
    let (view, region) = (rgb.view()?, Region::Mask(mask.view()?));
    let (mean, std) = ([0.5; 3], [0.5; 3]);
    let mut best = f64::INFINITY;
    let t = Instant::now();
    for _ in 0..iters {
        let t1 = Instant::now();
        let v = region_views(&view, &region, size, mean, std, threads)?;
        std::hint::black_box(v);
        best = best.min(t1.elapsed().as_secs_f64() * 1e3);
    }
    let per = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
    println!(
        "preprocess {}x{} -> 2 x {size}: {per:.2} ms wall per call (best {best:.2}; \
         {iters} calls, {threads} threads)",
        rgb.width, rgb.height
    );
    Ok(())
}
