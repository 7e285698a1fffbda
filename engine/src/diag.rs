//! Diagnostics: user-facing errors with file, line, column, what was expected and what to do.

use std::fmt;
use std::sync::Arc;

/// A loaded source file, kept for snippets.
#[derive(Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as the user gave it.
    pub name: String,
    /// The file's text.
    pub text: String,
}

/// A position in a source file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loc {
    /// The file, `None` for values that come from no file (`--set`, built-in defaults).
    pub file: Option<Arc<SourceFile>>,
    /// 1-based line; 0 when unknown.
    pub line: u32,
    /// 1-based column; 0 when unknown.
    pub col: u32,
}

impl Loc {
    /// A location in `file`.
    pub fn new(file: &Arc<SourceFile>, line: u64, col: u64) -> Self {
        Loc {
            file: Some(file.clone()),
            line: line as u32,
            col: col as u32,
        }
    }

    /// A value given on the command line.
    pub fn command_line() -> Self {
        Loc::default()
    }

    fn file_name(&self) -> &str {
        self.file
            .as_ref()
            .map_or("<command line>", |f| f.name.as_str())
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file_name())
        } else {
            write!(f, "{}:{}:{}", self.file_name(), self.line, self.col)
        }
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Severity {
    /// The input is invalid: nothing runs.
    #[default]
    Error,
    /// The input is valid but likely wrong or unsafe.
    Warning,
}

/// One problem found in user input.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where.
    pub loc: Loc,
    /// What is wrong.
    pub message: String,
    /// What to do instead, when we can tell.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic without help.
    pub fn new(loc: Loc, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            loc,
            message: message.into(),
            help: None,
        }
    }

    /// A warning without help.
    pub fn warning(loc: Loc, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::new(loc, message)
        }
    }

    /// Adds what to do instead.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{label}: {}", self.message)?;
        writeln!(f, "  --> {}", self.loc)?;
        if let Some(file) = &self.loc.file
            && self.loc.line > 0
            && let Some(text) = file.text.lines().nth(self.loc.line as usize - 1)
        {
            let n = self.loc.line.to_string();
            let pad = " ".repeat(n.len());
            writeln!(f, "{pad} |")?;
            writeln!(f, "{n} | {text}")?;
            let caret_at: usize = text
                .chars()
                .take(self.loc.col.saturating_sub(1) as usize)
                .map(|c| if c == '\t' { 1 } else { c.len_utf8().min(1) })
                .sum();
            writeln!(f, "{pad} | {}^", " ".repeat(caret_at))?;
        }
        if let Some(h) = &self.help {
            writeln!(f, "  = help: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found, in the order found.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Records a problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(v)` when no problem was found.
    pub fn into_result<T>(self, v: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() { Ok(v) } else { Err(self) }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(f, "{n} error{} found", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}

/// The closest candidate to `word`, if any is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
