//! The `ringws` binary: see `ringws serve --help`.

fn main() {
    std::process::exit(ringws::cli::main());
}
