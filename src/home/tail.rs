//! The last lines of a log file, read backwards from the end so that a big log costs little: the
//! backlog that `cohort logs` prints and monit shows before following new lines.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// How much of the file is read per step, walking back from the end.
const STEP: u64 = 64 * 1024;

/// The last `n` lines of a file; none when it cannot be read (a log not written yet is empty).
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let Ok(mut f) = super::private::open_read(path) else {
        return Vec::new();
    };
    let Ok(len) = f.seek(SeekFrom::End(0)) else {
        return Vec::new();
    };
    let mut pos = len;
    let mut buf: Vec<u8> = Vec::new();
    while pos > 0 {
        let start = pos.saturating_sub(STEP);
        let mut chunk = vec![0u8; (pos - start) as usize];
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_exact(&mut chunk).is_err() {
            break;
        }
        chunk.extend_from_slice(&buf);
        buf = chunk;
        pos = start;
        if buf.iter().filter(|c| **c == b'\n').count() > n {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::tail_lines;

    #[test]
    fn last_lines_of_small_and_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app-0-out.log");
        // (file content, lines asked, lines expected)
        let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let cases: Vec<(&str, usize, Vec<String>)> = vec![
            ("", 5, vec![]),
            ("a\nb\nc\n", 0, vec![]),
            ("a\nb\nc\n", 2, vec!["b".into(), "c".into()]),
            ("a\nb\nc\n", 10, vec!["a".into(), "b".into(), "c".into()]),
            ("a\nb\nno newline", 2, vec!["b".into(), "no newline".into()]),
            (
                &big,
                3,
                vec![
                    "line 19997".into(),
                    "line 19998".into(),
                    "line 19999".into(),
                ],
            ),
        ];
        for (content, n, want) in cases {
            std::fs::write(&path, content).unwrap();
            assert_eq!(tail_lines(&path, n), want, "{n} lines of {:.20?}", content);
        }
    }

    #[test]
    fn a_missing_file_has_no_lines() {
        let dir = tempfile::tempdir().unwrap();
        assert!(tail_lines(&dir.path().join("missing.log"), 10).is_empty());
    }
}
