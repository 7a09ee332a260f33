//! Multi-document YAML as text: split a stream at its `---` lines, and put it back together.
//! Documents that inject leaves alone are copied byte for byte (comments and all); only the
//! documents it changes are re-serialized, keeping their leading comment lines (such as Helm's
//! `# Source:`). A `---` at the start of a line is always a document marker in YAML, so a
//! textual split is exact.

/// One document of a stream, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDocument<'a> {
    /// The full text, including its leading `---` line when it has one.
    pub text: &'a str,
}

impl<'a> RawDocument<'a> {
    /// The marker line and comment/blank lines before the content, to keep when the document
    /// is re-serialized. Content on the marker line itself (`--- {a: 1}`) keeps only `---`.
    pub fn preamble(&self) -> String {
        let mut out = String::new();
        for line in self.text.split_inclusive('\n') {
            let trimmed = line.trim();
            if is_marker(line) {
                let rest = line[3..].trim();
                if rest.is_empty() || rest.starts_with('#') {
                    out.push_str(line);
                } else {
                    out.push_str("---\n");
                    break;
                }
            } else if trimmed.is_empty() || trimmed.starts_with('#') {
                out.push_str(line);
            } else {
                break;
            }
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out
    }
}

impl RawDocument<'_> {
    /// Whether the document has any content besides markers, comments and blank lines. Only
    /// those count when documents are numbered for messages (a leading comment block before
    /// the first `---` is not a document).
    pub fn has_content(&self) -> bool {
        self.text.lines().any(|line| {
            let trimmed = line.trim();
            let marker_only = is_marker(line) && {
                let rest = line[3..].trim();
                rest.is_empty() || rest.starts_with('#')
            };
            !(trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "..." || marker_only)
        })
    }
}

fn is_marker(line: &str) -> bool {
    line.starts_with("---")
        && line[3..]
            .chars()
            .next()
            .is_none_or(|c| c == ' ' || c == '\t' || c == '\n' || c == '\r')
}

/// Splits a stream into documents at every line that starts a new one (`---`). An empty
/// stream has no documents.
pub fn split(text: &str) -> Vec<RawDocument<'_>> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if is_marker(line) && offset > start {
            documents.push(RawDocument {
                text: &text[start..offset],
            });
            start = offset;
        }
        offset += line.len();
    }
    if start < text.len() {
        documents.push(RawDocument {
            text: &text[start..],
        });
    }
    documents
}

/// Appends a document to the output, making sure it starts on its own line and is separated
/// from the previous one by a `---` line.
pub fn push_document(out: &mut String, document: &str) {
    if out.is_empty() {
        out.push_str(document);
        return;
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    if !document.starts_with("---") {
        out.push_str("---\n");
    }
    out.push_str(document);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(input: &str) -> Vec<&str> {
        split(input).into_iter().map(|d| d.text).collect()
    }

    #[test]
    fn splits_at_marker_lines_only() {
        assert_eq!(
            texts("a: 1\n---\nb: |\n  ---x\n---- c\n"),
            ["a: 1\n", "---\nb: |\n  ---x\n---- c\n"]
        );
        assert_eq!(
            texts("---\na: 1\n--- # two\nb: 2"),
            ["---\na: 1\n", "--- # two\nb: 2"]
        );
        assert!(texts("").is_empty());
    }

    #[test]
    fn preamble_keeps_marker_and_leading_comments() {
        let doc = RawDocument {
            text: "---\n# Source: web/templates/deployment.yaml\n\napiVersion: v1\n# later\n",
        };
        assert_eq!(
            doc.preamble(),
            "---\n# Source: web/templates/deployment.yaml\n\n"
        );
        assert_eq!(
            RawDocument {
                text: "--- {a: 1}\n"
            }
            .preamble(),
            "---\n"
        );
        assert_eq!(RawDocument { text: "a: 1\n" }.preamble(), "");
    }

    #[test]
    fn comment_only_chunks_have_no_content() {
        assert!(!RawDocument {
            text: "# header\n\n"
        }
        .has_content());
        assert!(!RawDocument {
            text: "--- # x\n...\n"
        }
        .has_content());
        assert!(RawDocument {
            text: "---\na: 1\n"
        }
        .has_content());
        assert!(RawDocument {
            text: "--- {a: 1}\n"
        }
        .has_content());
    }

    #[test]
    fn concatenation_separates_documents() {
        let mut out = String::new();
        push_document(&mut out, "a: 1");
        push_document(&mut out, "b: 2\n");
        push_document(&mut out, "---\nc: 3\n");
        assert_eq!(out, "a: 1\n---\nb: 2\n---\nc: 3\n");
    }
}
