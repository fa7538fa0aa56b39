//! Flags out of range are refused by the command line, naming the range the engine accepts
//! (not the range of the integer type that carries them), before anything is opened.

mod common;

use common::Env;

#[test]
fn flags_out_of_range_name_the_range_the_engine_accepts() {
    let env = Env::new("");
    for (args, said) in [
        (
            vec!["enqueue", "drover.noop", "--priority", "-99999999999"],
            "-32768..=32767",
        ),
        (
            vec!["enqueue", "drover.noop", "--priority", "40000"],
            "-32768..=32767",
        ),
        (
            vec!["enqueue", "drover.noop", "--max-attempts", "4294967296"],
            "1..=10000",
        ),
        (
            vec!["enqueue", "drover.noop", "--max-attempts", "0"],
            "1..=10000",
        ),
        (
            vec!["enqueue", "drover.noop", "--delay", "99999999999999999s"],
            "out of range",
        ),
        (
            vec!["enqueue", "drover.noop", "--queue", "Ünïcode"],
            "only ASCII letters",
        ),
        (vec!["worker", "--concurrency", "0"], "1..=10000"),
    ] {
        let err = env.fails(&args);
        assert!(err.contains(said), "{args:?}: {err}");
        assert!(
            !err.contains("i32") && !err.contains("nan"),
            "{args:?}: {err}"
        );
    }
    // Refused before anything was opened: not even the database file was made.
    assert!(!env.path("drover.db").exists());
}
