//! Prometheus's HTTP query API, as metric gates use it: one instant query
//! (`GET /api/v1/query?query=…`) whose answer is a scalar or a vector of at most one series.
//! Every failure is a [`QueryError`] in the server's own words where it gave some (`bad_data:
//! parse error …`), naming the server.
//!
//! Only the protocol: what a value means for a rollout is `fledge_core::metric`'s.

use std::time::Duration;

use serde::Deserialize;

use crate::outbound::{Outbound, OutboundError};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Call(#[from] OutboundError),
    /// Prometheus refused the query and said why (`{"status":"error",…}`).
    #[error("Prometheus at {address} answered {status}: {kind}: {error}")]
    Refused {
        address: String,
        status: u16,
        kind: String,
        error: String,
    },
    /// The answer is not Prometheus's (a proxy's error page, a wrong address).
    #[error("{address} answered {status} with what is not a Prometheus query answer: {body}")]
    NotPrometheus {
        address: String,
        status: u16,
        body: String,
    },
    #[error(
        "Prometheus at {address} answered {count} series; a gate needs one: aggregate them \
         (avg(…), sum(…), max(…))"
    )]
    Several { address: String, count: usize },
    #[error("Prometheus at {address} answered a {kind} result; a gate needs a scalar or a vector")]
    WrongType { address: String, kind: String },
}

/// A Prometheus client over [`Outbound`]; cheap to clone.
#[derive(Clone)]
pub struct Prometheus {
    outbound: Outbound,
}

/// The body of every `/api/v1/*` answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

impl Prometheus {
    pub fn new(outbound: Outbound) -> Self {
        Self { outbound }
    }

    /// Runs `promql` as an instant query at `address` (`http://host:9090`, any path prefix
    /// included): its one value, None when no series matched.
    pub async fn query(
        &self,
        address: &str,
        promql: &str,
        timeout: Duration,
    ) -> Result<Option<f64>, QueryError> {
        let url = format!(
            "{}/api/v1/query?query={}",
            address.trim_end_matches('/'),
            encode(promql)
        );
        let answer = self.outbound.get(&url, timeout).await?;
        parse(address, answer.status.as_u16(), &answer.body)
    }
}

/// What an answer with `status` and `body` says.
pub fn parse(address: &str, status: u16, body: &[u8]) -> Result<Option<f64>, QueryError> {
    let not_prometheus = || QueryError::NotPrometheus {
        address: address.to_owned(),
        status,
        body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    let parsed: Body = serde_json::from_slice(body).map_err(|_| not_prometheus())?;
    if parsed.status != "success" {
        return match (parsed.error_type, parsed.error) {
            (Some(kind), Some(error)) => Err(QueryError::Refused {
                address: address.to_owned(),
                status,
                kind,
                error,
            }),
            _ => Err(not_prometheus()),
        };
    }
    let data = parsed.data.ok_or_else(not_prometheus)?;
    match data.result_type.as_str() {
        "scalar" => sample(&data.result).map(Some).ok_or_else(not_prometheus),
        "vector" => {
            let series = data.result.as_array().ok_or_else(not_prometheus)?;
            match series.as_slice() {
                [] => Ok(None),
                [one] => sample(&one["value"]).map(Some).ok_or_else(not_prometheus),
                many => Err(QueryError::Several {
                    address: address.to_owned(),
                    count: many.len(),
                }),
            }
        }
        other => Err(QueryError::WrongType {
            address: address.to_owned(),
            kind: other.to_owned(),
        }),
    }
}

/// `[time, "value"]` → the value; Prometheus writes `NaN`, `+Inf` and `-Inf` as such.
fn sample(pair: &serde_json::Value) -> Option<f64> {
    let text = pair.get(1)?.as_str()?;
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// `text` percent-encoded for a query string: every byte but the unreserved ones.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: &str = "http://prom:9090";

    #[test]
    fn answers_read_as_one_value_none_or_an_error_in_the_servers_words() {
        let vector = |values: &[&str]| {
            let series: Vec<String> = values
                .iter()
                .map(|v| format!(r#"{{"metric":{{"version":"v2"}},"value":[1700000000.5,"{v}"]}}"#))
                .collect();
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
                series.join(",")
            )
        };
        // (status, body, value, error words)
        let cases: Vec<(u16, String, Option<Option<f64>>, &str)> = vec![
            (200, vector(&["0.85"]), Some(Some(0.85)), ""),
            (200, vector(&[]), Some(None), ""),
            (200, vector(&["+Inf"]), Some(Some(f64::INFINITY)), ""),
            (
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"0.3"]}}"#.into(),
                Some(Some(0.3)),
                "",
            ),
            (
                200,
                vector(&["0.1", "0.2"]),
                None,
                "Prometheus at http://prom:9090 answered 2 series; a gate needs one",
            ),
            (
                400,
                r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected \")\""}"#.into(),
                None,
                "Prometheus at http://prom:9090 answered 400: bad_data: 1:5: parse error: unexpected \")\"",
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into(),
                None,
                "answered a matrix result; a gate needs a scalar or a vector",
            ),
            (
                502,
                "<html>Bad Gateway</html>".into(),
                None,
                "http://prom:9090 answered 502 with what is not a Prometheus query answer: <html>Bad Gateway</html>",
            ),
            (
                200,
                vector(&["many"]),
                None,
                "is not a Prometheus query answer",
            ),
        ];
        for (status, body, value, words) in cases {
            match (parse(AT, status, body.as_bytes()), value) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{body}"),
                (Err(e), None) => assert!(e.to_string().contains(words), "{body}: {e}"),
                (got, _) => panic!("{body}: {got:?}"),
            }
        }
        let nan = parse(AT, 200, vector(&["NaN"]).as_bytes()).expect("a value");
        assert!(nan.is_some_and(f64::is_nan));
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode(r#"avg(cpu{v="v2"}) > 0.5"#),
            "avg%28cpu%7Bv%3D%22v2%22%7D%29%20%3E%200.5"
        );
        assert_eq!(encode("a-b_c.d~"), "a-b_c.d~");
    }
}
