//! The only place that builds paths inside a data dir.

use std::path::{Path, PathBuf};

use crate::ids::{FunctionId, OutcomeId};

pub(crate) const INDEX_FILE: &str = "cacheow.redb";
const FUNCTIONS_DIR: &str = "functions";
const OUTCOMES_DIR: &str = "outcomes";
const FUNCTION_FILE: &str = "function.json";

pub(crate) fn index_file(data_dir: &Path) -> PathBuf {
    data_dir.join(INDEX_FILE)
}

pub(crate) fn functions_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(FUNCTIONS_DIR)
}

pub(crate) fn function_dir(data_dir: &Path, id: &FunctionId) -> PathBuf {
    functions_dir(data_dir).join(id.to_string())
}

pub(crate) fn function_file(data_dir: &Path, id: &FunctionId) -> PathBuf {
    function_dir(data_dir, id).join(FUNCTION_FILE)
}

pub(crate) fn function_file_in(dir: &Path) -> PathBuf {
    dir.join(FUNCTION_FILE)
}

pub(crate) fn outcomes_dir(function_dir: &Path) -> PathBuf {
    function_dir.join(OUTCOMES_DIR)
}

pub(crate) fn outcome_file(data_dir: &Path, function: &FunctionId, outcome: &OutcomeId) -> PathBuf {
    outcomes_dir(&function_dir(data_dir, function)).join(format!("{outcome}.json"))
}
