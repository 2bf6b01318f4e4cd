//! `herald serve --config herald.toml`: a production node sets a dozen
//! settings, and a file under version control is where they belong. The
//! file's keys are the long flags of `herald serve` (`grpc-addr` or
//! `grpc_addr`), so there is one list of settings, documented once by
//! `herald serve --help`; a flag on the command line or its environment
//! variable overrides the file, and the file overrides the defaults.
//!
//! How: the command line is parsed once to learn where each setting came
//! from; every file key whose setting did not come from the command line or
//! the environment is appended as a flag, and the result is parsed again, so
//! a value from the file meets exactly the validation a flag meets.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::config::Cli;

/// Why a configuration file cannot be used. Each names the file and, where
/// there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error(
        "the configuration file {path} sets `{key}`, which is not a setting of `herald serve` \
         (its keys are the long flags that `herald serve --help` lists, such as grpc-addr)"
    )]
    UnknownKey { path: PathBuf, key: String },
    #[error("the configuration file {path} sets `{key}` to {found}; {expected}")]
    WrongType {
        path: PathBuf,
        key: String,
        found: &'static str,
        expected: &'static str,
    },
}

/// Parses the command line, reading `herald serve --config FILE` (or
/// `HERALD_CONFIG`) when given. Errors of the command line itself (and of
/// the values a file gives) are clap's, printed and exited on as usual.
pub fn parse() -> Result<Cli, ConfigFileError> {
    parse_from(std::env::args_os().collect())
}

/// [`parse`] for a given command line (tests; `args[0]` is the program).
pub fn parse_from(args: Vec<OsString>) -> Result<Cli, ConfigFileError> {
    let command = Cli::command();
    let matches = command.clone().get_matches_from(args.clone());
    let Some(("serve", serve)) = matches.subcommand() else {
        return Ok(from_matches(&matches));
    };
    let Some(path) = serve.get_one::<PathBuf>("config").cloned() else {
        return Ok(from_matches(&matches));
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
        path: path.clone(),
        source,
    })?;
    let mut args = args;
    args.extend(flags_from_file(&command, &matches, serve, &path, &text)?);
    Ok(from_matches(&command.get_matches_from(args)))
}

fn from_matches(matches: &ArgMatches) -> Cli {
    Cli::from_arg_matches(matches).unwrap_or_else(|err| err.exit())
}

