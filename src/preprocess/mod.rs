//! Preprocessing: region mask -> focal window -> the two 4-channel views that the vision
//! tower sees (MODEL.md section 1). Pure Rust, bit-exact with the reference (Pillow).

pub mod focal;
pub mod resize;
pub mod views;

pub use focal::{focal_window, Window, MIN_BOX_SIDE};
pub use resize::{resize_bicubic, resize_threads, Filter, Levels, MAX_OUTPUT_BYTES};
pub use views::{make_views, make_views_threads, Views, MAX_VIEW_SIZE, VIEW_CHANNELS};
