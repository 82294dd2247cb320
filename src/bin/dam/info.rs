//! `dam info`: the compute devices, and a model's hyper-parameters.

use dam::Result;

use crate::common::{load_model, ModelArgs};

/// The CPU's features and every compute device.
fn print_devices() {
    let info = dam::backend_info();
    println!("cpu:    {}", info.simd.join(" "));
    for d in info.backends {
        println!(
            "device: {} ({}, {}; {:.1} of {:.1} GiB free)",
            d.name,
            d.kind,
            d.description,
            d.memory_free as f64 / (1u64 << 30) as f64,
            d.memory_total as f64 / (1u64 << 30) as f64
        );
    }
}

pub fn run(a: ModelArgs) -> Result<()> {
    // Without a model: the compute devices only.
    if a.llm.is_none() && a.vision.is_none() && a.model.is_none() {
        print_devices();
        return Ok(());
    }
    let m = load_model(&a, false)?;
    let hp = &m.vision.hp;
    println!(
        "llm:    {} ({} layers, width {}, vocab {})",
        m.llm_path.display(),
        m.llm.n_layer(),
        m.llm.n_embd(),
        m.llm.n_vocab()
    );
    println!(
        "vision: {} ({}, {} px, patch {}, width {}, {} of {} layers, {} tokens/image)",
        m.vision_path.display(),
        m.vision.weight_type.name(),
        hp.image_size,
        hp.patch_size,
        hp.hidden,
        hp.used_layers(),
        hp.layers,
        hp.tokens_per_image()
    );
    print_devices();
    println!(
        "vision on: {}",
        m.vision.device.map_or_else(
            || format!("CPU ({} matrices repacked)", m.vision.n_repacked()),
            |d| d.name()
        )
    );
    println!("load:   {:.1} ms", m.load_ms);
    Ok(())
}
