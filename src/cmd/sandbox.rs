//! `vmr sandbox`: serve the simulated vendor API.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("the sandbox is not built yet")
}
