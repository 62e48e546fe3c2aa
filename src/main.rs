//! The `rocketops` command line: parses arguments and hands off to the library.

fn main() {}
