//! One compile-fail case per misuse of `#[cacheow]`, each with the error it
//! must produce (`.stderr`), and `pass.rs`, every supported form.
//! Regenerate the expected errors with `TRYBUILD=overwrite`, then read them.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    let mut files: Vec<_> = std::fs::read_dir("tests/ui")
        .expect("tests/ui exists")
        .map(|entry| entry.expect("tests/ui is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    files.sort();
    for file in files {
        if file.ends_with("pass.rs") {
            cases.pass(file);
        } else {
            cases.compile_fail(file);
        }
    }
}
