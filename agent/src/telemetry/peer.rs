//! Who is on the other end of a telemetry stream, as the mesh says it: the SPIFFE identity in
//! the `x-forwarded-client-cert` header (XFCC) the agent's own sidecar sets from the client's
//! mutual-TLS certificate, and what that identity may report.
//!
//! The header is evidence only because the install makes it so: the agent's pod runs a sidecar
//! and a `PeerAuthentication` in STRICT mode, so every connection to the telemetry port is
//! mutual TLS, and the sidecar replaces whatever XFCC a client sent with its own
//! (`SANITIZE_SET`, Istio's default for sidecars). Without a sidecar a client could write the
//! header itself; `--require-peer-identity` is then pointless and the install says so.
//!
//! What an identity may do: say Hello only for its own namespace, and report server-role series
//! only for hosts in its own namespace (a workload measures its own inbound traffic). What
//! remains trusted is written in README ("What the agent trusts").

use std::fmt;

/// A workload identity in the mesh: `spiffe://<trust domain>/ns/<namespace>/sa/<account>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl Identity {
    /// Parses a SPIFFE URI of Istio's form; None for anything else.
    pub fn from_spiffe(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (trust_domain, ns, namespace, sa, service_account) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        let plain = |s: &str| !s.is_empty() && s.len() <= 253;
        (ns == "ns"
            && sa == "sa"
            && parts.next().is_none()
            && plain(trust_domain)
            && plain(namespace)
            && plain(service_account))
        .then(|| Identity {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        })
    }

    /// The client's identity in an XFCC header value: the `URI` of its last element (the one
    /// the nearest proxy added for the connection it received), None when there is none.
    pub fn from_xfcc(header: &str) -> Option<Identity> {
        let element = last_element(header)?;
        element_fields(element)
            .filter(|(key, _)| key.eq_ignore_ascii_case("uri"))
            .find_map(|(_, value)| Identity::from_spiffe(value))
    }
}

/// The last comma-separated element, commas inside double quotes not counting.
fn last_element(header: &str) -> Option<&str> {
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in header.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => start = i + 1,
            _ => {}
        }
    }
    let element = header[start..].trim();
    (!element.is_empty()).then_some(element)
}

/// The `key=value` pairs of one element, separated by `;` outside quotes; values unquoted.
fn element_fields(element: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut fields = Vec::new();
    let (mut quoted, mut start) = (false, 0);
    for (i, c) in element.char_indices().chain([(element.len(), ';')]) {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                if let Some((key, value)) = element[start..i].split_once('=') {
                    fields.push((key.trim(), value.trim().trim_matches('"')));
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    fields.into_iter()
}

/// The namespace a Kubernetes service host names (`name.namespace.svc` or
/// `name.namespace.svc.<cluster domain>`), None for a short name or any other host.
pub fn host_namespace(host: &str) -> Option<&str> {
    let mut labels = host.split('.');
    let (_, namespace, svc) = (labels.next()?, labels.next()?, labels.next()?);
    (svc == "svc").then_some(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_identity_is_the_uri_of_the_last_xfcc_element() {
        let shop = Some("spiffe://cluster.local/ns/shop/sa/reviews");
        let cases: [(&str, Option<&str>); 8] = [
            (
                "By=spiffe://cluster.local/ns/fledge-system/sa/fledge-agent;Hash=4a5b;Subject=\"\";URI=spiffe://cluster.local/ns/shop/sa/reviews",
                shop,
            ),
            (
                "By=spiffe://a/ns/x/sa/y;URI=spiffe://cluster.local/ns/evil/sa/x,By=spiffe://cluster.local/ns/fledge-system/sa/fledge-agent;Subject=\"CN=a,O=b;c\";URI=spiffe://cluster.local/ns/shop/sa/reviews",
                shop,
            ),
            ("uri=\"spiffe://cluster.local/ns/shop/sa/reviews\"", shop),
            (
                "By=spiffe://cluster.local/ns/fledge-system/sa/fledge-agent;Hash=4a5b",
                None,
            ),
            ("URI=https://example.com/ns/shop/sa/reviews", None),
            ("URI=spiffe://cluster.local/ns/shop/sa/reviews/extra", None),
            ("URI=spiffe://cluster.local/namespace/shop/sa/reviews", None),
            ("", None),
        ];
        for (header, expected) in cases {
            let got = Identity::from_xfcc(header).map(|i| i.to_string());
            assert_eq!(got.as_deref(), expected, "{header}");
        }
    }

    #[test]
    fn a_service_host_names_its_namespace() {
        for (host, expected) in [
            ("reviews.shop.svc.cluster.local", Some("shop")),
            ("reviews.shop.svc", Some("shop")),
            ("reviews.shop", None),
            ("example.com", None),
            ("reviews", None),
            ("www.example.com", None),
        ] {
            assert_eq!(host_namespace(host), expected, "{host}");
        }
    }
}
