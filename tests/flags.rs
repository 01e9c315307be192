//! The README's flags table and `--help` say the same things: the same
//! flags in the same order, the same value names, defaults and
//! descriptions.

mod support;

use std::process::Command;
use std::time::Duration;

use support::output_within;

/// One flag: its name, value name, default and description.
#[derive(Debug, PartialEq, Eq)]
struct Flag {
    name: String,
    value: Option<String>,
    default: Option<String>,
    description: String,
}

/// The flags `--help` lists (help and version left out).
fn from_help() -> Vec<Flag> {
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_sse-mio")).arg("--help"),
        Duration::from_secs(10),
    );
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let mut flags = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix("--") else {
            continue;
        };
        let (spec, description) = rest.split_once("  ").expect("a description");
        let (name, value) = match spec.split_once(" <") {
            Some((name, value)) => (name, Some(value.trim_end_matches('>').to_owned())),
            None => (spec, None),
        };
        if name == "help" || name == "version" {
            continue;
        }
        let description = description.trim();
        let (description, default) = match description.rsplit_once(" [default: ") {
            Some((d, default)) => (d, Some(default.trim_end_matches(']').to_owned())),
            None => (description, None),
        };
        flags.push(Flag {
            name: format!("--{name}"),
            value,
            default,
            description: description.to_owned(),
        });
    }
    flags
}

/// The flags the README's table lists (help and version left out).
fn from_readme() -> Vec<Flag> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("## Flags")
        .nth(1)
        .expect("a Flags section")
        .split("\n\n")
        .find(|block| block.trim_start().starts_with("| flag |"))
        .expect("the flags table");
    let mut flags = Vec::new();
    for row in table.lines().skip(2) {
        let cells: Vec<&str> = row
            .trim()
            .trim_matches('|')
            .split(" | ")
            .map(str::trim)
            .collect();
        assert_eq!(cells.len(), 3, "three cells in {row:?}");
        let spec = cells[0].trim_matches('`');
        if spec.starts_with("--help") {
            continue;
        }
        let (name, value) = match spec.split_once(' ') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (spec, None),
        };
        let default = match cells[1] {
            "–" => None,
            quoted => Some(quoted.trim_matches('`').to_owned()),
        };
        flags.push(Flag {
            name: name.to_owned(),
            value,
            default,
            description: cells[2].to_owned(),
        });
    }
    flags
}

#[test]
fn the_readme_table_and_help_agree() {
    let (help, readme) = (from_help(), from_readme());
    assert!(help.len() >= 20, "{help:#?}");
    let names = |flags: &[Flag]| flags.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&readme),
        names(&help),
        "the same flags, in the same order"
    );
    for (r, h) in readme.iter().zip(&help) {
        assert_eq!(r, h, "{}", h.name);
    }
}

#[test]
fn every_duration_flag_says_its_units() {
    for flag in from_help()
        .iter()
        .filter(|f| f.value.as_deref() == Some("D"))
    {
        assert!(
            flag.description.contains("ms, s, m, h"),
            "{} does not say which units it takes: {}",
            flag.name,
            flag.description
        );
    }
}
