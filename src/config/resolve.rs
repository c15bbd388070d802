//! Turns what the user typed (a script path, a command line, an interpreter name) into absolute
//! program paths, before anything is started, so a typo is an error and never a crash loop.

use std::path::{Path, PathBuf};

/// What `start` will execute.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Absolute script or program path.
    pub script: String,
    /// Extra leading arguments found in a command line (`"sleep 1000"` → `["1000"]`).
    pub args: Vec<String>,
    /// Absolute interpreter path, or None to execute `script` itself.
    pub interpreter: Option<String>,
    /// Default app name: the script's file name without its extension.
    pub default_name: String,
}

/// Interpreter chosen by file extension, as PM2 does.
fn interpreter_for(path: &Path) -> Option<&'static str> {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "js" | "cjs" | "mjs" => Some("node"),
        "py" => Some("python3"),
        "sh" | "bash" => Some("bash"),
        "rb" => Some("ruby"),
        "pl" => Some("perl"),
        "php" => Some("php"),
        _ => None,
    }
}

/// Finds `program` on `path_var` (or as a path, when it contains a slash), like execvp would.
pub fn find_program(program: &str, cwd: &Path, path_var: Option<&str>) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let p = cwd.join(program);
        return is_executable(&p).then_some(p);
    }
    let path_var = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| cwd.join(d).join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("app")
        .to_string()
}

/// Resolves `script` (relative to `cwd`) with an optional `interpreter` ("none" = run directly).
pub fn resolve(
    script: &str,
    interpreter: Option<&str>,
    cwd: &Path,
    path_var: Option<&str>,
) -> Result<Resolved, String> {
    if script.trim().is_empty() {
        return Err("script is empty (give a script path or a command)".to_string());
    }
    let as_file = cwd.join(script);
    let explicit = interpreter.filter(|i| !i.is_empty());
    if as_file.is_file() {
        let abs = std::fs::canonicalize(&as_file).unwrap_or(as_file.clone());
        let chosen = match explicit {
            Some("none") => None,
            Some(i) => Some(i.to_string()),
            None => interpreter_for(&abs).map(str::to_string),
        };
        let interpreter = match chosen {
            None => {
                if !is_executable(&abs) {
                    return Err(format!(
                        "{} is not executable and has no known extension (chmod +x it, or pass --interpreter)",
                        abs.display()
                    ));
                }
                None
            }
            Some(name) => Some(
                find_program(&name, cwd, path_var)
                    .ok_or_else(|| {
                        format!("interpreter not found: {name} (install it or pass --interpreter with a full path)")
                    })?
                    .to_string_lossy()
                    .into_owned(),
            ),
        };
        return Ok(Resolved {
            default_name: stem(&abs),
            script: abs.to_string_lossy().into_owned(),
            args: Vec::new(),
            interpreter,
        });
    }
    if as_file.is_dir() {
        return Err(format!(
            "script is a directory: {script} (give the file to run, e.g. {script}/index.js)"
        ));
    }
    // Not a file: a command line. With shell operators (`cc app.c; ./a.out`) it runs under
    // `sh -c`, as under PM2; otherwise the program itself, so signals reach it.
    if needs_shell(script) {
        let words = shell_words::split(script).unwrap_or_default();
        let sh = find_program("sh", cwd, path_var)
            .ok_or_else(|| format!("{script:?} needs a shell, and sh is not on PATH"))?;
        return Ok(Resolved {
            default_name: words
                .first()
                .map(|w| stem(Path::new(w)))
                .unwrap_or_else(|| "sh".into()),
            script: sh.to_string_lossy().into_owned(),
            args: vec!["-c".into(), script.to_string()],
            interpreter: None,
        });
    }
    let words =
        shell_words::split(script).map_err(|e| format!("cannot parse command {script:?}: {e}"))?;
    let Some((first, rest)) = words.split_first() else {
        return Err("script is empty (give a script path or a command)".to_string());
    };
    match find_program(first, cwd, path_var) {
        Some(program) => {
            let interpreter = match explicit {
                Some(i) if i != "none" => Some(
                    find_program(i, cwd, path_var)
                        .ok_or_else(|| format!("interpreter not found: {i} (install it or pass a full path)"))?
                        .to_string_lossy()
                        .into_owned(),
                ),
                _ => None,
            };
            Ok(Resolved {
                default_name: stem(Path::new(first)),
                script: program.to_string_lossy().into_owned(),
                args: rest.to_vec(),
                interpreter,
            })
        }
        None => Err(format!(
            "script not found: {script} (no such file in {}, and {first:?} is not a program on PATH; check the path or pass --cwd)",
            cwd.display()
        )),
    }
}

/// Whether a command line uses the shell's syntax outside quotes: `;`, `&`, `|`, `<`, `>`, a
/// backtick or `$(`.
pub fn needs_shell(line: &str) -> bool {
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut prev = ' ';
    for c in line.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' && !single {
            escaped = true;
        } else if c == '\'' && !double {
            single = !single;
        } else if c == '"' && !single {
            double = !double;
        } else {
            let substitution = c == '`' || (c == '(' && prev == '$');
            let operator = matches!(c, ';' | '&' | '|' | '<' | '>');
            if !single && (substitution || (operator && !double)) {
                return true;
            }
        }
        prev = c;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_syntax_outside_quotes_needs_a_shell() {
        for (line, want) in [
            ("sleep 1000", false),
            ("cc hello.c; ./a.out", true),
            ("npm run build && npm start", true),
            ("node app.js > out.txt", true),
            ("echo $(date)", true),
            (
                "node -e 'setTimeout(() => {}, 1000); console.log(1)'",
                false,
            ),
            ("node -e \"a > b; c\"", false),
            ("echo \"$(date)\"", true),
            ("grep a\\;b file", false),
        ] {
            assert_eq!(needs_shell(line), want, "{line}");
        }
    }

    #[test]
    fn command_lines_run_the_program_itself() {
        let r = resolve("sleep 1000", None, Path::new("/"), Some("/usr/bin:/bin")).unwrap();
        assert!(r.script.ends_with("/sleep"), "{r:?}");
        assert_eq!(r.args, vec!["1000"]);
        assert_eq!(r.interpreter, None);
        assert_eq!(r.default_name, "sleep");
    }

    #[test]
    fn missing_scripts_are_errors() {
        let e = resolve("./nope.js", None, Path::new("/tmp"), Some("/usr/bin")).unwrap_err();
        assert!(e.starts_with("script not found: ./nope.js"), "{e}");
    }

    #[test]
    fn extension_picks_the_interpreter() {
        let dir = std::env::temp_dir().join(format!("cohort-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("app.sh"), "echo hi").unwrap();
        let r = resolve("app.sh", None, &dir, Some("/usr/bin:/bin")).unwrap();
        assert!(r.interpreter.unwrap().ends_with("/bash"));
        assert_eq!(r.default_name, "app");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
