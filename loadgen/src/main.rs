fn main() {
    eprintln!("ringws-loadgen: not built yet");
    std::process::exit(2);
}
