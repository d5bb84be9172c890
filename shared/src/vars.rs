//! Environment variables as the configuration reads them: a variable's value (blank counts
//! as unset) and the error that names the variable. Shared by `config` and by `secrets`,
//! which reads the secret ones.

use std::collections::HashMap;
use std::fmt;

/// One problem with one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

/// `name`'s value, trimmed, or `None` when unset or blank: everywhere in the configuration a
/// variable set to an empty value counts as unset.
pub fn value<'a>(vars: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}
