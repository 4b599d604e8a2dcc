//! `${VAR}` interpolation in configuration strings.
//!
//! Done on the parsed YAML tree, not the raw text, so a value can never inject YAML
//! structure and every missing variable is reported with the key that uses it.
//! `${VAR:-default}` supplies a default; `$${` writes a literal `${`.

use serde_yaml::Value;

use super::Problems;

/// Replace `${VAR}` references in every string of `value`, recording missing variables.
pub fn interpolate(value: &mut Value, path: &str, problems: &mut Problems) {
    match value {
        Value::String(s) if s.contains("${") => {
            match substitute(s, |name| std::env::var(name).ok()) {
                Ok(new) => *s = new,
                Err(e) => problems.push_final(display_path(path), e),
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), problems);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = k
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{k:?}"));
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                interpolate(v, &child, problems);
            }
        }
        _ => {}
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "(top level)"
    } else {
        path
    }
}

/// Substitute references in `text` using `lookup`.
pub fn substitute(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix("${") {
            let end = inner
                .find('}')
                .ok_or_else(|| "unterminated ${ in value".to_owned())?;
            let expr = &inner[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::substitute;

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "value".to_owned())
    }

    #[test]
    fn substitutes_defaults_and_escapes() {
        assert_eq!(substitute("a${SET}b", env).unwrap(), "avalueb");
        assert_eq!(substitute("${UNSET:-dflt}", env).unwrap(), "dflt");
        assert_eq!(substitute("$${SET}", env).unwrap(), "${SET}");
        assert_eq!(substitute("cost $5", env).unwrap(), "cost $5");
        assert_eq!(
            substitute("${UNSET}", env).unwrap_err(),
            "environment variable UNSET is not set"
        );
        assert!(substitute("${OPEN", env).is_err());
        assert!(substitute("${bad-name}", env).is_err());
    }
}
