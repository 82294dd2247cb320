//! Preprocessing: region mask -> focal window -> the two 4-channel views that the vision
//! tower sees (MODEL.md section 1). Pure Rust, bit-exact with the reference (Pillow).

pub mod focal;
pub mod resize;
mod twopass;
pub mod views;

pub use focal::{focal_window, summarize, MaskSummary, Window, MIN_BOX_SIDE};
pub use resize::{resize_bicubic, resize_threads, Filter, Levels, MAX_OUTPUT_BYTES};
pub use views::{
    make_views, make_views_of, make_views_threads, Views, MAX_VIEW_SIZE, VIEW_CHANNELS,
};

use crate::error::Result;
use crate::image::ImageView;
use crate::region::{rasterize_any, Region};

/// What a describe call does before the vision stage, for a region that needs no
/// segmenter: the region's mask on `image`, its box and focal window, and the two
/// `size` px views, on up to `threads` threads. `None` for a region that covers no
/// pixel. (The timing example and the tests use it.)
pub fn region_views(
    image: &ImageView,
    region: &Region,
    size: u32,
    mean: [f32; 3],
    std: [f32; 3],
    threads: usize,
) -> Result<Option<Views>> {
    let mask = rasterize_any(region, image)?;
    let Some(summary) = summarize(&mask)? else {
        return Ok(None);
    };
    make_views_of(image, &mask, &summary, size, mean, std, threads).map(Some)
}
