//! `ui/pass.rs` built as an ordinary test: clippy lints the code the macro
//! generates, and a failing check shows up as a failing test.

#[path = "ui/pass.rs"]
mod pass;

#[test]
fn every_form_runs_its_body_while_cacheow_is_off() {
    pass::main();
}
