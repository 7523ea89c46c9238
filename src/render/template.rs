//! `{{NAME}}` substitution for the daemon templates in `docker/templates/`.
//!
//! Deliberately tiny: no conditionals, no loops, no escaping. Values come only from validated types,
//! and a template that names a variable we did not provide (or a value with a line break) is an error,
//! so a typo cannot silently render an empty setting.

use std::collections::BTreeMap;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("template {template}: unknown variable {name}")]
    Unknown { template: String, name: String },
    #[error("template {template}: unclosed {{{{ at byte {at}")]
    Unclosed { template: String, at: usize },
    #[error("template {template}: the value of {name} contains a line break")]
    Multiline { template: String, name: String },
}

pub type Vars = BTreeMap<&'static str, String>;

pub fn render(template: &str, text: &str, vars: &Vars) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len() + 256);
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(TemplateError::Unclosed {
                template: template.to_string(),
                at: offset + start,
            });
        };
        let name = after[..end].trim();
        let value = vars.get(name).ok_or_else(|| TemplateError::Unknown {
            template: template.to_string(),
            name: name.to_string(),
        })?;
        if value.contains(['\n', '\r', '\0']) {
            return Err(TemplateError::Multiline {
                template: template.to_string(),
                name: name.to_string(),
            });
        }
        out.push_str(value);
        let consumed = start + 2 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes() {
        let vars: Vars = [("A", "1".to_string()), ("BB", "two".to_string())].into();
        assert_eq!(
            render("t", "x={{A}} y={{ BB }}{{A}}", &vars).unwrap(),
            "x=1 y=two1"
        );
        assert_eq!(render("t", "no vars", &vars).unwrap(), "no vars");
    }

    #[test]
    fn errors() {
        let vars: Vars = [("A", "1\n2".to_string())].into();
        assert!(matches!(
            render("t", "{{B}}", &vars),
            Err(TemplateError::Unknown { .. })
        ));
        assert!(matches!(
            render("t", "{{A", &vars),
            Err(TemplateError::Unclosed { .. })
        ));
        assert!(matches!(
            render("t", "{{A}}", &vars),
            Err(TemplateError::Multiline { .. })
        ));
    }
}
