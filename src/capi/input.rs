//! The inputs of a describe call: image views, regions (one or an array)
//! and describe options, read from caller memory and checked.

use std::ffi::CStr;
use std::mem::size_of;
use std::ptr;

use super::types::*;
use super::{
    check_struct_size, enum_arg, guard_default, invalid, read_optional, read_versioned, Fail,
};
use crate::image::{ImageView, MAX_IMAGE_SIDE};
use crate::model::DescribeOptions;
use crate::region::Region;
use crate::segmenter::regions::click_labels;

/// Limits on caller counts, far above any real use, so that no count can make
/// a slice larger than the address space.
const MAX_POINTS: usize = 1 << 20;

// ------------------------------------------------------------------ images

/// Validates an image view and borrows its bytes for the call.
///
/// # Safety
/// `v.data`, when not NULL, must point to `stride_bytes * (height - 1) +
/// width * bytes_per_pixel` readable bytes that stay unchanged during the
/// call (the header's rule for image views).
pub(crate) unsafe fn image_view<'a>(v: &DamImageView, what: &str) -> Result<ImageView<'a>, Fail> {
    let format = crate::PixelFormat::from(enum_arg::<DamPixelFormat>(
        v.format,
        &format!("{what}.format"),
    )?);
    if v.data.is_null() {
        return Err(invalid(format!("{what}: data is NULL")));
    }
    for (side, name) in [(v.width, "width"), (v.height, "height")] {
        if side == 0 || side > MAX_IMAGE_SIDE {
            return Err(invalid(format!(
                "{what}: {name} {side} is out of range (1..={MAX_IMAGE_SIDE})"
            )));
        }
    }
    let bpp = format.bytes_per_pixel();
    let row = v.width as usize * bpp; // <= 16384 * 4: no overflow
    if v.stride_bytes < row {
        return Err(invalid(format!(
            "{what}: stride_bytes {} is smaller than one row ({} px x {bpp} bytes = {row})",
            v.stride_bytes, v.width
        )));
    }
    let need = v
        .stride_bytes
        .checked_mul(v.height as usize - 1)
        .and_then(|n| n.checked_add(row))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| {
            invalid(format!(
                "{what}: stride_bytes {} is too large",
                v.stride_bytes
            ))
        })?;
    // SAFETY: `data` is non-NULL and, by the caller's contract, `need` bytes
    // are readable and unchanged during the call (the borrow ends with it);
    // `need <= isize::MAX` was checked.
    let bytes = unsafe { std::slice::from_raw_parts(v.data, need) };
    ImageView::new(bytes, v.width, v.height, v.stride_bytes, format)
        .map_err(|e| invalid(format!("{what}: {e}")))
}

/// Points of a region.
///
/// # Safety
/// `p`, when not NULL, must point to `n` readable `DamPoint`s.
unsafe fn points_of(p: *const DamPoint, n: usize, what: &str) -> Result<Vec<(f32, f32)>, Fail> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(invalid(format!(
            "{what}: points is NULL but n_points is {n}"
        )));
    }
    if n > MAX_POINTS {
        return Err(invalid(format!(
            "{what}: n_points {n} is above {MAX_POINTS}"
        )));
    }
    // SAFETY: non-NULL, `n` points readable by contract, n * 8 bytes far
    // below isize::MAX; unaligned reads avoid an alignment assumption.
    Ok((0..n)
        .map(|i| unsafe { ptr::read_unaligned(p.add(i)) })
        .map(|q| (q.x, q.y))
        .collect())
}

/// Labels of `n` points (true = positive); NULL = all positive.
///
/// # Safety
/// `p`, when not NULL, must point to `n` readable `int32_t`s.
unsafe fn labels_of(p: *const i32, n: usize, what: &str) -> Result<Vec<bool>, Fail> {
    if p.is_null() || n == 0 {
        return Ok(vec![true; n]);
    }
    let raw: Vec<i64> = (0..n)
        // SAFETY: non-NULL, `n` labels readable by contract (`n` is at most
        // MAX_POINTS, checked with the points); unaligned reads.
        .map(|i| i64::from(unsafe { ptr::read_unaligned(p.add(i)) }))
        .collect();
    Ok(click_labels(
        Some(&raw),
        n,
        &format!("{what}: point_labels"),
    )?)
}

