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
        // A built-in kind's args are checked at enqueue, not first when a worker runs them.
        (
            vec!["enqueue", "drover.sleep", "--args", r#"{"ms":5,"k":1}"#],
            "drover.sleep takes {\"ms\": N}: unknown field `k`",
        ),
        (
            vec!["enqueue", "drover.sleep", "--args", r#"{"ms":"5"}"#],
            "drover.sleep takes {\"ms\": N}",
        ),
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
