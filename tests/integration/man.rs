//! The man page and the shell completions (issue 17) are generated from
//! `repozo --help`, the one source of truth for the options: this test
//! renders `doc/repozo.1` (from `doc/repozo.1.in`), `doc/repozo.bash` and
//! `doc/_repozo` and fails when the committed files differ, so an option
//! added to `--help` and missing from them fails here. With
//! `REPOZO_BLESS=1` it writes them instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// One option of the help text: its spellings, the name of its value (if
/// it takes one), and its description's lines.
#[derive(Debug)]
struct Item {
    names: Vec<String>,
    arg: Option<String>,
    body: Vec<(usize, String)>,
}

/// A section of the help text: its title and its text lines and options.
#[derive(Debug)]
struct Section {
    title: String,
    text: Vec<String>,
    items: Vec<Item>,
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// Parse `--help`: sections start at a line in column 0 that ends with
/// `:`; options are lines at indent 4 starting with `-` (one per
/// spelling, `-B / --backup` or `-r dir` then `--repository=dir`); their
/// descriptions are the lines indented deeper, blank lines included.
fn parse_help(help: &str) -> Vec<Section> {
    let lines: Vec<&str> = help.lines().collect();
    let start = lines.iter().position(|l| *l == "Where:").unwrap() + 1;
    let mut sections = vec![Section {
        title: "Modes and common options".into(),
        text: Vec::new(),
        items: Vec::new(),
    }];
    let mut i = start;
    while i < lines.len() {
        let l = lines[i];
        if l.trim().is_empty() {
            i += 1;
            continue;
        }
        if indent(l) == 0 && l.ends_with(':') {
            sections.push(Section {
                title: l.trim_end_matches(':').to_string(),
                text: Vec::new(),
                items: Vec::new(),
            });
            i += 1;
            continue;
        }
        let sec = sections.last_mut().unwrap();
        if indent(l) == 4 && l.trim_start().starts_with('-') {
            let mut item = Item {
                names: Vec::new(),
                arg: None,
                body: Vec::new(),
            };
            while i < lines.len() && indent(lines[i]) == 4 && lines[i].trim_start().starts_with('-')
            {
                for spelling in lines[i].trim().split(" / ") {
                    let (name, arg) = match spelling.split_once(['=', ' ']) {
                        Some((n, a)) => (n, Some(a.to_string())),
                        None => (spelling, None),
                    };
                    item.names.push(name.to_string());
                    if arg.is_some() {
                        item.arg = arg;
                    }
                }
                i += 1;
            }
            // the description: deeper lines, across blank lines
            while i < lines.len() {
                let l = lines[i];
                if l.trim().is_empty() {
                    let next = lines[i..].iter().find(|l| !l.trim().is_empty());
                    if next.is_some_and(|n| indent(n) >= 8) {
                        item.body.push((0, String::new()));
                        i += 1;
                        continue;
                    }
                    break;
                }
                if indent(l) < 8 {
                    break;
                }
                item.body.push((indent(l), l.trim().to_string()));
                i += 1;
            }
            sec.items.push(item);
        } else {
            sec.text.push(l.trim().to_string());
            i += 1;
        }
    }
    sections
}

/// Text for roff: backslashes and hyphens escaped, no line starting
/// with a control character.
fn roff(text: &str) -> String {
    let s = text.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The OPTIONS part of the man page.
fn render_options(sections: &[Section]) -> String {
    let mut out = String::new();
    for s in sections {
        out.push_str(&format!(".SS {}\n", roff(&s.title)));
        for t in &s.text {
            out.push_str(&format!("{}\n", roff(t)));
        }
        for it in &s.items {
            out.push_str(".TP\n");
            let tags: Vec<String> = it
                .names
                .iter()
                .map(|n| match &it.arg {
                    Some(a) if n.starts_with("--") => {
                        format!("\\fB{}\\fR=\\fI{}\\fR", roff(n), roff(a))
                    }
                    Some(a) => format!("\\fB{}\\fR \\fI{}\\fR", roff(n), roff(a)),
                    None => format!("\\fB{}\\fR", roff(n)),
                })
                .collect();
            out.push_str(&tags.join(", "));
            out.push('\n');
            for (ind, l) in &it.body {
                if l.is_empty() {
                    out.push_str(".IP\n");
                } else if *ind > 8 {
                    out.push_str(&format!(".br\n\\ \\ \\ \\ {}\n.br\n", roff(l)));
                } else {
                    out.push_str(&format!("{}\n", roff(l)));
                }
            }
        }
    }
    out
}

/// What completes an option's value: a directory, a file, or nothing.
fn value_kind(arg: &str) -> &'static str {
    match arg.to_ascii_lowercase().as_str() {
        "dir" => "dir",
        "file" | "filename" => "file",
        _ => "",
    }
}

/// Every option once: (name, value name), in help order.
fn options(sections: &[Section]) -> Vec<(String, Option<String>, String)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for s in sections {
        for it in &s.items {
            let first: String = it
                .body
                .iter()
                .map(|(_, l)| l.as_str())
                .take_while(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let desc = first.split(". ").next().unwrap_or("").trim_end_matches('.');
            for n in &it.names {
                if seen.insert(n.clone()) {
                    out.push((n.clone(), it.arg.clone(), desc.to_string()));
                }
            }
        }
    }
    out
}

fn render_bash(sections: &[Section]) -> String {
    let opts = options(sections);
    let words: Vec<String> = opts
        .iter()
        .map(|(n, a, _)| match a {
            Some(_) if n.starts_with("--") => format!("{n}="),
            _ => n.clone(),
        })
        .collect();
    let with = |kind: &str| -> String {
        opts.iter()
            .filter(|(_, a, _)| a.as_deref().map(value_kind) == Some(kind))
            .map(|(n, _, _)| n.as_str())
            .collect::<Vec<_>>()
            .join("|")
    };
    let other = |kinds: &[&str]| -> String {
        opts.iter()
            .filter(|(_, a, _)| a.as_deref().is_some_and(|a| kinds.contains(&value_kind(a))))
            .map(|(n, _, _)| n.as_str())
            .collect::<Vec<_>>()
            .join("|")
    };
    format!(
        r#"# bash completion for repozo. Generated from `repozo --help` by
# tests/integration/man.rs: do not edit.
_repozo() {{
    local cur prev
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    # --option=value: bash splits the word at '='
    if [[ "$prev" == "=" && $COMP_CWORD -ge 2 ]]; then
        prev="${{COMP_WORDS[COMP_CWORD-2]}}"
    elif [[ "$cur" == "=" ]]; then
        prev="${{COMP_WORDS[COMP_CWORD-1]}}"
        cur=""
    fi
    case "$prev" in
        {dirs})
            COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        {files})
            COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
        {values})
            COMPREPLY=(); return ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "{words}" -- "$cur") )
        [[ "${{COMPREPLY[0]}}" == *= ]] && compopt -o nospace
    fi
}}
complete -F _repozo repozo
"#,
        dirs = with("dir"),
        files = with("file"),
        values = other(&[""]),
        words = words.join(" "),
    )
}

