//! A reader for the small part of bash that an asd.conf needs, which runs nothing: comments,
//! blank lines, `NAME=word`, `NAME=(word ...)` over one or many lines, `NAME+=(...)`, and an
//! optional leading `export`. A word is plain characters, `'single'` or `"double"` quotes
//! (the two may be joined, as in bash) and `\x` escapes. Anything whose meaning needs a shell
//! (`$`, backticks, `;`, `&`, `|`, redirections, globs, braces, `~`, line continuations) is a
//! `Fault` that says what was found and on which line.

/// One assignment, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Statement {
    /// Line of the name.
    pub line: usize,
    pub name: String,
    /// `NAME+=...` rather than `NAME=...`.
    pub append: bool,
    pub value: Value,
}

/// The right-hand side of an assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// `NAME=word`; the word may be empty.
    Scalar(String),
    /// `NAME=(...)`: each word with the line it starts on.
    List(Vec<(usize, String)>),
}

/// Something the reader cannot accept, at a 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    pub line: usize,
    pub problem: String,
}

/// Reads every statement of `text`, or the first fault.
pub(crate) fn statements(text: &str) -> Result<Vec<Statement>, Fault> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
    };
    let mut out = Vec::new();
    loop {
        lexer.skip_blanks();
        match lexer.peek() {
            None => return Ok(out),
            Some('\n') => _ = lexer.bump(),
            Some('#') => lexer.skip_comment(),
            Some(_) => {
                let statement = lexer.statement()?;
                lexer.end_of_statement(statement.value == Value::Scalar(String::new()))?;
                out.push(statement);
            }
        }
    }
}

