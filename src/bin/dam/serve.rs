//! `dam serve`: the OpenAI-compatible captioning server (`dam::server`).

use clap::Args;
use dam::Result;

use crate::common::{load_model, ModelArgs};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    serve: dam::server::ServeArgs,
}

pub fn run(a: ServeArgs) -> Result<()> {
    load_model(&a.model, false).and_then(|m| dam::server::run(m, a.serve))
}
