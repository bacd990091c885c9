//! One file per page.

mod function;
mod functions;

pub(crate) use function::FunctionPage;
pub(crate) use functions::FunctionsPage;