/// Reads the image view `image` points to and borrows its bytes.
///
/// # Safety
/// `image`, when not NULL, must point to a readable `dam_image_view` whose
/// data follows the header's rules.
pub(crate) unsafe fn image_at<'a>(
    image: *const DamImageView,
    what: &str,
) -> Result<ImageView<'a>, Fail> {
    if image.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and a readable image view by contract (frozen
    // struct, any bit pattern valid); unaligned read.
    let view = unsafe { ptr::read_unaligned(image) };
    // SAFETY: the view's data follows the header's rules.
    unsafe { image_view(&view, what) }
}

// ------------------------------------------------------------------ regions

/// Converts a caller's region (already copied) into an engine region.
///
/// # Safety
/// The pointers inside `r` must satisfy the header's rules (mask view,
/// `n_points` points).
unsafe fn region_of<'a>(r: &DamRegion, what: &str) -> Result<Region<'a>, Fail> {
    let normalized = r.normalized != 0;
    Ok(
        match enum_arg::<DamRegionKind>(r.kind, &format!("{what}.kind"))? {
            DamRegionKind::Mask => {
                // SAFETY: forwarded contract for the mask view.
                Region::Mask(unsafe { image_view(&r.mask, &format!("{what}.mask")) }?)
            }
            DamRegionKind::Alpha => Region::AlphaOfImage,
            DamRegionKind::Box => Region::Box {
                x0: r.x0,
                y0: r.y0,
                x1: r.x1,
                y1: r.y1,
                normalized,
            },
            DamRegionKind::Scribble => Region::Scribble {
                // SAFETY: forwarded contract for the points.
                points: unsafe { points_of(r.points, r.n_points, what) }?,
                width: r.brush_width,
                normalized,
            },
            DamRegionKind::Points | DamRegionKind::SegmentedBox if normalized => {
                return Err(invalid(format!(
                    "{what}: points and segmented boxes are in pixels (normalized must be 0)"
                )))
            }
            DamRegionKind::Points => {
                // SAFETY: forwarded contract for the points.
                let xy = unsafe { points_of(r.points, r.n_points, what) }?;
                // SAFETY: forwarded contract for the labels.
                let labels = unsafe { labels_of(r.point_labels, xy.len(), what) }?;
                Region::Points(
                    xy.into_iter()
                        .zip(labels)
                        .map(|((x, y), l)| (x, y, l))
                        .collect(),
                )
            }
            DamRegionKind::SegmentedBox => Region::SegmentedBox {
                x0: r.x0,
                y0: r.y0,
                x1: r.x1,
                y1: r.y1,
            },
        },
    )
}

/// An all-zero region of the current size: the defaults of fields past a
/// caller's `struct_size`.
fn zero_region() -> DamRegion {
    DamRegion {
        struct_size: size_of::<DamRegion>() as u32,
        ..DamRegion::zeroed()
    }
}

/// Reads the region `region` points to.
///
/// # Safety
/// `region`, when not NULL, must point to a `dam_region` of `struct_size`
/// bytes whose pointers follow the header's rules.
pub(crate) unsafe fn region_at<'a>(
    region: *const DamRegion,
    what: &str,
) -> Result<Region<'a>, Fail> {
    // SAFETY: NULL or a region of struct_size bytes (contract).
    let r = unsafe { read_versioned(region, zero_region(), REGION_MIN, what) }?;
    // SAFETY: the region's pointers follow the header's rules.
    unsafe { region_of(&r, what) }
}

