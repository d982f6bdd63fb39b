//! Content predicates: a test on a file's content (an element's text or an attribute's value,
//! found by a short path of local names), compiled from the rules, evaluated over bytes already
//! read. Pure: nothing here touches the disk.

use quick_xml::Reader;
use quick_xml::events::Event;

/// A test on a file's content: the value of an element's text or of an attribute, found by a
/// short path of local names from the root's children (`series/header/locationId`,
/// `series/header/timeStep/@unit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentFilter {
    /// The path as written.
    pub written: String,
    /// Element local names below the root.
    pub path: Vec<String>,
    /// Attribute local name, when the path ends in `@name`.
    pub attribute: Option<String>,
    /// The value wanted (any occurrence equal to it matches).
    pub value: String,
}

/// Compiles a content filter.
pub fn compile_filter(path: &str, value: &str) -> Result<ContentFilter, String> {
    let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
    let attribute = match parts.last() {
        Some(last) if last.starts_with('@') => {
            let a = last[1..].to_string();
            parts.pop();
            Some(a)
        }
        _ => None,
    };
    if parts.is_empty() || parts.iter().any(|p| p.is_empty() || p.contains('@')) {
        return Err(format!(
            "content path `{path}` is not of the form `a/b/c` or `a/b/@attr`"
        ));
    }
    Ok(ContentFilter {
        written: path.to_string(),
        path: parts,
        attribute,
        value: value.to_string(),
    })
}

/// The values a document holds at each filter's path (up to `most` each, in document order):
/// what an operator is shown when a content test fails.
pub fn content_values(
    document: &[u8],
    filters: &[&ContentFilter],
    most: usize,
) -> Vec<Vec<String>> {
    let mut values = vec![Vec::new(); filters.len()];
    if filters.is_empty() {
        return values;
    }
    walk(document, filters, |i, v| {
        if values[i].len() < most {
            values[i].push(v.to_string());
        }
        values.iter().all(|v| v.len() >= most)
    });
    values
}

/// Reads, in one pass, whether each filter is satisfied by a document.
pub fn content_matches(document: &[u8], filters: &[&ContentFilter]) -> Vec<bool> {
    let mut found = vec![false; filters.len()];
    if filters.is_empty() {
        return found;
    }
    walk(document, filters, |i, v| {
        if v == filters[i].value {
            found[i] = true;
        }
        found.iter().all(|&f| f)
    });
    found
}

/// Walks a document once, calling `seen(i, value)` for each value at filter `i`'s path (an
/// attribute's value, an element's trimmed text, `""` for an empty element), until `seen` says
/// everything wanted is known.
fn walk(document: &[u8], filters: &[&ContentFilter], mut seen: impl FnMut(usize, &str) -> bool) {
    let mut reader = Reader::from_reader(document);
    let mut buf = Vec::new();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut depth = 0usize;
    let mut text: Option<(usize, String)> = None;
    let at = |stack: &[Vec<u8>], f: &ContentFilter| {
        stack.len() == f.path.len() && stack.iter().zip(&f.path).all(|(a, b)| a == b.as_bytes())
    };
    while let Ok(event) = reader.read_event_into(&mut buf) {
        let mut done = false;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                if depth > 0 {
                    stack.push(e.local_name().as_ref().to_vec());
                    for (i, f) in filters.iter().enumerate() {
                        if !at(&stack, f) {
                            continue;
                        }
                        match &f.attribute {
                            Some(a) => {
                                for x in e.attributes().with_checks(false).flatten() {
                                    if x.key.local_name().as_ref() == a.as_bytes() {
                                        done |= seen(i, &String::from_utf8_lossy(&x.value));
                                    }
                                }
                            }
                            None if empty => done |= seen(i, ""),
                            None => text = Some((stack.len(), String::new())),
                        }
                    }
                    if empty {
                        stack.pop();
                    }
                }
                if !empty {
                    depth += 1;
                }
            }
            Event::Text(t) => {
                if let Some((_, s)) = &mut text {
                    s.push_str(&String::from_utf8_lossy(t.as_ref()));
                }
            }
            Event::End(_) => {
                if let Some((level, s)) = &text
                    && *level == stack.len()
                {
                    let value = s.trim();
                    for (i, f) in filters.iter().enumerate() {
                        if f.attribute.is_none() && at(&stack, f) {
                            done |= seen(i, value);
                        }
                    }
                    text = None;
                }
                depth = depth.saturating_sub(1);
                if depth > 0 {
                    stack.pop();
                }
            }
            Event::Eof => break,
            _ => {}
        }
        if done {
            break;
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI: &[u8] = br#"<TimeSeries xmlns="http://www.wldelft.nl/fews/PI" version="1.2"><series><header><type>instantaneous</type><locationId> Y1232010 </locationId><parameterId>P.obs</parameterId><timeStep unit="second" multiplier="3600"/></header></series></TimeSeries>"#;

    #[test]
    fn content_filters_read_element_text_and_attributes() {
        let f = [
            compile_filter("series/header/locationId", "Y1232010").unwrap(),
            compile_filter("series/header/timeStep/@unit", "second").unwrap(),
            compile_filter("series/header/parameterId", "Q.obs").unwrap(),
        ];
        let refs: Vec<&ContentFilter> = f.iter().collect();
        assert_eq!(content_matches(PI, &refs), vec![true, true, false]);
    }
}
