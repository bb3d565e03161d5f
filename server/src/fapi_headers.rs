//! The `x-fapi-*` headers (FAPI 1.0 Baseline §6.2.2 and §6.3, FAPI 1.0 Advanced; seed 004:
//! "Requires the use of x-fapi-* headers" for the FAPI 1 levels).
//!
//! - `x-fapi-interaction-id`: every response of the server carries one — the request's own, if
//!   it sent an RFC 4122 UUID, else a fresh random (version 4) UUID — so a client and the bank's
//!   support can find one exchange in both sets of logs ([`interaction_id`], a layer over every
//!   route).
//! - For clients of a FAPI 1 level ([`validate`], called where the client is known): whatever
//!   of `x-fapi-interaction-id`, `x-fapi-auth-date` (an RFC 7231 IMF-fixdate) and
//!   `x-fapi-customer-ip-address` (an IPv4 or IPv6 address) is sent must be well-formed, or the
//!   request is refused with `invalid_request`.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::OAuthError;

pub const INTERACTION_ID: HeaderName = HeaderName::from_static("x-fapi-interaction-id");
pub const AUTH_DATE: HeaderName = HeaderName::from_static("x-fapi-auth-date");
pub const CUSTOMER_IP: HeaderName = HeaderName::from_static("x-fapi-customer-ip-address");

/// The layer: echo the request's interaction id, or give the response a new one.
pub async fn interaction_id(request: Request, next: Next) -> Response {
    let echoed = request
        .headers()
        .get(&INTERACTION_ID)
        .filter(|v| v.to_str().is_ok_and(is_uuid))
        .cloned();
    let mut response = next.run(request).await;
    let value = match echoed {
        Some(v) => Some(v),
        None => new_uuid().and_then(|u| HeaderValue::from_str(&u).ok()),
    };
    if let Some(v) = value {
        response.headers_mut().insert(INTERACTION_ID, v);
    }
    response
}

/// The FAPI 1 checks of the headers a request sent.
pub fn validate(headers: &HeaderMap) -> Result<(), OAuthError> {
    let text = |name: &HeaderName| -> Result<Option<&str>, OAuthError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v.to_str().map(Some).map_err(|_| {
                OAuthError::invalid_request(format!("{name} is not a visible ASCII string"))
            }),
        }
    };
    if let Some(id) = text(&INTERACTION_ID)? {
        if !is_uuid(id) {
            return Err(OAuthError::invalid_request(
                "x-fapi-interaction-id must be an RFC 4122 UUID",
            ));
        }
    }
    if let Some(date) = text(&AUTH_DATE)? {
        if !is_imf_fixdate(date) {
            return Err(OAuthError::invalid_request(
                "x-fapi-auth-date must be an HTTP date (RFC 7231 IMF-fixdate), e.g. \
                 Tue, 11 Sep 2012 19:43:31 GMT",
            ));
        }
    }
    if let Some(ip) = text(&CUSTOMER_IP)? {
        if ip.trim().parse::<std::net::IpAddr>().is_err() {
            return Err(OAuthError::invalid_request(
                "x-fapi-customer-ip-address must be an IPv4 or IPv6 address",
            ));
        }
    }
    Ok(())
}

/// `8-4-4-4-12` hexadecimal digits (RFC 4122 §3), either case.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A random (version 4) UUID, or `None` if the system RNG fails.
fn new_uuid() -> Option<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).ok()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        hex.get(0..8)?,
        hex.get(8..12)?,
        hex.get(12..16)?,
        hex.get(16..20)?,
        hex.get(20..32)?
    ))
}

/// RFC 7231 §7.1.1.1 IMF-fixdate, the only form a sender may generate: a real date, e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT` (weekday included in the check).
fn is_imf_fixdate(s: &str) -> bool {
    s.len() == 29
        && s.ends_with(" GMT")
        && httpdate_parse(s).is_some_and(|t| format_http_date(t) == s)
}

