//! `vmr status`: counts per state, billed calls, uncertain VINs, rejected rows, next poll.

use anyhow::Result;

use crate::app::exit;
use crate::checkpoint;
use crate::config::Settings;
use crate::status;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(args: Args, settings: &Settings) -> Result<u8> {
    let conn = checkpoint::open_reader_at(&settings.place)?;
    let running = checkpoint::writer_running_at(&settings.place);
    let mut st = status::read(
        &conn,
        &checkpoint::describe(&settings.place),
        running,
        settings.refresh_older_than,
    )?;
    st.money = settings.price.as_ref().map(|p| {
        crate::price::Spent::of(p, st.billed_total as u64, st.unknown_outcome_total as u64)
    });
    if args.json {
        crate::app::print(&format!("{}\n", serde_json::to_string_pretty(&st)?))?;
    } else {
        crate::app::print(&st.render())?;
    }
    Ok(exit::OK)
}