/// Reads an array of `n` regions whose element size is
/// `regions[0].struct_size` (so that it survives appended fields).
///
/// # Safety
/// `regions`, when not NULL, must point to `n` regions of
/// `regions[0].struct_size` bytes each, following the header's rules.
pub(crate) unsafe fn regions_at<'a>(
    regions: *const DamRegion,
    n: usize,
) -> Result<Vec<Region<'a>>, Fail> {
    if regions.is_null() {
        return Err(invalid("regions is NULL"));
    }
    // SAFETY: `regions` non-NULL; its first element starts with a u32.
    let stride = unsafe { ptr::read_unaligned(regions.cast::<u32>()) } as usize;
    check_struct_size(stride, REGION_MIN, size_of::<DamRegion>(), "regions[0]")?;
    (0..n)
        .map(|k| {
            let what = format!("regions[{k}]");
            // SAFETY: `k < n` and the array holds `n` elements of `stride`
            // bytes (contract), so the offset stays inside it.
            let p = unsafe { regions.cast::<u8>().add(k * stride) }.cast::<DamRegion>();
            // SAFETY: `p` points to a region of `stride` bytes (contract).
            let size = unsafe { ptr::read_unaligned(p.cast::<u32>()) } as usize;
            if size != stride {
                return Err(invalid(format!(
                    "{what}: struct_size {size} differs from regions[0]'s {stride}"
                )));
            }
            // SAFETY: as above.
            unsafe { region_at(p, &what) }
        })
        .collect()
}

// ------------------------------------------------------------------ options

/// The C form of the engine's default describe options.
fn options_default() -> DamDescribeOptions {
    let d = DescribeOptions::default();
    let (length_kind, length_value) = DamLength::of(d.length);
    DamDescribeOptions {
        struct_size: size_of::<DamDescribeOptions>() as u32,
        max_new_tokens: u32::try_from(d.max_new_tokens).unwrap_or(u32::MAX),
        // The engine's default query is the model's: NULL here.
        query: ptr::null(),
        length_kind: length_kind as i32,
        length_value,
        temperature: d.temperature,
        top_p: d.top_p,
        top_k: d.top_k,
        seed: d.seed,
    }
}

/// Reads the caller's options (`options` may be NULL: the defaults) into
/// engine options.
///
/// # Safety
/// `options`, when not NULL, must point to a `dam_describe_options` of
/// `struct_size` bytes whose `query` is NULL or NUL-terminated.
pub(crate) unsafe fn options_at(
    options: *const DamDescribeOptions,
) -> Result<DescribeOptions, Fail> {
    // SAFETY: NULL or options of struct_size bytes (contract).
    let o = unsafe { read_optional(options, options_default(), OPTIONS_MIN, "options") }?;
    let query = if o.query.is_null() {
        None
    } else {
        // SAFETY: non-NULL and NUL-terminated (contract).
        let q = unsafe { CStr::from_ptr(o.query) };
        Some(
            q.to_str()
                .map_err(|_| invalid("options.query is not valid UTF-8"))?
                .to_string(),
        )
    };
    let kind = enum_arg::<DamLength>(o.length_kind, "options.length_kind")?;
    if kind != DamLength::None && o.length_value == 0 {
        return Err(invalid("options.length_value must be at least 1"));
    }
    Ok(DescribeOptions {
        query,
        length: kind.with_value(o.length_value),
        max_new_tokens: o.max_new_tokens as usize,
        temperature: o.temperature,
        top_p: o.top_p,
        top_k: o.top_k,
        seed: o.seed,
        // Not in the C ABI (a benchmarking option of the server and CLI).
        ignore_eos: false,
    })
}

/// Default describe options: the reference's sampling (temperature 0.2,
/// top-p 0.5, top-k 50, seed 0), 512 tokens, the model's query. Set
/// `temperature = 0` for greedy, deterministic captions. Any thread.
#[no_mangle]
pub extern "C" fn dam_describe_options_default() -> DamDescribeOptions {
    guard_default(options_default)
}
