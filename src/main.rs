//! The `ferrite` binary: everything lives in the library; see `ferrite --help`.

fn main() {
    std::process::exit(ferrite::cli::main());
}
