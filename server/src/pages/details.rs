//! `authorization_details` (RFC 9396) as the user reads them on the consent page: one section
//! per entry, headed by its type; the fields a payment is judged by first (amount and currency,
//! recipient, the accounts), then every other field under a readable label, nested objects and
//! arrays as nested lists. Every value is shown whole — nothing is truncated or left out, since
//! what is not shown cannot be said to be approved — and escaped. Numbers are shown as sent
//! (the JSON text), never reformatted or rounded.

use serde_json::{Map, Value};

use super::escape;

/// The fields shown first, in this order, each with its label: the names used by the seed's
/// example and by common open-banking payloads.
const LEADING: [(&str, &str); 10] = [
    ("amount", "Amount"),
    ("instructedAmount", "Amount"),
    ("recipient", "Recipient"),
    ("creditorName", "Recipient"),
    ("sourceAccount", "From account"),
    ("debtorAccount", "From account"),
    ("account", "Account"),
    ("creditorAccount", "To account"),
    ("destinationAccount", "To account"),
    ("concept", "Concept"),
];

/// The HTML of every entry, in order.
pub fn render(details: &[Value]) -> String {
    details.iter().map(entry).collect()
}

fn entry(detail: &Value) -> String {
    let empty = Map::new();
    let fields = detail.as_object().unwrap_or(&empty);
    let kind = fields.get("type").and_then(Value::as_str).unwrap_or("");
    let mut rows = String::new();
    for (name, label) in LEADING {
        if let Some(v) = fields.get(name) {
            rows.push_str(&row(label, v));
        }
    }
    for (name, v) in fields {
        if name != "type" && !LEADING.iter().any(|(n, _)| n == name) {
            rows.push_str(&row(&label(name), v));
        }
    }
    format!(
        "<section class=\"authorization-detail\">\n<h2>{title} <code>{kind}</code></h2>\n\
         <dl>\n{rows}</dl>\n</section>\n",
        title = escape(&label(kind)),
        kind = escape(kind),
    )
}

fn row(label: &str, value: &Value) -> String {
    format!(
        "<dt>{}</dt><dd>{}</dd>\n",
        escape(label),
        self::value(value)
    )
}

/// A value as HTML: text for scalars, `amount currency` for a money object, nested lists for
/// the rest.
fn value(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s),
        Value::Number(n) => escape(&n.to_string()),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        Value::Null => "(none)".to_owned(),
        Value::Array(items) if items.is_empty() => "(none)".to_owned(),
        Value::Array(items) => {
            let li: String = items
                .iter()
                .map(|i| format!("<li>{}</li>\n", value(i)))
                .collect();
            format!("\n<ul>\n{li}</ul>\n")
        }
        Value::Object(o) if o.is_empty() => "(none)".to_owned(),
        Value::Object(o) => match money(o) {
            Some(text) => text,
            None => {
                let rows: String = o.iter().map(|(k, v)| row(&label(k), v)).collect();
                format!("\n<dl>\n{rows}</dl>\n")
            }
        },
    }
}

/// `{"amount": 2460.46, "currency": "USD"}` (and nothing else) as `2460.46 USD`.
fn money(o: &Map<String, Value>) -> Option<String> {
    if o.len() != 2 {
        return None;
    }
    let amount = match o.get("amount")? {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let currency = o.get("currency")?.as_str()?;
    Some(format!("{} {}", escape(&amount), escape(currency)))
}

/// A member name as words: `sourceAccount`, `source_account` and `source-account` all read
/// "Source account"; all-capital words (IBAN) stay as they are.
fn label(name: &str) -> String {
    if name == "datatypes" {
        return "Data types".to_owned();
    }
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if c == '_' || c == '-' || c == ' ' {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    let words: Vec<String> = words
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            let acronym = w.chars().count() > 1 && w.chars().all(|c| !c.is_lowercase());
            if acronym {
                w
            } else if i == 0 {
                let mut cs = w.chars();
                cs.next()
                    .map(|f| {
                        f.to_uppercase()
                            .chain(cs.flat_map(char::to_lowercase))
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                w.to_lowercase()
            }
        })
        .collect();
    if words.is_empty() {
        name.to_owned()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_read_as_words() {
        assert_eq!(label("sourceAccount"), "Source account");
        assert_eq!(label("source_account"), "Source account");
        assert_eq!(label("one_time_payment"), "One time payment");
        assert_eq!(label("IBAN"), "IBAN");
        assert_eq!(label("creditorIBAN"), "Creditor IBAN");
        assert_eq!(label("datatypes"), "Data types");
        assert_eq!(label("_"), "_");
    }

    #[test]
    fn the_seed_payment_reads_in_order_with_every_field() {
        let html = render(&[json!({
            "type": "one_time_payment",
            "amount": {"amount": 2460.46, "currency": "USD"},
            "sourceAccount": "xxxxxxxxxxx4567",
            "recipient": "Acme Travel, Inc.",
            "concept": "All Inclusive Resort Package for Two",
            "reference": "<INV-1 & co>",
            "fees": [{"amount": "1.50", "currency": "EUR"}, true, null],
        })]);
        let amount = html.find("<dt>Amount</dt><dd>2460.46 USD</dd>").unwrap();
        let recipient = html
            .find("<dt>Recipient</dt><dd>Acme Travel, Inc.</dd>")
            .unwrap();
        let from = html
            .find("<dt>From account</dt><dd>xxxxxxxxxxx4567</dd>")
            .unwrap();
        let concept = html
            .find("<dt>Concept</dt><dd>All Inclusive Resort Package for Two</dd>")
            .unwrap();
        assert!(
            amount < recipient && recipient < from && from < concept,
            "{html}"
        );
        assert!(html.contains("<h2>One time payment <code>one_time_payment</code></h2>"));
        assert!(html.contains("&lt;INV-1 &amp; co&gt;"), "{html}");
        assert!(!html.contains("<INV"), "{html}");
        assert!(html.contains("<li>1.50 EUR</li>"), "{html}");
        assert!(
            html.contains("<li>yes</li>") && html.contains("<li>(none)</li>"),
            "{html}"
        );
    }

    #[test]
    fn long_and_nested_values_are_shown_whole() {
        let long = "9".repeat(5000);
        let html = render(&[json!({
            "type": "t",
            "creditorAccount": {"schemeName": "IBAN", "identification": long},
        })]);
        assert!(html.contains(&long));
        assert!(html.contains("<dt>To account</dt><dd>\n<dl>\n<dt>Scheme name</dt><dd>IBAN</dd>"));
        assert_eq!(html.matches("<section").count(), 1);
    }
}
