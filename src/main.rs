fn main() {
    eprintln!("ringws: the server is not built yet");
    std::process::exit(2);
}
