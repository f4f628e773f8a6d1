//! The `qmoe` command (subcommands arrive with their issues).

// The bisect engine and its report (owned by the lead; the `bisect` subcommand wires it up).
#[allow(dead_code)]
mod bisect;

fn main() {
    eprintln!("qmoe: no commands yet");
    std::process::exit(2);
}