/// Characters bash takes literally in an unquoted word.
fn is_plain(c: char) -> bool {
    (!c.is_ascii() && !c.is_control()) || c.is_ascii_alphanumeric() || "/._-+,:@%^=#!".contains(c)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Why `c` (followed by `next`) cannot be read without a shell.
fn shell_problem(c: char, next: Option<char>, after: Option<char>) -> String {
    let name_follows = next.is_some_and(|n| is_name_char(n) || n == '{');
    match c {
        '$' if next == Some('(') && after == Some('(') => {
            "arithmetic expansion `$((...))` needs a shell; write the number itself".into()
        }
        '$' if next == Some('(') => "command substitution `$(...)` needs a shell".into(),
        '$' if name_follows => "variable expansion needs a shell; write the value itself".into(),
        '$' => "`$` is special to bash; put the value in '...' if it is part of a name".into(),
        '`' => "command substitution `...` needs a shell".into(),
        ';' => "`;` starts another command; write one setting per line".into(),
        '&' | '|' => format!("`{c}` runs commands; asd.conf may only set variables"),
        '<' | '>' => format!("redirection `{c}` needs a shell"),
        '{' | '}' => {
            "braces are expanded by bash; quote the value if they are part of a name".into()
        }
        '*' | '?' | '[' | ']' => format!("`{c}` is a glob pattern in bash; write the paths out"),
        '(' | ')' => format!("unexpected `{c}`: a list is written NAME=(...)"),
        '~' => "`~` is expanded by bash to a home directory; write the full path".into(),
        '\\' => "a line continuation (`\\` at the end of a line) is not supported".into(),
        '\r' => "carriage return (Windows line ending): convert the file with dos2unix".into(),
        c if c.is_control() => format!("control character {c:?}"),
        c => format!("unexpected `{c}`: a line must be NAME=value"),
    }
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    /// Line of `chars[pos]`.
    line: usize,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_next(&self) -> Option<char> {
        self.chars.get(self.pos + 1).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn skip_comment(&mut self) {
        while !matches!(self.peek(), None | Some('\n')) {
            self.pos += 1;
        }
    }

    fn fault(&self, problem: impl Into<String>) -> Fault {
        Fault {
            line: self.line,
            problem: problem.into(),
        }
    }

    /// The fault for the character at `pos`, quoting what follows it on the line.
    fn shell_fault(&self) -> Fault {
        let Some(c) = self.peek() else {
            return self.fault("unexpected end of file");
        };
        let found: String = self.chars[self.pos..]
            .iter()
            .take_while(|&&c| c != '\n')
            .take(30)
            .collect();
        self.fault(format!(
            "{}: found {found:?}",
            shell_problem(c, self.peek_next(), self.chars.get(self.pos + 2).copied())
        ))
    }

    fn name(&mut self) -> String {
        let start = self.pos;
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        {
            while self.peek().is_some_and(is_name_char) {
                self.pos += 1;
            }
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn statement(&mut self) -> Result<Statement, Fault> {
        let line = self.line;
        let mut name = self.name();
        if name == "export" && matches!(self.peek(), Some(' ' | '\t')) {
            self.skip_blanks();
            name = self.name();
            if name.is_empty() && matches!(self.peek(), None | Some('\n' | '#')) {
                return Err(self.fault("`export` without NAME=value"));
            }
        }
        if name.is_empty() {
            return Err(self.shell_fault());
        }
        let append = self.peek() == Some('+') && self.peek_next() == Some('=');
        self.pos += usize::from(append);
        if self.peek() != Some('=') {
            return Err(self.not_assignment(&name));
        }
        self.pos += 1;
        let value = if self.peek() == Some('(') {
            self.pos += 1;
            Value::List(self.list()?)
        } else {
            Value::Scalar(self.word(false)?.unwrap_or_default())
        };
        Ok(Statement {
            line,
            name,
            append,
            value,
        })
    }

    /// The fault for `name` not followed by `=`.
    fn not_assignment(&mut self, name: &str) -> Fault {
        if self.peek() == Some('[') {
            return self.fault(format!(
                "`{name}[...]=` is not supported: write {name}=(...)"
            ));
        }
        self.skip_blanks();
        if matches!(self.peek(), Some('=' | '+')) {
            let p =
                format!("spaces around `=` make bash run `{name}` as a command: write {name}=...");
            return self.fault(p);
        }
        self.fault(format!(
            "`{name}` is a command, not a setting: asd.conf is read without running it, so only \
             NAME=value lines are allowed"
        ))
    }

    /// After a value: only blanks, then a comment or the end of the line.
    fn end_of_statement(&mut self, empty_value: bool) -> Result<(), Fault> {
        self.skip_blanks();
        match self.peek() {
            None | Some('\n' | '#') => Ok(()),
            Some(c) if is_plain(c) || matches!(c, '\'' | '"') => {
                let found: String = self.chars[self.pos..]
                    .iter()
                    .take_while(|&&c| c != '\n')
                    .take(30)
                    .collect();
                Err(self.fault(match empty_value {
                    true => format!("space after `=`: bash would run {found:?} as a command"),
                    false => {
                        format!("unexpected {found:?} after the value: quote values with spaces")
                    }
                }))
            }
            Some(_) => Err(self.shell_fault()),
        }
    }

    /// The words of a list, after its `(`, up to and including its `)`.
    fn list(&mut self) -> Result<Vec<(usize, String)>, Fault> {
        let open_line = self.line;
        let mut items = Vec::new();
        loop {
            self.skip_blanks();
            match self.peek() {
                None => {
                    let p = "this list has no closing `)`";
                    return Err(Fault {
                        line: open_line,
                        problem: p.into(),
                    });
                }
                Some('\n') => _ = self.bump(),
                Some('#') => self.skip_comment(),
                Some(')') => {
                    self.pos += 1;
                    return Ok(items);
                }
                Some(_) => {
                    let line = self.line;
                    match self.word(true)? {
                        Some(word) => items.push((line, word)),
                        None => return Err(self.shell_fault()),
                    }
                }
            }
        }
    }

    /// One word: `None` if there is none here (a blank, line end or `)` in a list).
    fn word(&mut self, in_list: bool) -> Result<Option<String>, Fault> {
        let mut out = String::new();
        let mut any = false;
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' => break,
                ')' if in_list => break,
                '\'' => out.push_str(&self.single_quoted()?),
                '"' => out.push_str(&self.double_quoted()?),
                '\\' => match self.peek_next() {
                    Some(n) if !n.is_control() => {
                        self.pos += 2;
                        out.push(n);
                    }
                    Some('\n') | None => return Err(self.shell_fault()),
                    Some(_) => {
                        self.pos += 1;
                        return Err(self.shell_fault());
                    }
                },
                '~' if !any => return Err(self.shell_fault()),
                c if is_plain(c) => {
                    self.pos += 1;
                    out.push(c);
                }
                _ => return Err(self.shell_fault()),
            }
            any = true;
        }
        Ok(any.then_some(out))
    }

    /// A control character or line break inside quotes is refused: a quote left open
    /// would otherwise swallow the rest of the file.
    fn quoted_char_fault(&self, c: char, quote: char) -> Option<Fault> {
        match c {
            '\n' => Some(self.fault(format!("{quote} is not closed on this line"))),
            '\t' => None,
            c if c.is_control() => Some(self.shell_fault()),
            _ => None,
        }
    }

    fn single_quoted(&mut self) -> Result<String, Fault> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.fault("' is not closed before the end of the file")),
                Some('\'') => break,
                Some(c) => match self.quoted_char_fault(c, '\'') {
                    Some(fault) => return Err(fault),
                    None => out.push(c),
                },
            }
            self.pos += 1;
        }
        self.pos += 1;
        Ok(out)
    }

    fn double_quoted(&mut self) -> Result<String, Fault> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match (self.peek(), self.peek_next()) {
                (None, _) => return Err(self.fault("\" is not closed before the end of the file")),
                (Some('"'), _) => break,
                (Some('\\'), Some(n @ ('$' | '`' | '"' | '\\'))) => {
                    self.pos += 1;
                    out.push(n);
                }
                (Some('\\'), Some('\n' | '\r') | None) => return Err(self.shell_fault()),
                (Some('$' | '`'), _) => return Err(self.shell_fault()),
                (Some(c), _) => match self.quoted_char_fault(c, '"') {
                    Some(fault) => return Err(fault),
                    None => out.push(c),
                },
            }
            self.pos += 1;
        }
        self.pos += 1;
        Ok(out)
    }
}