/// The flags a file adds to a `herald serve` command line whose settings so
/// far are `given`: one `--key value` per value, for each key not already
/// set on the command line or in the environment.
fn flags_from_file(
    root: &clap::Command,
    root_given: &ArgMatches,
    given: &ArgMatches,
    path: &Path,
    text: &str,
) -> Result<Vec<OsString>, ConfigFileError> {
    let table: toml::Table =
        text.parse()
            .map_err(|err: toml::de::Error| ConfigFileError::Syntax {
                path: path.to_owned(),
                message: err.to_string().trim_end().to_owned(),
            })?;
    let serve = root.find_subcommand("serve");
    // The subcommand's own flags, and the global ones (--log-format).
    let arguments = || {
        serve
            .into_iter()
            .flat_map(clap::Command::get_arguments)
            .chain(root.get_arguments().filter(|arg| arg.is_global_set()))
    };
    let mut flags = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let unknown = || ConfigFileError::UnknownKey {
            path: path.to_owned(),
            key: key.clone(),
        };
        let arg = arguments()
            .find(|arg| arg.get_long() == Some(long.as_str()))
            .ok_or_else(unknown)?;
        if long == "config" {
            return Err(unknown());
        }
        let id = arg.get_id().as_str();
        let overridden = [given, root_given].iter().any(|matches| {
            matches.ids().any(|known| known == id)
                && matches!(
                    matches.value_source(id),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
        });
        if overridden {
            continue;
        }
        let wrong = |found: &'static str, expected: &'static str| ConfigFileError::WrongType {
            path: path.to_owned(),
            key: key.clone(),
            found,
            expected,
        };
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            match value {
                toml::Value::Boolean(true) => flags.push(OsString::from(format!("--{long}"))),
                toml::Value::Boolean(false) => {}
                other => return Err(wrong(other.type_str(), "it is a switch: true or false")),
            }
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for value in values {
            let text = match value {
                toml::Value::String(text) => text.clone(),
                toml::Value::Integer(number) => number.to_string(),
                toml::Value::Float(number) => number.to_string(),
                toml::Value::Boolean(flag) => flag.to_string(),
                other => {
                    return Err(wrong(
                        other.type_str(),
                        "give a string, a number, or an array of them",
                    ));
                }
            };
            // `--key=value`, so that a value starting with `-` stays a value.
            flags.push(OsString::from(format!("--{long}={text}")));
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Command, LogFormat, ServeConfig};

    fn serve(args: &[&str], file: &str) -> Result<ServeConfig, ConfigFileError> {
        let cli = cli(args, file)?;
        match cli.command {
            Command::Serve(config) => Ok(*config),
            other => panic!("not serve: {other:?}"),
        }
    }

    fn cli(args: &[&str], file: &str) -> Result<Cli, ConfigFileError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, file).expect("write the file");
        let mut argv: Vec<OsString> = ["herald", "serve", "--config"]
            .iter()
            .map(OsString::from)
            .collect();
        argv.push(path.into_os_string());
        argv.extend(args.iter().map(OsString::from));
        parse_from(argv)
    }

    #[test]
    fn the_global_log_format_may_be_set_by_the_file() {
        let json = cli(&[], "log-format = \"json\"\n").expect("parsed");
        assert_eq!(json.log_format, LogFormat::Json);
        let human = cli(&["--log-format", "human"], "log-format = \"json\"\n").expect("parsed");
        assert_eq!(human.log_format, LogFormat::Human, "the flag wins");
    }

    #[test]
    fn the_file_sets_what_the_command_line_does_not() {
        let config = serve(
            &["--grpc-addr", "127.0.0.1:7001"],
            r#"
                grpc-addr = "127.0.0.1:9999"
                metrics_addr = "127.0.0.1:7002"
                allow-http = true
                retry-schedule = ["1s", "2s"]
                max-connections = 64
                request-timeout = "3s"
            "#,
        )
        .expect("parsed");
        assert_eq!(
            config.grpc_addr.to_string(),
            "127.0.0.1:7001",
            "the flag wins"
        );
        assert_eq!(config.metrics_addr.to_string(), "127.0.0.1:7002");
        assert!(config.allow_http);
        assert_eq!(config.max_connections, 64);
        assert_eq!(config.request_timeout, std::time::Duration::from_secs(3));
        assert_eq!(
            config.retry_schedule.len(),
            2,
            "{:?}",
            config.retry_schedule
        );
    }

    #[test]
    fn an_unknown_key_or_a_wrong_type_is_named() {
        let err = serve(&[], "grpc-adr = \"x\"\n").expect_err("unknown");
        assert!(err.to_string().contains("`grpc-adr`"), "{err}");
        let err = serve(&[], "config = \"other.toml\"\n").expect_err("nested");
        assert!(err.to_string().contains("`config`"), "{err}");
        let err = serve(&[], "allow-http = \"yes\"\n").expect_err("switch");
        assert!(err.to_string().contains("true or false"), "{err}");
        let err = serve(&[], "grpc-addr = { a = 1 }\n").expect_err("table");
        assert!(err.to_string().contains("`grpc-addr`"), "{err}");
        let err = serve(&[], "grpc-addr = \n").expect_err("syntax");
        assert!(err.to_string().contains("not valid TOML"), "{err}");
    }

    #[test]
    fn the_example_configuration_in_deploy_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/herald.toml");
        let cli = parse_from(
            ["herald", "serve", "--config", path]
                .map(OsString::from)
                .to_vec(),
        )
        .expect("deploy/herald.toml holds only settings of herald serve");
        let Command::Serve(config) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(config.grpc_addr.to_string(), "0.0.0.0:50051");
        assert_eq!(config.retry_schedule.len(), 7);
        assert_eq!(config.ops_consumer.as_deref(), Some("herald-ops"));
    }
}
