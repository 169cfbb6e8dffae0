// Export flattens millions of small strings across rayon threads; mimalloc's per-thread heaps
// cut the allocator's share of that work (about a sixth of export's CPU under glibc malloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vmr::cli::main()
}