fn httpdate_parse(s: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339(&imf_to_rfc3339(s)?).ok()
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → `1994-11-06T08:49:37Z`.
fn imf_to_rfc3339(s: &str) -> Option<String> {
    let day = s.get(5..7)?;
    let month = match s.get(8..11)? {
        "Jan" => "01",
        "Feb" => "02",
        "Mar" => "03",
        "Apr" => "04",
        "May" => "05",
        "Jun" => "06",
        "Jul" => "07",
        "Aug" => "08",
        "Sep" => "09",
        "Oct" => "10",
        "Nov" => "11",
        "Dec" => "12",
        _ => return None,
    };
    let year = s.get(12..16)?;
    let time = s.get(17..25)?;
    Some(format!("{year}-{month}-{day}T{time}Z"))
}

/// The IMF-fixdate of `t` (whole seconds).
fn format_http_date(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
        .get((days % 7) as usize)
        .copied()
        .unwrap_or("Thu");
    let rfc3339 = humantime::format_rfc3339_seconds(t).to_string();
    // 1994-11-06T08:49:37Z
    let month = rfc3339
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| {
            [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ]
            .get(m.wrapping_sub(1))
            .copied()
        })
        .unwrap_or("Jan");
    format!(
        "{weekday}, {} {month} {} {} GMT",
        rfc3339.get(8..10).unwrap_or("01"),
        rfc3339.get(0..4).unwrap_or("1970"),
        rfc3339.get(11..19).unwrap_or("00:00:00")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        assert!(is_uuid("93bac548-d2de-4546-b106-880a5018460d"));
        assert!(is_uuid("93BAC548-D2DE-4546-B106-880A5018460D"));
        assert!(!is_uuid("93bac548d2de4546b106880a5018460d"));
        assert!(!is_uuid("93bac548-d2de-4546-b106-880a5018460"));
        assert!(!is_uuid("g3bac548-d2de-4546-b106-880a5018460d"));
        let fresh = new_uuid().unwrap();
        assert!(is_uuid(&fresh));
        assert_eq!(fresh.as_bytes().get(14), Some(&b'4'), "version 4: {fresh}");
    }

    #[test]
    fn http_dates() {
        assert!(is_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert!(is_imf_fixdate("Tue, 11 Sep 2012 19:43:31 GMT"));
        // Wrong weekday, RFC 850 and asctime forms, garbage.
        assert!(!is_imf_fixdate("Mon, 06 Nov 1994 08:49:37 GMT"));
        assert!(!is_imf_fixdate("Sunday, 06-Nov-94 08:49:37 GMT"));
        assert!(!is_imf_fixdate("Sun Nov  6 08:49:37 1994"));
        assert!(!is_imf_fixdate("Sun, 31 Feb 1994 08:49:37 GMT"));
        assert!(!is_imf_fixdate("yesterday"));
    }

    #[test]
    fn validation() {
        let mut h = HeaderMap::new();
        assert!(validate(&h).is_ok());
        h.insert(CUSTOMER_IP, HeaderValue::from_static("2001:db8::1"));
        h.insert(
            AUTH_DATE,
            HeaderValue::from_static("Tue, 11 Sep 2012 19:43:31 GMT"),
        );
        h.insert(
            INTERACTION_ID,
            HeaderValue::from_static("93bac548-d2de-4546-b106-880a5018460d"),
        );
        assert!(validate(&h).is_ok());
        for (name, bad) in [
            (CUSTOMER_IP, "10.0.0.300"),
            (AUTH_DATE, "2012-09-11T19:43:31Z"),
            (INTERACTION_ID, "not-a-uuid"),
        ] {
            let mut h2 = h.clone();
            h2.insert(name.clone(), HeaderValue::from_static(bad));
            let e = validate(&h2).unwrap_err();
            assert_eq!(e.code.as_str(), "invalid_request", "{name}: {bad}");
        }
    }
}
