//! Checks of caller input, run before anything is created.

use std::path::Path;

use keel_types::Error;
use oci_spec::runtime::{Process, Spec};

fn invalid(field: &'static str, value: impl Into<String>, reason: &str) -> Error {
    Error::InvalidArgument {
        field,
        value: value.into(),
        reason: reason.to_owned(),
    }
}

/// Checks that `spec` names a process with arguments and an existing absolute root folder.
pub(crate) fn check_spec(spec: &Spec) -> Result<(), Error> {
    let Some(process) = spec.process() else {
        return Err(invalid(
            "spec.process",
            "",
            "is missing; set the process to run",
        ));
    };
    let has_args = process.args().as_ref().is_some_and(|args| !args.is_empty());
    if !has_args {
        return Err(invalid(
            "spec.process.args",
            "[]",
            "must name the command to run",
        ));
    }
    let Some(root) = spec.root() else {
        return Err(invalid("spec.root", "", "is missing; set the root folder"));
    };
    check_root_path(root.path())
}

/// Checks an exec process: it needs arguments and an absolute working folder.
pub(crate) fn check_process(process: &Process) -> Result<(), Error> {
    let has_args = process.args().as_ref().is_some_and(|args| !args.is_empty());
    if !has_args {
        return Err(invalid(
            "process.args",
            "[]",
            "must name the command to run",
        ));
    }
    check_process_fields(process, "process")
}

fn check_process_fields(process: &Process, field: &'static str) -> Result<(), Error> {
    if !process.cwd().is_absolute() {
        let cwd_field = if field == "process" {
            "process.cwd"
        } else {
            "spec.process.cwd"
        };
        return Err(invalid(
            cwd_field,
            process.cwd().display().to_string(),
            "must be an absolute path inside the container",
        ));
    }
    Ok(())
}

fn check_root_path(path: &Path) -> Result<(), Error> {
    let value = || path.display().to_string();
    if path.as_os_str().is_empty() {
        return Err(invalid("spec.root.path", value(), "must not be empty"));
    }
    if !path.is_absolute() {
        return Err(invalid(
            "spec.root.path",
            value(),
            "must be an absolute path to the root folder",
        ));
    }
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(invalid("spec.root.path", value(), "is not a folder")),
        Err(error) => Err(invalid(
            "spec.root.path",
            value(),
            &format!("cannot be read: {error}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecBuilder;

    #[test]
    fn spec_without_args_rejected() {
        let spec = SpecBuilder::new("/").build();
        let error = check_spec(&spec).expect_err("no args");
        assert!(error.to_string().contains("spec.process.args"), "{error}");
    }

    #[test]
    fn relative_root_rejected() {
        let spec = SpecBuilder::new("rootfs").args(["true"]).build();
        let error = check_spec(&spec).expect_err("relative root");
        assert!(error.to_string().contains("spec.root.path"), "{error}");
    }

    #[test]
    fn missing_root_rejected() {
        let spec = SpecBuilder::new("/nonexistent/keel/rootfs")
            .args(["true"])
            .build();
        assert!(check_spec(&spec).is_err());
    }

    #[test]
    fn spec_without_process_rejected() {
        let mut spec = SpecBuilder::new("/").build();
        spec.set_process(None);
        let error = check_spec(&spec).expect_err("no process");
        assert!(error.to_string().contains("spec.process"), "{error}");
    }
}
