//! The `qmoe` command (not yet built).
fn main() {
    eprintln!("qmoe: no commands yet");
    std::process::exit(2);
}