fn render_zsh(sections: &[Section]) -> String {
    let esc = |d: &str| {
        d.replace('\\', "\\\\")
            .replace('\'', "'\\''")
            .replace('[', "\\[")
            .replace(']', "\\]")
            .replace(':', "\\:")
    };
    let mut specs = Vec::new();
    for (n, a, d) in options(sections) {
        let d = esc(&d);
        let spec = match a.as_deref() {
            None => format!("'{n}[{d}]'"),
            Some(a) => {
                let action = match value_kind(a) {
                    "dir" => "_files -/",
                    "file" => "_files",
                    _ => " ",
                };
                let a = esc(a);
                if n.starts_with("--") {
                    format!("'{n}=[{d}]:{a}:{action}'")
                } else {
                    format!("'{n}+[{d}]:{a}:{action}'")
                }
            }
        };
        specs.push(spec);
    }
    format!(
        "#compdef repozo\n# zsh completion for repozo. Generated from `repozo --help` by\n\
         # tests/integration/man.rs: do not edit.\n_arguments -s \\\n  {}\n",
        specs.join(" \\\n  ")
    )
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compare `rel` with `want`, or write it with `REPOZO_BLESS=1`.
fn check_or_bless(rel: &str, want: &str) {
    let p = root().join(rel);
    if std::env::var_os("REPOZO_BLESS").is_some() {
        std::fs::write(&p, want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&p).unwrap_or_default();
    assert!(
        have == want,
        "{rel} is not what `repozo --help` gives: run \
         REPOZO_BLESS=1 cargo test --test integration man"
    );
}

fn help() -> String {
    let env = Env::new();
    env.run(&["--help"], LATE).ok().stdout_str()
}

#[test]
fn the_man_page_and_completions_are_generated_from_help() {
    let help = help();
    let sections = parse_help(&help);
    let template = std::fs::read_to_string(root().join("doc/repozo.1.in")).unwrap();
    let page = template
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"))
        .replace("@OPTIONS@\n", &render_options(&sections));
    // every option of --help is in them (the parse missed none)
    let long: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == '=' || c == ',' || c == ')')
        .filter(|w| {
            w.starts_with("--")
                && w.len() > 3
                && w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .collect();
    assert!(long.len() > 20, "{long:?}");
    let bash = render_bash(&sections);
    let zsh = render_zsh(&sections);
    for o in &long {
        assert!(page.contains(&roff(o)), "{o} is not in the man page");
        assert!(bash.contains(o), "{o} is not in the bash completion");
        assert!(zsh.contains(o), "{o} is not in the zsh completion");
    }
    check_or_bless("doc/repozo.1", &page);
    check_or_bless("doc/repozo.bash", &bash);
    check_or_bless("doc/_repozo", &zsh);
}

/// groff formats the page without a warning.
#[test]
fn the_man_page_formats_cleanly() {
    let page = root().join("doc/repozo.1");
    let mut cmd = Command::new("groff");
    cmd.args(["-man", "-Tutf8", "-ww", "-z"]).arg(&page);
    let o = exec(cmd).ok();
    assert!(o.stderr_str().trim().is_empty(), "{}", o.describe());
}

/// The bash completion completes options, and a directory after `-r`.
#[test]
fn bash_completes_options_and_paths() {
    let env = Env::new();
    std::fs::create_dir(env.path("backups")).unwrap();
    let script = root().join("doc/repozo.bash");
    let complete = |words: &str| -> String {
        let code = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); _repozo; echo \"${{COMPREPLY[*]}}\"",
            shell_quote(&script)
        );
        let mut cmd = Command::new("bash");
        cmd.current_dir(env.root()).args(["-c", &code]);
        exec(cmd).ok().stdout_str().trim().to_string()
    };
    assert_eq!(complete("repozo --pru"), "--prune-index");
    assert_eq!(complete("repozo --rep"), "--repository=");
    assert_eq!(complete("repozo -r back"), "backups");
    assert_eq!(complete("repozo --repository = back"), "backups");
    assert_eq!(complete("repozo --max-age ''"), "");
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}
